"""The rate limiters of one process, built from the ``rc_*`` settings."""

from __future__ import annotations

from myelin.config import HomeserverConfig, RateLimit
from myelin.http.ratelimit import Ratelimiter


class Ratelimiters:
    def __init__(self, config: HomeserverConfig) -> None:
        self.message = Ratelimiter(config.rc_message)
        self.registration = Ratelimiter(config.rc_registration)
        self.login_address = Ratelimiter(config.rc_login.address)
        self.login_account = Ratelimiter(config.rc_login.account)
        self.login_failures = Ratelimiter(config.rc_login.failed_attempts)
        self.joins = Ratelimiter(config.rc_joins_local)
        self.invites = Ratelimiter(config.rc_invites_per_room)
        self.media_create = Ratelimiter(RateLimit(config.media.rc_media_create_per_second,
                                                  config.media.rc_media_create_burst_count))
