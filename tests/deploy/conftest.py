"""Fixtures of the deploy tests: each values file is rendered once per module."""

from __future__ import annotations

import pytest
from chartkit import PRODUCTION_VALUES, Rendered, load_values, rendered


@pytest.fixture(scope="module")
def default_render() -> Rendered:
    return rendered("default", {})


@pytest.fixture(scope="module")
def production_render() -> Rendered:
    return rendered("production", load_values(PRODUCTION_VALUES))


@pytest.fixture(scope="module", params=["default", "production"])
def any_render(request: pytest.FixtureRequest) -> Rendered:
    return request.getfixturevalue(f"{request.param}_render")
