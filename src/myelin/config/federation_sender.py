"""Outbound federation's retry schedule: Synapse's ``federation:`` keys.

``destination_min_retry_interval`` (first wait after a failure),
``destination_retry_multiplier`` (each further failure multiplies it) and
``destination_max_retry_interval`` (the cap). Synapse's defaults but for the
cap, a day rather than a week: a server back after a long outage should not
wait days to hear from us when it does not call us first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from myelin.config.reader import ConfigReader


@dataclass(frozen=True)
class FederationSenderConfig:
    min_retry_interval_ms: int = 10 * 60 * 1000
    retry_multiplier: float = 2.0
    max_retry_interval_ms: int = 24 * 3600 * 1000


def read_federation_sender(r: ConfigReader, duration_ms: Any) -> FederationSenderConfig:
    """The retry keys of the top-level ``federation`` section of ``r``."""
    section = r.section("federation")
    defaults = FederationSenderConfig()
    minimum = duration_ms(section, "destination_min_retry_interval",
                          section.raw("destination_min_retry_interval"))
    maximum = duration_ms(section, "destination_max_retry_interval",
                          section.raw("destination_max_retry_interval"))
    multiplier = section.float_("destination_retry_multiplier", defaults.retry_multiplier)
    if multiplier < 1:
        raise section.error("destination_retry_multiplier", "must be at least 1")
    config = FederationSenderConfig(
        min_retry_interval_ms=defaults.min_retry_interval_ms if minimum is None else minimum,
        retry_multiplier=multiplier,
        max_retry_interval_ms=defaults.max_retry_interval_ms if maximum is None else maximum)
    if config.max_retry_interval_ms < config.min_retry_interval_ms:
        raise section.error("destination_max_retry_interval",
                            "must not be below destination_min_retry_interval")
    return config
