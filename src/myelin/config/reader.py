"""A cursor over raw YAML data that validates values and knows where it is.

Every accessor takes a key and a default, checks the type, and on failure
raises :class:`ConfigError` with the full key path and the source file, so
that schema code reads as a plain list of fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from myelin.config.errors import ConfigError

T = TypeVar("T")
_MISSING: Any = object()


def _describe(value: object) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


class ConfigReader:
    """Reads typed values out of one mapping of the config tree."""

    def __init__(
        self,
        data: Mapping[str, Any],
        path: str = "",
        source_of: Callable[[str], str | None] | None = None,
    ) -> None:
        self._data = data
        self._path = path
        self._source_of = source_of or (lambda _key: None)
        self.used: set[str] = set()

    # -- helpers ---------------------------------------------------------
    def key_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self._path}[{key}]"
        return f"{self._path}.{key}" if self._path else key

    def source(self, key: str) -> str | None:
        top = self.key_path(key).split(".")[0].split("[")[0]
        return self._source_of(top)

    def error(self, key: str | int, message: str) -> ConfigError:
        top_key = key if isinstance(key, str) else ""
        if top_key:
            src = self.source(top_key)
        else:
            src = self._source_of(self._path.split(".")[0].split("[")[0])
        return ConfigError(self.key_path(key), message, src)

    def has(self, key: str) -> bool:
        return key in self._data and self._data[key] is not None

    def raw(self, key: str, default: Any = None) -> Any:
        self.used.add(key)
        value = self._data.get(key, default)
        return default if value is None else value

    def _get(self, key: str, default: Any) -> Any:
        self.used.add(key)
        if key not in self._data or self._data[key] is None:
            if default is _MISSING:
                raise self.error(key, "is required")
            return default
        return self._data[key]

    # -- typed accessors ------------------------------------------------
    def str_(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}")
        return value

    def int_(self, key: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            raise self.error(key, f"must be at least {minimum}, got {value}")
        return value

    def float_(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.error(key, f"expected a number, got {_describe(value)}")
        return float(value)

    def bool_(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_describe(value)}")
        return value

    def size(self, key: str, default: Any = _MISSING) -> Any:
        """A byte size: an integer or a string like ``50M`` / ``10K`` / ``1G``."""
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        if isinstance(value, str):
            units = {"K": 1024, "M": 1024**2, "G": 1024**3}
            text = value.strip().upper().removesuffix("B")
            try:
                if text and text[-1] in units:
                    number = int(float(text[:-1]) * units[text[-1]])
                else:
                    number = int(text)
                if number >= 0:
                    return number
            except (ValueError, OverflowError):
                pass
        raise self.error(key, f'expected a size such as 50M or 1024, got {_describe(value)}')

    def str_list(self, key: str, default: Any = _MISSING) -> Any:
        value = self._get(key, default)
        if value is default:
            return value
        if isinstance(value, str):
            return [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {_describe(value)}")
        return list(value)

    def section(self, key: str, required: bool = False) -> ConfigReader:
        value = self._get(key, _MISSING if required else {})
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {_describe(value)}")
        return ConfigReader(value, self.key_path(key), self._source_of)

    def sections(self, key: str) -> list[ConfigReader]:
        value = self._get(key, [])
        if not isinstance(value, list):
            raise self.error(key, f"expected a list, got {_describe(value)}")
        readers = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                raise ConfigError(
                    f"{self.key_path(key)}[{index}]",
                    f"expected a mapping, got {_describe(item)}",
                    self.source(key),
                )
            readers.append(ConfigReader(item, f"{self.key_path(key)}[{index}]", self._source_of))
        return readers

    def mapping_of_sections(self, key: str) -> dict[str, ConfigReader]:
        value = self._get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a mapping, got {_describe(value)}")
        out = {}
        for name, item in value.items():
            if not isinstance(item, Mapping):
                raise ConfigError(
                    f"{self.key_path(key)}.{name}",
                    f"expected a mapping, got {_describe(item)}",
                    self.source(key),
                )
            out[str(name)] = ConfigReader(item, f"{self.key_path(key)}.{name}", self._source_of)
        return out

    def choice(self, key: str, options: tuple[str, ...], default: Any = _MISSING) -> Any:
        value = self.str_(key, default)
        if value is not default and value not in options:
            raise self.error(key, f"expected one of {', '.join(options)}, got {_describe(value)}")
        return value

    def keys(self) -> list[str]:
        return [str(k) for k in self._data]
