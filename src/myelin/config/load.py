"""Reading and merging config files into a validated HomeserverConfig."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from myelin.config.errors import ConfigError
from myelin.config.fleet import validate_fleet
from myelin.config.reader import ConfigReader
from myelin.config.schema import HomeserverConfig

logger = logging.getLogger(__name__)

# Synapse keys an admin's file may carry that Myelin accepts and does not act
# on (yet); they are not worth a warning.
TOLERATED_KEYS = frozenset({
    "report_stats", "pid_file", "macaroon_secret_key", "form_secret",
    "suppress_key_server_warning", "enable_metrics", "presence",
    "serve_server_wellknown",
    "retention", "email", "push", "caches", "experimental_features",
    "worker_daemonize", "worker_main_http_uri", "worker_replication_port",
})


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError("", f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError("", f"not valid YAML{where}: {getattr(e, 'problem', e)}", path) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError("", "the top level must be a mapping of keys to values", path)
    return data


def load_config(paths: Sequence[str]) -> HomeserverConfig:
    """Merge the files in order (later wins per top-level key) and validate."""
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for path in paths:
        data = _read_yaml(path)
        base = os.path.dirname(os.path.abspath(path))
        for key, value in data.items():
            merged[str(key)] = value
            sources[str(key)] = os.path.basename(path)
        merged.setdefault("__config_dirs__", []).append(base)
    merged.pop("__config_dirs__", None)
    # A required key that no file has is blamed on all of them.
    every_file = ", ".join(dict.fromkeys(os.path.basename(p) for p in paths)) or None
    return load_config_from_dict(merged, sources, missing_source=every_file, check_fleet=True)


def load_config_from_dict(data: Mapping[str, Any], sources: Mapping[str, str] | None = None,
                          missing_source: str | None = None, *,
                          check_fleet: bool = False) -> HomeserverConfig:
    """Validate one merged mapping. Each key is checked; with ``check_fleet``
    (what `load_config`, hence `myelin run` and `check-config`, does) the fleet
    layout is checked too (`validate_fleet`), so a process that cannot work in
    it is refused."""
    sources = dict(sources or {})
    reader = ConfigReader(data, "", lambda key: sources.get(key, missing_source))
    config = HomeserverConfig.from_reader(reader)
    config.sources = sources
    if check_fleet:
        validate_fleet(config, missing_source)
    for key in data:
        if key not in reader.used and key not in TOLERATED_KEYS:
            where = f" ({sources[key]})" if key in sources else ""
            logger.warning("ignoring unknown config key %r%s", key, where)
    return config
