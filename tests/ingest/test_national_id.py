"""Fødselsnummer and D-nummer: check digits, dates, synthetic numbers, masking."""

from __future__ import annotations

import random
from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.ingest.domain.national_id import (
    birth_date,
    check_national_id,
    is_synthetic,
    kind,
    mask_national_id,
    synthetic_national_id,
)

EXAMPLE_IDS = ["13837033319", "04900298515", "18837606035", "15907918537", "06878238786", "20869425401"]


def with_check_digits(nine: str) -> str | None:
    """Independent reference implementation of the two mod-11 check digits."""
    def digit(digits: str, weights: list[int]) -> int | None:
        k = 11 - sum(int(d) * w for d, w in zip(digits, weights, strict=True)) % 11
        return 0 if k == 11 else None if k == 10 else k

    k1 = digit(nine, [3, 7, 6, 1, 8, 9, 4, 5, 2])
    if k1 is None:
        return None
    k2 = digit(nine + str(k1), [5, 4, 3, 2, 7, 6, 5, 4, 3, 2])
    return None if k2 is None else f"{nine}{k1}{k2}"


def first_valid(head: str, individuals: range) -> str:
    """The first number with valid check digits for DDMMYY ``head`` and an individual number."""
    for individual in individuals:
        value = with_check_digits(f"{head}{individual:03d}")
        if value:
            return value
    raise AssertionError(f"no valid check digits for {head}")


@pytest.mark.parametrize("value", EXAMPLE_IDS)
def test_the_contract_examples_are_valid_synthetic_fodselsnummer(value: str) -> None:
    assert check_national_id(value) is None
    assert kind(value) == "FNR"
    assert is_synthetic(value)


@pytest.mark.parametrize("value", EXAMPLE_IDS)
def test_every_single_digit_error_is_caught_by_the_check_digits(value: str) -> None:
    for position in range(11):
        for digit in "0123456789":
            if digit != value[position]:
                typo = value[:position] + digit + value[position + 1:]
                assert check_national_id(typo) == "check-digit", typo


def test_remainder_one_means_no_valid_check_digit() -> None:
    # find an individual number whose first weighted sum leaves remainder 1: no check digit fits it
    head = "138370"
    for individual in range(1000):
        nine = f"{head}{individual:03d}"
        k = 11 - sum(int(d) * w for d, w in zip(nine, [3, 7, 6, 1, 8, 9, 4, 5, 2], strict=True)) % 11
        if k == 10:
            assert all(check_national_id(f"{nine}{a}{b}") == "check-digit" for a in range(10) for b in range(10))
            return
    raise AssertionError("no individual number with remainder 1 found")


def test_d_nummer_adds_40_to_the_day() -> None:
    value = first_valid("5283" + "88", range(0, 500))  # day 12 + 40, synthetic March 1988
    assert check_national_id(value) is None
    assert kind(value) == "DNR"
    assert birth_date(value) == date(1988, 3, 12)


@pytest.mark.parametrize(
    ("head", "individuals", "why"),
    [
        ("318290", range(0, 500), "31 February"),
        ("298299", range(0, 500), "29 February 1999 (not a leap year)"),
        ("318490", range(0, 500), "31 April"),
        ("011390", range(0, 500), "month 13"),
        ("014590", range(0, 500), "month 45 (May + 40): NAV H-numbers are not accepted"),
        ("720190", range(0, 500), "D-nummer with day 32"),
        ("018150", range(750, 900), "individual numbers 750-899 were never given to people born 1940-1999"),
    ],
)
def test_a_birth_date_that_does_not_exist_breaks_date_exists(head: str, individuals: range, why: str) -> None:
    assert check_national_id(first_valid(head, individuals)) == "date-exists", why


def test_leap_day_of_a_leap_year_exists() -> None:
    assert check_national_id(first_valid("298200", range(500, 1000))) is None  # 29.02.2000


@pytest.mark.parametrize("value", ["1383703331", "138370333190", "1383703331x", " 13837033319", "", None, 13837033319])
def test_anything_but_eleven_digits_breaks_format(value: object) -> None:
    assert check_national_id(value) == "format"


def test_mask_reveals_no_digit_of_the_number_but_correlates() -> None:
    masked = mask_national_id("13837033319")
    assert masked.startswith("***********#")
    assert "13837033319" not in masked and "130370" not in masked and "33319" not in masked
    assert masked == mask_national_id("13837033319")
    assert masked != mask_national_id("04900298515")


@settings(max_examples=300, deadline=None)
@given(born=st.dates(min_value=date(1854, 1, 1), max_value=date(2039, 12, 31)), d_number=st.booleans(),
       seed=st.integers(0, 2**32))
def test_synthetic_numbers_are_valid_and_encode_the_birth_date(born: date, d_number: bool, seed: int) -> None:
    value = synthetic_national_id(random.Random(seed), born, d_number=d_number)
    assert check_national_id(value) is None
    assert kind(value) == ("DNR" if d_number else "FNR")
    assert is_synthetic(value)
    assert birth_date(value) == born


def test_no_synthetic_numbers_outside_the_allocated_years() -> None:
    with pytest.raises(ValueError):
        synthetic_national_id(random.Random(1), date(2040, 1, 1))
