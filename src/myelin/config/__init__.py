"""Typed homeserver configuration read from one or more YAML files.

``load_config(paths)`` merges the files (later files override earlier ones key
by key at the top level, the way a worker file is layered over the shared
homeserver.yaml) and validates the result into a :class:`HomeserverConfig`.
Every validation failure raises :class:`ConfigError` naming the file and the
key path, e.g. ``listeners[0].port: expected an integer, got "abc"
(homeserver.yaml)``. ``load_config`` also refuses a fleet layout the process
cannot work in (`validate_fleet`).
"""

from myelin.config.errors import ConfigError
from myelin.config.fleet import validate_fleet
from myelin.config.load import load_config, load_config_from_dict
from myelin.config.schema import (
    DatabaseConfig,
    HomeserverConfig,
    InstanceLocation,
    ListenerConfig,
    RateLimit,
    RedisConfig,
)

__all__ = [
    "ConfigError",
    "DatabaseConfig",
    "HomeserverConfig",
    "InstanceLocation",
    "ListenerConfig",
    "RateLimit",
    "RedisConfig",
    "load_config",
    "load_config_from_dict",
    "validate_fleet",
]
