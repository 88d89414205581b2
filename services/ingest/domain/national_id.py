"""Norwegian national identity numbers: fødselsnummer (FNR) and D-nummer (DNR).

Layout ``DDMMYYIIIKK``: birth date, individual number (``III``, which also fixes the
century) and two mod-11 check digits. A D-nummer adds 40 to the day. Synthetic test
numbers (Skatteetaten's Tenor test data) add 80 to the month; those are the only
numbers the generator and the tests make. NAV's +40-month "H-numbers" are not
accepted: no vendor contract sends them.
"""

from __future__ import annotations

import random
import re
from datetime import date
from typing import Literal

from forlop.logging import mask_national_id as _mask

_W1 = (3, 7, 6, 1, 8, 9, 4, 5, 2)
_W2 = (5, 4, 3, 2, 7, 6, 5, 4, 3, 2)
_ELEVEN_DIGITS = re.compile(r"[0-9]{11}")  # ASCII: \d also matches other scripts' digits
SYNTHETIC_MONTH_OFFSET = 80
D_NUMBER_DAY_OFFSET = 40


def _check_digit(digits: str, weights: tuple[int, ...]) -> int | None:
    """The mod-11 check digit, or None when the remainder is 1 (no valid digit exists)."""
    k = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
    if k == 11:
        return 0
    return None if k == 10 else k


def _century(individual: int, yy: int) -> int | None:
    """The birth century the individual number allows (Skatteetaten's allocation rules)."""
    if individual <= 499 or (individual >= 900 and yy >= 40):
        return 1900
    if individual >= 500 and yy <= 39:
        return 2000
    if 500 <= individual <= 749 and yy >= 54:
        return 1800
    return None  # e.g. 750-899 with a year of 40 or later: never allocated


def birth_date(value: str) -> date | None:
    """The birth date an 11-digit number encodes, or None when no real date fits."""
    day, month, yy, individual = int(value[0:2]), int(value[2:4]), int(value[4:6]), int(value[6:9])
    if day > D_NUMBER_DAY_OFFSET:
        day -= D_NUMBER_DAY_OFFSET
    if month > SYNTHETIC_MONTH_OFFSET:
        month -= SYNTHETIC_MONTH_OFFSET
    century = _century(individual, yy)
    if century is None:
        return None
    try:
        return date(century + yy, month, day)
    except ValueError:
        return None


def check_national_id(value: object) -> str | None:
    """None when ``value`` is a valid FNR or D-nummer, else the broken rule.

    Rules: ``format`` (not 11 digits), ``check-digit`` (either mod-11 digit wrong),
    ``date-exists`` (the encoded birth date does not exist for its century).
    """
    if not isinstance(value, str) or not _ELEVEN_DIGITS.fullmatch(value):
        return "format"
    k1 = _check_digit(value[:9], _W1)
    if k1 is None or k1 != int(value[9]):
        return "check-digit"
    k2 = _check_digit(value[:10], _W2)
    if k2 is None or k2 != int(value[10]):
        return "check-digit"
    if birth_date(value) is None:
        return "date-exists"
    return None


def kind(value: str) -> Literal["FNR", "DNR"]:
    """FNR or DNR (D-nummer: day + 40). Assumes a valid number."""
    return "DNR" if int(value[0]) >= 4 else "FNR"


def is_synthetic(value: str) -> bool:
    return int(value[2:4]) > SYNTHETIC_MONTH_OFFSET


def mask_national_id(value: str) -> str:
    """A log-safe stand-in, e.g. ``***********#hbjcidkegafm``.

    All eleven digits are hidden: even the birth date narrows a person down too much,
    and a D-nummer flag would reveal nationality. The short hash lets log lines about
    the same patient be correlated. It is the same token `forlop.logging` writes, so
    masked ids in structured logs and in our own messages match.
    """
    return _mask(value)


def synthetic_national_id(rng: random.Random, born: date, d_number: bool = False) -> str:
    """A valid synthetic (month + 80) FNR, or D-nummer with ``d_number``, for ``born``."""
    if not 1854 <= born.year <= 2039:
        raise ValueError(f"no individual numbers are allocated for birth year {born.year}")
    yy = born.year % 100
    if born.year >= 2000:
        low, high = 500, 999
    elif born.year >= 1900:
        low, high = 0, 499
    else:
        low, high = 500, 749
    day = born.day + (D_NUMBER_DAY_OFFSET if d_number else 0)
    head = f"{day:02d}{born.month + SYNTHETIC_MONTH_OFFSET:02d}{yy:02d}"
    while True:  # about one individual number in five has no valid check digits
        nine = f"{head}{rng.randint(low, high):03d}"
        k1 = _check_digit(nine, _W1)
        if k1 is None:
            continue
        k2 = _check_digit(f"{nine}{k1}", _W2)
        if k2 is not None:
            return f"{nine}{k1}{k2}"
