"""User-facing errors.

A :class:`FastrecoError` is a mistake in the user's input (a file, a field, a value); the CLI
prints its message without a traceback and exits with a non-zero code. Anything else is a bug.
"""

from __future__ import annotations

from os import PathLike
from typing import Any


class FastrecoError(Exception):
    """Base class of every error caused by the user's input."""


class InputError(FastrecoError, ValueError):
    """A bad value in a file, a config or a command-line option.

    The message names where the value came from (``source``: a file path or ``--option``), the
    field and the offending value, so the user can find and fix it.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str | PathLike[str] | None = None,
        field: str | None = None,
        value: Any = None,
    ) -> None:
        self.reason = reason
        self.source = None if source is None else str(source)
        self.field = field
        self.value = value
        parts = []
        if self.source is not None:
            parts.append(self.source)
        if field is not None:
            parts.append(f"field '{field}'")
        if value is not None:
            parts.append(f"value {value!r}")
        where = ": ".join([", ".join(parts)]) if parts else ""
        super().__init__(f"{where}: {reason}" if where else reason)


class SchemaError(InputError):
    """An event-store file written with a schema this version cannot read."""
