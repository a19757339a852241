"""The coders' work queue: finished encounters with no coded Claim, oldest discharge
first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from chartkeeper.coding.worksheet import (
    CODED,
    ENCOUNTER_SYSTEM,
    INPATIENT_CLASSES,
    TAG_SYSTEM,
    Resource,
    Setting,
)
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Store, Txn, search_all


@dataclass(frozen=True)
class QueueItem:
    """A finished encounter waiting for its codes."""

    encounter_id: str
    patient_id: str
    patient_name: str
    encounter_class: str
    setting: Setting
    discharged: date
    age_days: int

    def to_json(self) -> dict[str, Any]:
        return {"encounter": self.encounter_id, "patient": self.patient_id,
                "patientName": self.patient_name, "class": self.encounter_class,
                "setting": self.setting, "discharged": self.discharged.isoformat(),
                "ageDays": self.age_days}


def queue(store: Store, *, as_of: date | None = None, limit: int | None = None
          ) -> list[QueueItem]:
    """Unbilled encounters: finished, with no coded Claim (one not entered in error), oldest
    discharge first (age in days on ``as_of``, today in UTC by default)."""
    today = as_of or datetime.now(UTC).date()
    with store.read() as txn:
        coded = _coded_encounters(txn)
        items = []
        names: dict[str, str] = {}
        for encounter in search_all(txn, "Encounter", [("status", "finished")]):
            if encounter["id"] in coded:
                continue
            period = encounter.get("period") or {}
            moment = period.get("end") or period.get("start")
            reference = str((encounter.get("subject") or {}).get("reference") or "")
            if not moment or not reference.startswith("Patient/"):
                continue  # no date or no patient: not billable, and not the coders' to fix
            patient_id = reference.split("/")[1]
            if patient_id not in names:
                names[patient_id] = _patient_name(txn, patient_id)
            discharged = _queue_day(str(moment))
            klass = str((encounter.get("class") or {}).get("code") or "")
            items.append(QueueItem(
                str(encounter["id"]), patient_id, names[patient_id], klass,
                "inpatient" if klass in INPATIENT_CLASSES else "outpatient", discharged,
                (today - discharged).days))
    items.sort(key=lambda item: (-item.age_days, item.encounter_id))
    return items if limit is None else items[:limit]


def _queue_day(value: str) -> date:
    """The day of a FHIR date or dateTime; a month or a year alone counts from its first day
    (the queue orders by it, it assigns nothing)."""
    year, month, day = (value[:10].split("-") + ["01", "01"])[:3]
    return date(int(year), int(month), int(day))


def _coded_encounters(txn: Txn) -> set[str]:
    found = set()
    for claim in search_all(txn, "Claim", [("_tag", f"{TAG_SYSTEM}|{CODED['code']}")]):
        if claim.get("status") == "entered-in-error":
            continue
        found.update(_encounters_billed(claim.get("identifier") or []))
    return found


def _encounters_billed(identifiers: Iterable[Resource]) -> set[str]:
    return {str(i["value"]) for i in identifiers
            if i.get("system") == ENCOUNTER_SYSTEM and i.get("value")}


def _patient_name(txn: Txn, patient_id: str) -> str:
    try:
        patient = txn.read("Patient", patient_id)
    except (NotFound, Gone):
        return ""
    names = patient.get("name") or []
    chosen = next((n for n in names if n.get("use") == "official"), names[0] if names else {})
    if chosen.get("text"):
        return str(chosen["text"])
    return " ".join([*chosen.get("given", []), chosen.get("family", "")]).strip()
