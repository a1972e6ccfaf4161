"""The one exception type for configuration problems."""


class ConfigError(Exception):
    """A configuration value is missing or invalid.

    ``key_path`` is the dotted/indexed path of the offending key
    (``listeners[0].port``) and ``source`` the file it was read from.
    """

    def __init__(self, key_path: str, message: str, source: str | None = None) -> None:
        self.key_path = key_path
        self.message = message
        self.source = source
        where = f" ({source})" if source else ""
        prefix = f"{key_path}: " if key_path else ""
        super().__init__(f"{prefix}{message}{where}")
