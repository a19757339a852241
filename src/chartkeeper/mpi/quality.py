"""Data-quality views of the master patient index: the duplicate rate, the records that may
hold two people (overlay risk) and the age of the review queue.

The queue's age and most of the rate are counts the search index answers
(``_summary=count``), cheap at any size. What the index cannot tell (a link's type, a changed
birth date, the blood group a result states) is read from the few records that can matter,
found in one streamed pass over the store's index: patients that have a ``link``, patients
with more than one version, patients with more than one blood-group result.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import and_, false, func, select

from chartkeeper.mpi.merge import REVIEW_TASK_CODE
from chartkeeper.mpi.service import OPEN, open_reviews
from chartkeeper.store import Store, schema
from chartkeeper.store.errors import NotFound
from chartkeeper.store.service import Txn, loads

Resource = dict[str, Any]
T = TypeVar("T")
LOINC = "http://loinc.org"
ABO_RH, ABO, RH = "882-1", "883-9", "10331-7"  # LOINC: ABO and Rh group; ABO; Rh
BLOOD_GROUP_CODES = (ABO_RH, ABO, RH)
NOT_A_RESULT = frozenset({"entered-in-error", "cancelled"})
BATCH = 500
REVIEW_CODE = f"{REVIEW_TASK_CODE[0]}|{REVIEW_TASK_CODE[1]}"
# Age bands of the review queue: (label, at least, less than) days since the Task was authored.
QUEUE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("under 7 days", 0, 7), ("7 to 30 days", 7, 30), ("30 to 90 days", 30, 90),
    ("over 90 days", 90, None))


def _streamed(store: Store, query: Any) -> Iterator[Any]:
    """The rows of a read-only query in one pass, fetched BATCH at a time (a server-side
    cursor on PostgreSQL): each scan below reads its index once, whatever the store's size."""
    with store.read() as txn:
        yield from txn.conn.execute(query, execution_options={"stream_results": True,
                                                              "yield_per": BATCH})


# ----------------------------------------------------------------------- duplicate rate
@dataclass(frozen=True)
class DuplicateRate:
    """How many registrations are (or may be) the same person, per active patient.

    ``merged``: records merged into another (a *replaced-by* link); ``linked``: pairs linked
    as one person (*seealso*); ``pending``: pairs in the open review queue."""

    patients: int  # current Patient records
    inactive: int  # of which marked inactive (the merged records among them)
    merged: int
    linked: int
    pending: int

    @property
    def active(self) -> int:
        return self.patients - self.inactive

    def per_active(self, count: int) -> float:
        return count / self.active if self.active else 0.0

    @property
    def duplicates(self) -> int:
        return self.merged + self.linked + self.pending

    @property
    def rate(self) -> float:
        """Duplicate registrations found so far (merged, linked or awaiting review) per active
        patient record."""
        return self.per_active(self.duplicates)


def _count(txn: Txn, resource_type: str, params: list[tuple[str, str]]) -> int:
    return int(txn.search_params(resource_type, [*params, ("_summary", "count")]).total or 0)


def link_counts(store: Store) -> tuple[int, int]:
    """(records merged into another, pairs linked as one person), from the Patients that have
    a ``link``: R4 indexes a link's target but not its type, so those few are read."""
    r, ref = schema.resource, schema.idx_reference
    holders = select(ref.c.resource_pk).where(ref.c.resource_type == "Patient",
                                              ref.c.param == "link")
    query = select(r.c.resource_id, r.c.content).where(r.c.pk.in_(holders),
                                                       r.c.deleted == false())
    merged, linked = 0, set()
    for row in _streamed(store, query):
        for other in loads(row.content).get("link") or []:
            target = str((other.get("other") or {}).get("reference", ""))
            if other.get("type") == "replaced-by":
                merged += 1
            elif other.get("type") == "seealso" and target.startswith("Patient/"):
                linked.add(frozenset((str(row.resource_id), target.removeprefix("Patient/"))))
    return merged, len(linked)


