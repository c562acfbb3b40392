"""Triton's logging extension: the server's log settings, readable and updatable at runtime."""

from __future__ import annotations

import logging
from typing import Any

from modelgate.core.errors import InvalidArgumentError

_OWN_LOGGERS = ("server", "backends", "kernels", "clients", "modelgate")
_BOOL_KEYS = {"log_info": logging.INFO, "log_warning": logging.WARNING, "log_error": logging.ERROR}


class LogSettings:
    def __init__(self, verbose_level: int = 0):
        self.values: dict[str, Any] = {
            "log_file": "",
            "log_info": True,
            "log_warning": True,
            "log_error": True,
            "log_verbose_level": verbose_level,
            "log_format": "default",
        }
        self._apply()

    def as_dict(self) -> dict:
        return dict(self.values)

    def update(self, changes: dict) -> dict:
        """Apply `changes` (only known keys, with the right types) and return all settings."""
        for key, value in changes.items():
            self._check(key, value)
        self.values.update(changes)
        self._apply()
        return self.as_dict()

    def _check(self, key: str, value: Any) -> None:
        if key in _BOOL_KEYS and not isinstance(value, bool):
            raise InvalidArgumentError(f"log setting '{key}' must be a boolean")
        if key == "log_verbose_level" and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InvalidArgumentError("log setting 'log_verbose_level' must be a non-negative integer")
        if key == "log_format" and value not in ("default", "ISO8601"):
            raise InvalidArgumentError("log setting 'log_format' must be 'default' or 'ISO8601'")
        if key == "log_file" and value != "":
            raise InvalidArgumentError("log setting 'log_file' cannot be changed: modelgate logs to stderr")
        if key not in self.values:
            raise InvalidArgumentError(f"unknown log setting '{key}'; allowed: {', '.join(self.values)}")

    def _apply(self) -> None:
        """Verbose logging applies to modelgate's own loggers; libraries (grpc, aiohttp) stay at INFO."""
        level = logging.DEBUG if self.values["log_verbose_level"] > 0 else logging.INFO
        for key, key_level in _BOOL_KEYS.items():
            if not self.values[key]:
                level = max(level, key_level + 1)
        for name in _OWN_LOGGERS:
            logging.getLogger(name).setLevel(level)
        logging.getLogger().setLevel(max(level, logging.INFO))
