"""A FHIR search's answer: the searchset Bundle with its links, included resources and outcome.

The request is read in two steps, the result controls (`services.api.search_controls`) and then the
criteria and paging (`services.api.params`); the matches come from the pathway service's search, the
included resources by their keys, and every link is on the public base URL (`services.api.links`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from sqlalchemy import Connection
from werkzeug.datastructures import MultiDict

from forlop.tenants import Reach
from services.api.handling import ignored_outcome
from services.api.includes import Include, referenced
from services.api.params import CHAINED, CONTROL_PARAMS, SearchLimits, search_request
from services.api.search_controls import SearchControls, search_controls
from services.api.subsetting import summarised, with_elements
from services.pathway.public import REFERENCE_TARGETS, SEARCH_PARAMS, read_resources, read_within, search_page

REVINCLUDE_PAGE = 500  # Tasks read per query while gathering a page's _revinclude


def search_bundle(conn: Connection, rtype: str, args: MultiDict[str, str], prefer: str | None,
                  limits: SearchLimits, fhir_base: str, reach: Reach | None = None) -> dict[str, Any]:
    """The searchset Bundle of a search of `rtype`; BadParameter for anything it cannot use.

    `reach` (the tenant's): the matches and the included resources only within it, in the queries."""
    known = (*SEARCH_PARAMS[rtype], "_id", *CONTROL_PARAMS, *(CHAINED if rtype == "EpisodeOfCare" else ()))
    controls = search_controls(rtype, args, known, prefer)
    query_ = search_request(rtype, SEARCH_PARAMS[rtype], controls.args, limits,
                            references=[p for t, p in REFERENCE_TARGETS if t == rtype])
    count, offset = (0 if controls.summary == "count" else query_.count), query_.offset
    page = search_page(conn, rtype, query_.criteria, count, offset, after=query_.cursor,
                       count_total=query_.total_mode == "accurate", updated=query_.updated, sort=query_.sort,
                       reach=reach)
    found = [r.with_meta() for r in page.resources]
    base = f"{fhir_base}/{rtype}"
    query = [(k, v) for k in args if k != "_offset" for v in args.getlist(k)]
    links = [{"relation": "self", "url": f"{base}?{urlencode(query + [('_offset', offset)])}"}]
    if page.more and query_.sort is not None:  # a sorted search pages by offset (its order is not the id's)
        links.append({"relation": "next", "url": f"{base}?{urlencode(query + [('_offset', offset + count)])}"})
    elif page.more:
        # Keyset paging: the next page starts after this page's last id, so a resource that
        # enters or leaves the matches meanwhile shifts no other match onto or off the next page.
        onward = [(k, v) for k, v in query if k != "_cursor"] + [("_cursor", found[-1]["id"])]
        links.append({"relation": "next", "url": f"{base}?{urlencode(onward)}"})
    if offset > 0:
        links.append({"relation": "previous", "url": f"{base}?{urlencode(query + [('_offset', max(0, offset - count))])}"})
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if page.total is not None:  # counted (_total=accurate) or known from the page; else left out (R4 allows)
        bundle["total"] = page.total
    bundle["link"] = links
    entries = [_entry(fhir_base, _shaped(res, controls), "match") for res in found]
    matched = {(res["resourceType"], res["id"]) for res in found}
    for res in _included(conn, found, controls.include, controls.revinclude, matched, reach):
        entries.append(_entry(fhir_base, _shaped(res, controls), "include"))
    if controls.ignored:
        entries.append(ignored_outcome(controls.ignored))
    bundle["entry"] = entries
    return bundle


def _entry(fhir_base: str, res: dict[str, Any], mode: str) -> dict[str, Any]:
    return {"fullUrl": f"{fhir_base}/{res['resourceType']}/{res['id']}", "resource": res, "search": {"mode": mode}}


def _shaped(res: dict[str, Any], controls: SearchControls) -> dict[str, Any]:
    if controls.summary == "true":  # with _elements: the summary elements and the named ones
        return summarised(res, controls.elements or ())
    if controls.elements is not None:
        return with_elements(res, controls.elements)
    return res


def _included(conn: Connection, found: list[dict[str, Any]], include: list[Include], revinclude: list[Include],
              matched: set[tuple[str, str]], reach: Reach | None) -> Iterable[dict[str, Any]]:
    """The resources the page's matches refer to (`_include`) and the Tasks that refer to them
    (`_revinclude=Task:focus`), each once and none that is a match, in a fixed order."""
    given = set(matched)
    wanted = [key for key in referenced(found, include) if key not in given]
    if reach is None:
        stored = read_resources(conn, wanted)
    else:  # each by its own query with the tenant's reach as a condition
        stored = {key: hit for key in wanted if (hit := read_within(conn, *key, reach)) is not None}
    for key in wanted:
        if key in stored:  # a reference to a resource not (or no longer) held, or out of reach, is left out
            given.add(key)
            yield stored[key].with_meta()
    for inc in revinclude:
        refs = [f"{res['resourceType']}/{res['id']}" for res in found
                if inc.target in (None, res["resourceType"])]
        for res in _referring(conn, inc, refs, reach):
            key = (res["resourceType"], res["id"])
            if key not in given:
                given.add(key)
                yield res


def _referring(conn: Connection, inc: Include, refs: list[str], reach: Reach | None) -> Iterable[dict[str, Any]]:
    """Every `inc.source` whose `inc.param` is one of `refs`, by keyset pages of the pathway's search."""
    for i in range(0, len(refs), REVINCLUDE_PAGE):
        after = None
        while True:
            page = search_page(conn, inc.source, [(inc.param, refs[i : i + REVINCLUDE_PAGE])], REVINCLUDE_PAGE,
                               after=after, reach=reach)
            yield from (r.with_meta() for r in page.resources)
            if not page.more:
                break
            after = page.resources[-1].resource["id"]

