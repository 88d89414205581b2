"""The result controls of a FHIR search, read before its criteria: what to give back, not what to match.

`_summary`, `_elements`, `_include`, `_revinclude` and `_pretty` shape the answer; `Prefer:
handling` says what to do with a parameter the server does not know (`services.api.handling`). What
is left are the criteria and paging, for `services.api.params.search_request`.
"""

from __future__ import annotations

from dataclasses import dataclass

from werkzeug.datastructures import MultiDict

from forlop.http import one_value
from services.api.handling import handling
from services.api.includes import Include, includes, revincludes
from services.api.subsetting import element_names, summary_mode

RESULT_CONTROLS = ("_summary", "_elements", "_include", "_revinclude", "_pretty")


@dataclass(frozen=True, slots=True)
class SearchControls:
    args: MultiDict[str, str]  # the criteria and paging parameters, for `search_request`
    summary: str | None  # true | false | count | data
    elements: tuple[str, ...] | None
    include: list[Include]
    revinclude: list[Include]
    ignored: list[str]  # unknown parameters left out (Prefer: handling=lenient)


def search_controls(resource_type: str, args: MultiDict[str, str], known: tuple[str, ...],
                    prefer: str | None) -> SearchControls:
    """The controls of a search of `resource_type`, checked; `known`: every other parameter name the
    search takes (criteria and paging), with or without a modifier."""
    summary = summary_mode(one_value(args, "_summary"))
    elements = element_names(resource_type, one_value(args, "_elements"))
    include = includes(resource_type, args.getlist("_include"))
    revinclude = revincludes(resource_type, args.getlist("_revinclude"))
    lenient = handling(prefer) == "lenient"
    rest: MultiDict[str, str] = MultiDict()
    ignored: list[str] = []
    for name in args:
        if name in RESULT_CONTROLS:
            continue
        if lenient and name.split(":")[0] not in known:
            ignored.append(name)
            continue
        for value in args.getlist(name):
            rest.add(name, value)
    return SearchControls(rest, summary, elements, include, revinclude, ignored)
