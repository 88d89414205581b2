"""No log text carries a run of 11 digits: a national id, one inside a longer run, nor a mask token."""

from __future__ import annotations

import re

from forlop.logging import mask_national_id, mask_text
from services.api.security import correlation_id_of

RUN = re.compile(r"[0-9]{11}")


def test_a_national_id_and_a_longer_run_are_masked_and_still_correlate():
    text = "fnr 13837033319, eSP meldingsId esp:22f016b3-fcbf-3227-c312-387757348019, offset 1234567890"
    masked = mask_text(text)
    assert not RUN.search(masked)
    assert "1234567890" in masked  # ten digits (an offset, an org number) stay
    assert mask_text(text) == masked  # the same token each time: lines about one patient correlate


def test_no_mask_token_is_itself_a_run_of_digits():
    # a hexadecimal digest ends in 11 decimal digits now and then: the token is letters only
    tokens = [mask_national_id(f"{n:011d}") for n in range(2000)]
    assert not any(re.search(r"[0-9]", token) for token in tokens)
    assert len(set(tokens)) == len(tokens)


def test_a_generated_correlation_id_is_kept_whole_by_the_logs():
    for _ in range(2000):
        generated = correlation_id_of(None)
        assert mask_text(generated) == generated
    assert correlation_id_of("esp-123456789012") != "esp-123456789012"  # a 12-digit run is not echoed
