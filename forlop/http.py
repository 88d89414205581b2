"""Query parameters as every HTTP entrypoint reads them: strict ASCII numbers, one value each.

A bad one is a `BadParameter`, which the API answers with a 400 OperationOutcome naming it
(`forlop.fhir.outcome`). Numbers are ASCII digits only (`str.isdigit()` is true of "²", and `int()`
reads "٣" and "1_000"), within a range, so that no value reaches the database it cannot hold
(PostgreSQL's LIMIT and OFFSET are 64-bit; a bound above 2^31 as INTEGER failed).
"""

from __future__ import annotations

import re

from werkzeug.datastructures import MultiDict

INT32_MAX = 2**31 - 1
_WHOLE = re.compile(r"-?[0-9]{1,18}")


class BadParameter(ValueError):
    """A query or path parameter the route cannot use; becomes a 400 OperationOutcome naming it."""

    def __init__(self, name: str, message: str, code: str = "value") -> None:
        super().__init__(message)
        self.name = name
        self.code = code


def whole_number(name: str, raw: str, low: int, high: int) -> int:
    """`raw` as an integer from `low` to `high`, written in ASCII digits; else BadParameter."""
    if not _WHOLE.fullmatch(raw) or not low <= int(raw) <= high:
        raise BadParameter(name, f"{name}={shown(raw)} must be a whole number from {low} to {high}")
    return int(raw)


def one_value(args: MultiDict[str, str], name: str) -> str | None:
    """The single value of a parameter (None when absent); given twice with different values is a 400."""
    values = list(dict.fromkeys(args.getlist(name)))
    if len(values) > 1:
        raise BadParameter(name, f"{name} is given {len(values)} times with different values; give it once")
    return values[0] if values else None


def shown(raw: str) -> str:
    """A parameter's value as an error message repeats it: quoted, at most 40 characters."""
    return repr(raw if len(raw) <= 40 else raw[:40] + "…")
