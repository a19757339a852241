"""Property: any valid Patient written to the store reads back unchanged and is found again."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chartkeeper.store import Store

# FHIR strings: no leading/trailing whitespace requirement, but no control characters.
name_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1,
    max_size=40).map(str.strip).filter(bool)

patients = st.fixed_dictionaries(
    {"resourceType": st.just("Patient"),
     "name": st.lists(st.fixed_dictionaries({"family": name_text,
                                             "given": st.lists(name_text, min_size=1,
                                                               max_size=3)}),
                      min_size=1, max_size=2),
     "birthDate": st.dates(min_value=date(1900, 1, 1), max_value=date(2030, 12, 31)).map(
         date.isoformat),
     "gender": st.sampled_from(["male", "female", "other", "unknown"]),
     "identifier": st.lists(st.fixed_dictionaries({
         "system": st.just("urn:oid:2.16.840.1.113883.4.1"),
         "value": st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True)}), max_size=2)},
).map(lambda p: {k: v for k, v in p.items() if v != []})


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patient=patients)
def test_patient_round_trips_and_is_found_by_name_and_birthdate(
        patient: dict[str, Any], tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path}/roundtrip.sqlite")
    store.create_schema()
    with store.write() as txn:
        created = txn.create(patient)
    with store.read() as txn:
        stored = txn.read("Patient", created.resource_id)
        assert {k: v for k, v in stored.items() if k not in ("id", "meta")} == patient
        family = patient["name"][0]["family"]
        by_name = txn.search_params("Patient", [("family:exact", family.replace(
            "\\", "\\\\").replace(",", "\\,").replace("$", "\\$").replace("|", "\\|"))])
        assert created.resource_id in {r["id"] for r in by_name.matches}
        by_birth = txn.search_params("Patient", [("birthdate", patient["birthDate"])])
        assert created.resource_id in {r["id"] for r in by_birth.matches}
    store.dispose()