def duplicate_rate(store: Store) -> DuplicateRate:
    """The store's duplicate rate."""
    merged, linked = link_counts(store)
    with store.read() as txn:
        return DuplicateRate(
            patients=_count(txn, "Patient", []),
            inactive=_count(txn, "Patient", [("active", "false")]),
            merged=merged, linked=linked,
            pending=_count(txn, "Task", [("code", REVIEW_CODE), ("status", ",".join(OPEN))]))


# ------------------------------------------------------------------------- queue's age
@dataclass(frozen=True)
class QueueAge:
    """Open review Tasks by how long they have waited (since ``authoredOn``)."""

    open: int
    bands: list[tuple[str, int]]
    oldest_task: str | None = None
    oldest_authored: str | None = None
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def oldest_days(self) -> int | None:
        if not self.oldest_authored:
            return None
        return age_in_days(self.oldest_authored, self.as_of)


def age_in_days(instant: str, as_of: datetime) -> int | None:
    """Whole days from a FHIR instant (or date) to ``as_of``; None when it is not one."""
    try:
        when = datetime.fromisoformat(instant.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((as_of - when).days, 0)


def _instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def queue_age(txn: Txn, as_of: datetime | None = None) -> QueueAge:
    """The open review queue by age band, and its oldest Task."""
    now = as_of or datetime.now(UTC)
    base = [("code", REVIEW_CODE), ("status", ",".join(OPEN))]
    bands = []
    for label, at_least, less_than in QUEUE_BANDS:
        # Authored at or before now - at_least days, and after now - less_than days.
        params = list(base)
        if at_least:
            params.append(("authored-on", f"lt{_instant(now - timedelta(days=at_least))}"))
        if less_than is not None:
            params.append(("authored-on", f"ge{_instant(now - timedelta(days=less_than))}"))
        bands.append((label, _count(txn, "Task", params)))
    oldest, total = open_reviews(txn, count=1)
    first = oldest[0].task if oldest else None
    return QueueAge(total, bands, first["id"] if first else None,
                    first.get("authoredOn") if first else None, now)


# ---------------------------------------------------------------------- overlay risk
@dataclass(frozen=True)
class OverlayRisk:
    """A Patient record that may hold two people, and what suggests it."""

    patient: str  # Patient id
    kind: str  # "identity-changed", "blood-groups", "merged-conflict", "linked-conflict"
    detail: str
    other: str | None = None  # the other Patient of a merged or linked pair

    @property
    def label(self) -> str:
        return OVERLAY_KINDS[self.kind]


OVERLAY_KINDS = {
    "identity-changed": "birth date or sex changed between versions",
    "blood-groups": "more than one blood group",
    "merged-conflict": "merged records disagree",
    "linked-conflict": "linked records disagree",
}


OVERLAY_STEPS = ("identity changes between versions", "blood groups",
                 "merged and linked pairs")


def overlay_risks(store: Store, limit: int | None = None,
                  on_step: Callable[[int, str], None] | None = None) -> list[OverlayRisk]:
    """Records that suggest two people in one, up to ``limit``: identity changed across a
    Patient's versions, conflicting blood groups, and merged or linked records that
    disagree on birth date, sex or blood group. ``on_step(n, name)`` is told as each of the
    ``OVERLAY_STEPS`` begins."""
    checks = (changed_identities, blood_group_conflicts, pair_conflicts)
    found = _chain(*(_announced(n, check, store, on_step) for n, check in enumerate(checks)))
    try:
        return list(islice(found, limit))
    finally:
        found.close()  # ends the scan under way (and its read transaction) at the limit


def _announced(n: int, check: Callable[[Store], Iterator[OverlayRisk]], store: Store,
               on_step: Callable[[int, str], None] | None) -> Iterator[OverlayRisk]:
    if on_step is not None:
        on_step(n, OVERLAY_STEPS[n])
    yield from check(store)


def _chain(*sources: Iterable[OverlayRisk]) -> Generator[OverlayRisk, None, None]:
    for source in sources:
        yield from source


# --- identity changed between versions
def versioned_patients(store: Store) -> Iterator[str]:
    """Ids of the current Patients that have more than one version."""
    r = schema.resource
    query = select(r.c.resource_id).where(
        r.c.resource_type == "Patient", r.c.version_id > 1, r.c.deleted == false())
    for row in _streamed(store, query):
        yield str(row.resource_id)


def _identity_changes(versions: list[Resource]) -> list[str]:
    """What changed in birth date or sex from one version to a later one (oldest first);
    a value first filled in, or a partial date made full, is not a change."""
    changes = []
    for element, name in (("birthDate", "birth date"), ("gender", "sex")):
        seen: list[tuple[str, str]] = []
        for version in versions:
            value = version.get(element)
            if not isinstance(value, str) or not value:
                continue
            if seen and not _dates_conflict(seen[-1][0], value):
                continue  # the same, or a partial birth date written out in full
            seen.append((value, str(version.get("meta", {}).get("versionId", "?"))))
        if len(seen) > 1:
            changes.append(f"{name}: " + " → ".join(f"{v} (version {n})" for v, n in seen))
    return changes


def patient_versions(txn: Txn, patient_id: str) -> list[Resource]:
    """Every stored version of a Patient, oldest first (deletions left out)."""
    versions: list[Resource] = []
    offset = 0
    while True:
        try:
            page = txn.history("Patient", patient_id, count=100, offset=offset)
        except NotFound:
            return []
        versions += [e.resource for e in page.entries if e.resource is not None]
        offset += 100
        if offset >= page.total:
            return versions[::-1]


def changed_identities(store: Store) -> Iterator[OverlayRisk]:
    """Patients whose birth date or sex changed from one version to another."""
    for ids in _batched(versioned_patients(store), BATCH):
        with store.read() as txn:
            found = [(pid, _identity_changes(patient_versions(txn, pid))) for pid in ids]
        for patient_id, changes in found:
            if changes:
                yield OverlayRisk(patient_id, "identity-changed", "; ".join(changes))


def _batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


# --- blood groups
_ABO = re.compile(r"\b(AB|A|B|O)\b")
_RH_POSITIVE = re.compile(r"\b(POSITIVE|POS)\b|\+")
_RH_NEGATIVE = re.compile(r"\b(NEGATIVE|NEG)\b|(?<![A-Z])-|−")
# Answer codes whose display may be missing: SNOMED CT and LOINC answer lists.
KNOWN_ANSWERS: dict[str, tuple[str | None, str | None]] = {
    "112144000": ("A", None), "112149005": ("B", None), "165743006": ("AB", None),
    "58460004": ("O", None), "165747007": (None, "+"), "165746003": (None, "-"),
    "278149003": ("A", "+"), "278152006": ("A", "-"), "278150003": ("AB", "+"),
    "278153001": ("AB", "-"), "278147001": ("B", "+"), "278151004": ("B", "-"),
    "278155008": ("O", "+"), "278154007": ("O", "-"),
    "LA19710-5": ("A", None), "LA19709-7": ("B", None), "LA19708-9": ("O", None),
    "LA28449-9": ("AB", None), "LA6576-8": (None, "+"), "LA6577-6": (None, "-"),
}


def _texts(observation: Resource) -> list[str]:
    value = observation.get("valueCodeableConcept") or {}
    texts = [str(c.get("display", "")) for c in value.get("coding") or []]
    texts += [str(value.get("text", "")), str(observation.get("valueString", ""))]
    return [t.upper() for t in texts if t]


def blood_group(observation: Resource) -> tuple[str | None, str | None]:
    """(ABO group, Rh "+"/"-") an ABO/Rh result states; None for what it does not say."""
    codes = {c.get("code") for c in (observation.get("code") or {}).get("coding") or []
             if c.get("system") == LOINC}
    abo: str | None = None
    rh: str | None = None
    value = observation.get("valueCodeableConcept") or {}
    for coding in value.get("coding") or []:
        known = KNOWN_ANSWERS.get(str(coding.get("code")))
        if known:
            abo, rh = abo or known[0], rh or known[1]
    for text in _texts(observation):
        text = text.replace("RH(D)", "RHD").replace("RH (D)", "RHD")
        if abo is None and (match := _ABO.search(text.replace("RHD", ""))):
            abo = match.group(1)
        if rh is None:
            if _RH_NEGATIVE.search(text):
                rh = "-"
            elif _RH_POSITIVE.search(text):
                rh = "+"
    if ABO_RH not in codes:
        abo = abo if ABO in codes else None
        rh = rh if RH in codes else None
    return abo, rh


@dataclass
class BloodGroups:
    """The ABO groups and Rh types one patient's results state, with when."""

    abo: dict[str, str] = field(default_factory=dict)  # group -> first date seen
    rh: dict[str, str] = field(default_factory=dict)

    def add(self, observation: Resource) -> None:
        if observation.get("status") in NOT_A_RESULT:
            return
        when = str(observation.get("effectiveDateTime") or observation.get("issued") or "")[:10]
        abo, rh = blood_group(observation)
        if abo:
            self.abo.setdefault(abo, when)
        if rh:
            self.rh.setdefault(rh, when)

    def merged(self, other: BloodGroups) -> BloodGroups:
        return BloodGroups({**other.abo, **self.abo}, {**other.rh, **self.rh})

    @property
    def conflicting(self) -> bool:
        return len(self.abo) > 1 or len(self.rh) > 1

    def describe(self) -> str:
        parts = []
        if len(self.abo) > 1:
            parts.append("ABO " + ", ".join(f"{g} ({d or 'undated'})"
                                            for g, d in sorted(self.abo.items())))
        if len(self.rh) > 1:
            parts.append("Rh " + ", ".join(f"{g} ({d or 'undated'})"
                                           for g, d in sorted(self.rh.items())))
        return "; ".join(parts)

    def summary(self) -> str:
        return "/".join(sorted(self.abo)) + "".join(sorted(self.rh))


def _blood_group_query() -> Any:
    """Patient ids with two or more blood-group results (from the index alone)."""
    token, ref = schema.idx_token, schema.idx_reference
    return (select(ref.c.target_id)
            .select_from(token.join(ref, and_(ref.c.resource_pk == token.c.resource_pk,
                                              ref.c.resource_type == "Observation",
                                              ref.c.param == "subject",
                                              ref.c.target_type == "Patient")))
            .where(token.c.resource_type == "Observation", token.c.param == "code",
                   token.c.code.in_(BLOOD_GROUP_CODES), token.c.system == LOINC)
            .group_by(ref.c.target_id)
            .having(func.count(func.distinct(token.c.resource_pk)) > 1))


def blood_groups_of(txn: Txn, patient_ids: list[str]) -> dict[str, BloodGroups]:
    """Each patient's blood groups from their ABO/Rh results."""
    found: dict[str, BloodGroups] = defaultdict(BloodGroups)
    codes = ",".join(f"{LOINC}|{c}" for c in BLOOD_GROUP_CODES)
    for start in range(0, len(patient_ids), 100):
        subjects = ",".join(f"Patient/{p}" for p in patient_ids[start:start + 100])
        offset = 0
        while True:
            page = txn.search_params("Observation", [
                ("subject", subjects), ("code", codes), ("_count", "1000"),
                ("_offset", str(offset)), ("_total", "none")])
            for observation in page.matches:
                subject = str((observation.get("subject") or {}).get("reference", ""))
                found[subject.removeprefix("Patient/")].add(observation)
            if len(page.matches) < 1000:
                break
            offset += 1000
    return found


def blood_group_conflicts(store: Store) -> Iterator[OverlayRisk]:
    """Patients whose results state more than one ABO group or Rh type."""
    candidates = (str(row.target_id) for row in _streamed(store, _blood_group_query()))
    for ids in _batched(candidates, BATCH):
        with store.read() as txn:
            groups = blood_groups_of(txn, ids)
        for patient_id in ids:
            if patient_id in groups and groups[patient_id].conflicting:
                yield OverlayRisk(patient_id, "blood-groups", groups[patient_id].describe())


# --- merged and linked pairs
def linked_pairs(store: Store) -> Iterator[tuple[str, str]]:
    """(Patient id, a Patient its ``link`` names), from the reference index."""
    ref, r = schema.idx_reference, schema.resource
    query = (select(r.c.resource_id, ref.c.target_id)
             .select_from(ref.join(r, r.c.pk == ref.c.resource_pk))
             .where(ref.c.resource_type == "Patient", ref.c.param == "link",
                    ref.c.target_type == "Patient", r.c.deleted == false()))
    for row in _streamed(store, query):
        yield str(row.resource_id), str(row.target_id)


def _link_type(patient: Resource, other: str) -> str | None:
    return next((lk.get("type") for lk in patient.get("link") or []
                 if lk.get("other", {}).get("reference") == f"Patient/{other}"), None)


def _dates_conflict(first: Any, second: Any) -> bool:
    """Two birth dates that cannot be one person's (a partial date agrees with its fuller
    form)."""
    if not (isinstance(first, str) and isinstance(second, str) and first and second):
        return False
    return not (first.startswith(second) or second.startswith(first))


def _pair_disagreements(left: Resource, right: Resource, groups: dict[str, BloodGroups]
                        ) -> list[str]:
    found = []
    if _dates_conflict(left.get("birthDate"), right.get("birthDate")):
        found.append(f"birth date {left['birthDate']} / {right['birthDate']}")
    sexes = {left.get("gender"), right.get("gender")}
    if sexes <= {"male", "female"} and len(sexes) == 2:
        found.append(f"sex {left['gender']} / {right['gender']}")
    mine, theirs = groups.get(str(left["id"])), groups.get(str(right["id"]))
    if mine and theirs and mine.merged(theirs).conflicting and not (
            mine.conflicting or theirs.conflicting):  # each one alone is reported already
        found.append(f"blood group {mine.summary()} / {theirs.summary()}")
    return found


def pair_conflicts(store: Store) -> Iterator[OverlayRisk]:
    """Merged or linked pairs whose records disagree on birth date, sex or blood group."""
    for batch in _batched(linked_pairs(store), BATCH):
        ids = sorted({p for pair in batch for p in pair})
        with store.read() as txn:
            patients = _patients_by_id(txn, ids)
            groups = blood_groups_of(txn, ids)
        for first, second in batch:
            if first not in patients or second not in patients:
                continue
            left, right = patients[first], patients[second]
            forward, back = _link_type(left, second), _link_type(right, first)
            if back is not None and first > second:
                continue  # links go both ways: the pair is seen from its other side
            merged = bool({forward, back} & {"replaced-by", "replaces"})
            if merged and not (forward == "replaces" or back == "replaced-by"):
                left, right = right, left  # a merge is reported on its survivor
            disagreements = _pair_disagreements(left, right, groups)
            if disagreements:
                yield OverlayRisk(str(left["id"]),
                                  "merged-conflict" if merged else "linked-conflict",
                                  "; ".join(disagreements), str(right["id"]))


def _patients_by_id(txn: Txn, ids: list[str]) -> dict[str, Resource]:
    found: dict[str, Resource] = {}
    for start in range(0, len(ids), 200):
        chunk = ids[start:start + 200]
        for patient in txn.search_params("Patient", [("_id", ",".join(chunk)),
                                                     ("_count", str(len(chunk)))]).matches:
            found[str(patient["id"])] = patient
    return found
