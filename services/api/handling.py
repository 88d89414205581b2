"""`Prefer: handling=strict|lenient`: what a search does with a parameter it does not know.

strict (the default): 400 naming it. lenient: the parameter is left out, and the Bundle says so in
an OperationOutcome entry (`search.mode: outcome`). The default is strict because a misspelt filter
that is ignored (`Task?statsu=requested`) widens the answer without the client noticing, and in a
worklist that means patients who should not be on it; a client that prefers to carry on asks for
lenient (fhirpy's `.count()` sends `_totalMethod`, which only some servers know).
"""

from __future__ import annotations

from collections.abc import Sequence

from forlop.fhir.outcome import issue, operation_outcome

HANDLINGS = ("strict", "lenient")


def handling(prefer: str | None) -> str:
    """The handling a Prefer header asks for; strict when it names none (or one not defined)."""
    for part in (prefer or "").split(","):
        for token in part.split(";"):
            key, _, value = token.strip().partition("=")
            if key.strip().lower() == "handling" and value.strip().strip('"').lower() in HANDLINGS:
                return value.strip().strip('"').lower()
    return "strict"


def ignored_outcome(names: Sequence[str]) -> dict:
    """The Bundle entry of a lenient search that left parameters out."""
    return {
        "resource": operation_outcome(
            issue("warning", "not-supported", f"search parameter {name!r} is not supported and was ignored "
                  "(Prefer: handling=lenient)", name) for name in names),
        "search": {"mode": "outcome"},
    }
