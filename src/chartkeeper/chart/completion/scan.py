"""Reading discharged encounters from the store in batches, each with its documents and
procedures, through the store's FHIR search (never the whole store at once).

Encounters are found by discharge date: one search per window of days, ``date=ge{start}`` and
``date=eb{end}`` on ``Encounter.period`` (the period ends inside the window, so every encounter
falls in exactly one window), paged with ``_count``/``_offset``, the documents and procedures
of each page brought along by ``_revinclude``. Each page is read in its own short read
transaction, so a long analysis holds no snapshot open on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from chartkeeper.store import Store

Resource = dict[str, Any]
PAGE_SIZE = 500  # encounters per search page (the store serves at most 1000)
WINDOW_DAYS = 14  # discharge dates per search window
REVINCLUDES = (("_revinclude", "DocumentReference:encounter"),
               ("_revinclude", "Procedure:encounter"))


def reference_key(value: Any) -> str | None:
    """``Type/id`` of a Reference (or reference string), without base URL or version."""
    if isinstance(value, dict):
        value = value.get("reference")
    if not isinstance(value, str) or "/" not in value:
        return None
    parts = value.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 and parts[-1] else None


def parse_datetime(value: Any) -> datetime | None:
    """A FHIR date, dateTime or instant as an aware UTC datetime (a bare date or a partial
    date is taken at the start of its first day, in UTC); None if absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    text = value
    if len(text) == 4:
        text += "-01-01"
    elif len(text) == 7:
        text += "-01"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def coded(concept: Any, system: str) -> list[str]:
    """The codes of a CodeableConcept in ``system``."""
    if not isinstance(concept, dict):
        return []
    return [c["code"] for c in concept.get("coding") or []
            if isinstance(c, dict) and c.get("system") == system and isinstance(c.get("code"), str)]


@dataclass
class EncounterRecord:
    """One encounter and the resources of its record that completion analysis reads."""

    encounter: Resource
    documents: list[Resource] = field(default_factory=list)
    procedures: list[Resource] = field(default_factory=list)

    @property
    def reference(self) -> str:
        return f"Encounter/{self.encounter['id']}"

    @property
    def patient(self) -> str | None:
        return reference_key(self.encounter.get("subject"))

    @property
    def encounter_class(self) -> str | None:
        value = self.encounter.get("class")
        code = value.get("code") if isinstance(value, dict) else None
        return code if isinstance(code, str) else None

    @property
    def admitted(self) -> datetime | None:
        return parse_datetime((self.encounter.get("period") or {}).get("start"))

    @property
    def discharged(self) -> datetime | None:
        """When the encounter ended, if it is finished."""
        if self.encounter.get("status") != "finished":
            return None
        return parse_datetime((self.encounter.get("period") or {}).get("end"))

    def attending(self) -> str | None:
        """The responsible physician: the attending (``ATND``), else the primary performer,
        else the first practitioner taking part in the encounter."""
        candidates: list[tuple[int, str]] = []
        for order, participant in enumerate(self.encounter.get("participant") or []):
            individual = reference_key(participant.get("individual"))
            if individual is None or not individual.startswith(("Practitioner/",
                                                                 "PractitionerRole/")):
                continue
            types = {code for concept in participant.get("type") or []
                     for code in coded(concept, PARTICIPATION_TYPE)}
            rank = 0 if "ATND" in types else 1 if "PPRF" in types else 2
            candidates.append((rank * 10_000 + order, individual))
        return min(candidates)[1] if candidates else None


PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"


def _attach(records: dict[str, EncounterRecord], included: Iterable[Resource]) -> None:
    for resource in included:
        kind = resource.get("resourceType")
        if kind == "DocumentReference":
            targets = [reference_key(r) for r in (resource.get("context") or {}).get(
                "encounter") or []]
            for target in dict.fromkeys(t for t in targets if t in records):
                records[target].documents.append(resource)
        elif kind == "Procedure":
            encounter = reference_key(resource.get("encounter"))
            if encounter is not None and encounter in records:
                records[encounter].procedures.append(resource)


def _page(store: Store, params: list[tuple[str, str]]) -> tuple[list[EncounterRecord], int]:
    """One search page as records with their documents, and how many encounters it held."""
    with store.read() as txn:
        page = txn.search_params("Encounter", [*params, *REVINCLUDES, ("_total", "none")])
    records = {f"Encounter/{e['id']}": EncounterRecord(e) for e in page.matches}
    _attach(records, page.included)
    return list(records.values()), len(page.matches)


def earliest_encounter_date(store: Store) -> date | None:
    """The earliest start of any encounter (a lower bound of every discharge date)."""
    with store.read() as txn:
        page = txn.search_params("Encounter", [("_sort", "date"), ("_count", "1"),
                                               ("_total", "none")])
    if not page.matches:
        return None
    period = page.matches[0].get("period") or {}
    moment = parse_datetime(period.get("start")) or parse_datetime(period.get("end"))
    return moment.date() if moment else None


def discharged_in(store: Store, since: date | None, until: date, *,
                  page_size: int = PAGE_SIZE, window_days: int = WINDOW_DAYS
                  ) -> Iterator[list[EncounterRecord]]:
    """Batches of encounters whose period ends from ``since`` through ``until`` (dates,
    inclusive), each with its documents and procedures. ``since`` None: from the first."""
    first = since if since is not None else earliest_encounter_date(store)
    if first is None or first > until:
        return
    stop = until + timedelta(days=1)
    middle = first + (stop - first) / 2
    start = first
    while start < stop:
        end = min(start + timedelta(days=window_days), stop)
        older, newer = ("date", f"eb{end.isoformat()}"), ("date", f"ge{start.isoformat()}")
        # The first date parameter drives the query: the narrower side of the history.
        bounds = [older, newer] if end <= middle else [newer, older]
        offset = 0
        while True:
            params = [*bounds, ("_count", str(page_size)), ("_offset", str(offset))]
            records, found = _page(store, params)
            if records:
                yield records
            if found < page_size:
                break
            offset += page_size
        start = end


def encounters_by_reference(store: Store, references: Iterable[str], *,
                            page_size: int = PAGE_SIZE) -> Iterator[list[EncounterRecord]]:
    """Batches of the named encounters (``Encounter/id`` or bare ids); unknown ones are
    skipped."""
    ids = list(dict.fromkeys(ref.split("/")[-1] for ref in references if ref))
    for start in range(0, len(ids), page_size):
        chunk = ids[start:start + page_size]
        escaped = ",".join(i.replace("\\", "\\\\").replace(",", "\\,") for i in chunk)
        records, _ = _page(store, [("_id", escaped), ("_count", str(len(chunk)))])
        if records:
            yield records
