"""Records retention on both databases: adult, minor and per-type periods, the review list,
legal holds that block destruction until released, destruction that leaves a certificate,
refusals that change nothing, and a malformed schedule refused with the setting named."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from chartkeeper.chart import retention
from chartkeeper.chart.completion.rules import RulesError
from chartkeeper.chart.retention import (
    LegalHoldActive,
    RetentionNotEnded,
    RetentionRules,
    active_holds,
    certificates,
    destroy,
    holds_for,
    past_retention,
    patient_records,
    place_hold,
    release_hold,
    retention_of,
)
from chartkeeper.chart.retention_rules import (
    MinorsRule,
    RetentionPeriod,
    load_retention_rules,
    parse_retention_rules,
    retention_rules_to_toml,
)
from chartkeeper.store import Conflict, Gone, NotFound, Store, schema

AS_OF = date(2026, 1, 15)
MR = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]}
DISCHARGE_SUMMARY = "18842-5"


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    store = Store(database_url)
    store.create_schema()
    with store.write() as txn:
        txn.update("Practitioner", "doc-1", {"resourceType": "Practitioner", "id": "doc-1",
                                             "name": [{"family": "Welby"}]})
    yield store
    store.dispose()


def versions(store: Store) -> int:
    with store.read() as txn:
        return int(txn.conn.execute(
            select(func.count()).select_from(schema.resource_version)).scalar_one())


def add_patient(store: Store, patient_id: str, born: str | None, visits: list[str],
                document_day: str | None = None) -> str:
    """A patient with an ambulatory encounter, an observation and a condition on each visit
    day, a discharge summary on ``document_day``, and an import Provenance of them all."""
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": patient_id,
        "identifier": [{"type": MR, "system": "urn:oid:1.2.3", "value": f"MRN-{patient_id}"}],
        "name": [{"use": "official", "family": "Archer", "given": [patient_id.title()]}]}
    if born:
        patient["birthDate"] = born
    subject = {"reference": f"Patient/{patient_id}"}
    with store.write() as txn:
        txn.update("Patient", patient_id, patient)
        targets = []
        for number, day in enumerate(visits):
            encounter = txn.create({
                "resourceType": "Encounter", "status": "finished", "subject": subject,
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                          "code": "AMB"},
                "period": {"start": f"{day}T09:00:00Z", "end": f"{day}T10:00:00Z"},
                "participant": [{"individual": {"reference": "Practitioner/doc-1"}}]})
            observation = txn.create({
                "resourceType": "Observation", "status": "final", "subject": subject,
                "code": {"text": f"weight {number}"}, "effectiveDateTime": day,
                "encounter": {"reference": encounter.location.split("/_history/")[0]}})
            condition = txn.create({"resourceType": "Condition", "subject": subject,
                                    "code": {"text": "asthma"}, "recordedDate": day})
            targets += [encounter.location, observation.location, condition.location]
        if document_day:
            document = txn.create({
                "resourceType": "DocumentReference", "status": "current", "subject": subject,
                "type": {"coding": [{"system": "http://loinc.org", "code": DISCHARGE_SUMMARY}]},
                "date": f"{document_day}T12:00:00Z",
                "content": [{"attachment": {"contentType": "text/plain", "data": "SGk="}}]})
            targets.append(document.location)
        return txn.create({"resourceType": "Provenance", "recorded": "2026-01-01T00:00:00Z",
                           "target": [{"reference": t} for t in targets],
                           "agent": [{"who": {"display": "import"}}]}).resource_id


def the_retention(store: Store, patient_id: str, rules: RetentionRules) -> Any:
    with store.read() as txn:
        patient = txn.read("Patient", patient_id)
        return retention_of(patient, patient_records(txn, patient_id), rules)


# ----------------------------------------------------------------------------- periods
def test_an_adult_record_is_kept_ten_years_after_the_last_encounter(store: Store) -> None:
    add_patient(store, "adult", "1950-04-02", ["1990-05-01", "1995-03-01"], "1995-03-02")
    kept = the_retention(store, "adult", RetentionRules())
    assert kept.last_encounter == date(1995, 3, 1)
    assert kept.ends == date(2005, 3, 1)
    assert kept.first_record == date(1990, 5, 1) and kept.last_record == date(1995, 3, 2)
    assert kept.counts == {"Condition": 2, "DocumentReference": 1, "Encounter": 2,
                           "Observation": 2, "Patient": 1}
    assert kept.past(AS_OF) and not kept.past(date(2005, 2, 28))


def test_a_minor_record_is_kept_until_majority_plus_ten_years(store: Store) -> None:
    add_patient(store, "child", "2000-06-15", ["2005-01-10"])
    kept = the_retention(store, "child", RetentionRules())
    assert kept.ends == date(2028, 6, 15)  # majority 2018-06-15, plus 10 years
    assert "minor" in kept.basis and not kept.past(AS_OF)
    longer = RetentionRules(minors=MinorsRule(age_of_majority=21, years_after_majority=3))
    assert the_retention(store, "child", longer).ends == date(2024, 6, 15)
    adult_only = RetentionRules(minors=MinorsRule(enabled=False))
    assert the_retention(store, "child", adult_only).ends == date(2015, 1, 10)


def test_a_minor_seen_again_as_an_adult_counts_from_the_later_date(store: Store) -> None:
    add_patient(store, "teen", "2000-06-15", ["2016-02-01", "2019-09-09"])
    kept = the_retention(store, "teen", RetentionRules())
    assert kept.ends == date(2029, 9, 9)  # the later of majority and the last encounter


def test_per_type_periods_by_loinc_and_by_resource_type(store: Store) -> None:
    add_patient(store, "typed", "1950-04-02", ["1995-03-01"], "1996-07-01")
    rules = parse_retention_rules(
        '[document-types]\n"18842-5" = { years = 25, counted_from = "record-date" }\n'
        '[resource-types]\nCondition = 12\n')
    kept = the_retention(store, "typed", rules)
    assert kept.ends == date(2021, 7, 1)
    assert "document type 18842-5" in kept.basis
    only_conditions = parse_retention_rules("[resource-types]\nCondition = 12\n")
    assert the_retention(store, "typed", only_conditions).ends == date(2007, 3, 1)
    assert rules.shortest_years() == 10


def test_a_patient_without_a_birth_date_is_never_past_retention(store: Store) -> None:
    add_patient(store, "unknown", None, ["1980-01-01"])
    kept = the_retention(store, "unknown", RetentionRules())
    assert kept.ends is None and "birth date" in kept.basis
    with pytest.raises(RetentionNotEnded, match="birth date"):
        destroy(store, "unknown", RetentionRules(), AS_OF, "HIM director", "deletion")


# ----------------------------------------------------------------------------- review list
def test_the_review_list_shows_patients_past_retention_with_their_holds(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retention, "SCAN_BATCH", 2)  # page through several batches
    add_patient(store, "p1-old", "1950-01-01", ["1990-01-01"])
    add_patient(store, "p2-child", "2010-01-01", ["2012-01-01"])
    add_patient(store, "p3-recent", "1950-01-01", ["2024-01-01"])
    add_patient(store, "p4-held", "1950-01-01", ["1991-01-01"])
    add_patient(store, "p5-old", "1950-01-01", ["1992-01-01"])
    place_hold(store, "p4-held", "Doe v. General Hospital", "counsel", datetime(2025, 1, 1))
    review = past_retention(store, RetentionRules(), AS_OF, limit=10)
    assert [(i.patient_id, i.held) for i in review] == [
        ("p1-old", False), ("p4-held", True), ("p5-old", False)]
    first = review[0]
    assert first.retention_ended == date(2000, 1, 1)
    assert first.mrn == "MRN-p1-old" and first.name == "P1-Old Archer"
    assert [i.patient_id for i in past_retention(store, RetentionRules(), AS_OF, 1, 1)] == [
        "p4-held"]
    assert past_retention(store, RetentionRules(), AS_OF, 5, 3) == []
    assert [i.patient_id for i in past_retention(store, RetentionRules(), date(2000, 6, 1))
            ] == ["p1-old"]


# ----------------------------------------------------------------------------- holds
def test_a_hold_blocks_destruction_and_its_release_unblocks_it(store: Store) -> None:
    add_patient(store, "held", "1950-01-01", ["1990-01-01"], "1990-01-02")
    hold = place_hold(store, "held", "Doe v. General Hospital", "J. Counsel",
                      datetime(2025, 3, 1, 9, 30, tzinfo=UTC))
    with store.read() as txn:
        flag = txn.read("Flag", hold.id)
        assert [h.id for h in active_holds(txn)] == [hold.id]
    assert flag["status"] == "active" and flag["subject"] == {"reference": "Patient/held"}
    assert flag["category"][0]["coding"][0]["code"] == "admin"
    assert flag["code"]["coding"][0] == {"system": "urn:chartkeeper:retention",
                                         "code": "legal-hold", "display": "Legal hold"}
    assert flag["code"]["text"] == "Doe v. General Hospital"
    assert flag["period"] == {"start": "2025-03-01T09:30:00Z"}
    assert flag["author"] == {"display": "J. Counsel"}

    before = versions(store)
    with pytest.raises(LegalHoldActive, match="Doe v. General Hospital"):
        destroy(store, "held", RetentionRules(), AS_OF, "HIM director", "deletion")
    assert versions(store) == before

    released = release_hold(store, hold.id, "HIM director", datetime(2025, 9, 1, tzinfo=UTC))
    assert not released.active and released.released == "2025-09-01T00:00:00Z"
    with store.read() as txn:
        (again,) = holds_for(txn, "held")
        assert active_holds(txn) == []
    assert again.released_by == "HIM director" and again.placed_by == "J. Counsel"
    with pytest.raises(Conflict, match="released already"):
        release_hold(store, hold.id, "HIM director", datetime(2025, 9, 2, tzinfo=UTC))
    certificate = destroy(store, "held", RetentionRules(), AS_OF, "HIM director",
                          "deletion from the record store")
    assert "1 legal hold(s) had been placed, all released" in certificate.text


def test_a_hold_needs_a_patient_and_a_matter(store: Store) -> None:
    add_patient(store, "someone", "1950-01-01", ["1990-01-01"])
    before = versions(store)
    with pytest.raises(NotFound):
        place_hold(store, "nobody", "Doe v. General Hospital", "counsel", AS_OF)
    with pytest.raises(Exception, match="the matter is required"):
        place_hold(store, "someone", "   ", "counsel", AS_OF)
    with pytest.raises(NotFound, match="not a legal hold"):
        release_hold(store, "no-such-flag", "counsel", AS_OF)
    assert versions(store) == before


# ----------------------------------------------------------------------------- destruction
def test_destruction_deletes_the_record_and_leaves_a_certificate(store: Store) -> None:
    imported = add_patient(store, "gone", "1950-04-02", ["1990-05-01", "1995-03-01"],
                           "1995-03-02")
    imported_other = add_patient(store, "stays", "1950-04-02", ["1990-05-01"])
    with store.write() as txn:  # an import Provenance about both patients' records
        other = txn.search_params("Observation", [("subject", "Patient/stays")]).matches[0]
        mine = txn.search_params("Observation", [("subject", "Patient/gone")]).matches[0]
        shared = txn.create({"resourceType": "Provenance", "recorded": "2026-01-01T00:00:00Z",
                             "target": [{"reference": f"Observation/{other['id']}"},
                                        {"reference": f"Observation/{mine['id']}"}],
                             "agent": [{"who": {"display": "import"}}]})
        record = [(r["resourceType"], r["id"]) for r in patient_records(txn, "gone")]
    certificate = destroy(store, "gone", RetentionRules(), AS_OF, "Pat Director, RHIA",
                          "deletion from the record store")
    with store.read() as txn:
        for resource_type, resource_id in record:
            with pytest.raises(Gone):
                txn.read(resource_type, resource_id)
        with pytest.raises(Gone):  # about this patient's records only: destroyed with them
            txn.read("Provenance", imported)
        assert txn.read("Provenance", imported_other)
        assert txn.read("Provenance", shared.resource_id)  # names another patient: kept
        assert txn.read("Practitioner", "doc-1")  # shared resources stay
        assert txn.read("Patient", "stays")
        document = txn.read("DocumentReference", certificate.reference.split("/")[1])
        found = certificates(txn, mrn="MRN-gone")
        assert certificates(txn, mrn="MRN-stays") == []
    assert [d["id"] for d in found] == [document["id"]]
    assert "subject" not in document and "context" in document
    assert document["type"]["text"] == "Certificate of destruction"
    assert document["docStatus"] == "final"
    assert document["authenticator"] == {"display": "Pat Director, RHIA"}
    assert "MRN MRN-gone" in document["description"]
    text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
    assert text == certificate.text
    assert "Gone Archer" in text and "Date range of the records: 1990-05-01 to 1995-03-02" in text
    assert "Retention period ended: 2005-03-01" in text
    assert "Method of destruction: deletion from the record store" in text
    assert "purge of those versions is not implemented" in text
    assert "asthma" not in text and "1950" not in text  # nothing clinical, no birth date
    assert certificate.records_destroyed == 1 + 2 * 3 + 1 + 1  # + its own import Provenance
    with pytest.raises(Gone):
        destroy(store, "gone", RetentionRules(), AS_OF, "Pat Director, RHIA", "deletion")


def test_refusals_change_nothing(store: Store) -> None:
    add_patient(store, "young", "2010-01-01", ["2012-01-01"])
    add_patient(store, "old", "1950-01-01", ["1990-01-01"])
    before = versions(store)
    with pytest.raises(RetentionNotEnded, match="until 2038-01-01"):
        destroy(store, "young", RetentionRules(), AS_OF, "HIM director", "deletion")
    with pytest.raises(Exception, match="method of destruction is required"):
        destroy(store, "old", RetentionRules(), AS_OF, "HIM director", "")
    with pytest.raises(NotFound):
        destroy(store, "nobody", RetentionRules(), AS_OF, "HIM director", "deletion")

    def fail(_txn: object) -> None:
        raise RuntimeError("audit unavailable")

    with pytest.raises(RuntimeError):
        destroy(store, "old", RetentionRules(), AS_OF, "HIM director", "deletion", fail)
    assert versions(store) == before
    with store.read() as txn:
        assert txn.read("Patient", "old")["id"] == "old"


# ----------------------------------------------------------------------------- schedule file
def test_the_default_schedule_written_as_toml_reads_back_the_same() -> None:
    rules = RetentionRules(resource_types={"ImagingStudy": RetentionPeriod(5, "record-date")},
                           document_types={"11526-1": RetentionPeriod(30)})
    assert parse_retention_rules(retention_rules_to_toml(rules)) == rules
    assert load_retention_rules(None) == RetentionRules() == load_retention_rules("")


def test_a_site_file_changes_only_what_it_names(tmp_path: Path) -> None:
    path = tmp_path / "retention.toml"
    path.write_text("[default]\nyears = 7\n[minors]\nage_of_majority = 19\n", encoding="utf-8")
    rules = load_retention_rules(path)
    assert rules.default == RetentionPeriod(7, "last-encounter")
    assert rules.minors == MinorsRule(True, 19, 10)


@pytest.mark.parametrize(("text", "setting", "words"), [
    ("[defaults]\nyears = 7\n", "defaults", "unknown table"),
    ("[default]\nyears = -1\n", "default.years", "must be at least 0, got -1"),
    ("[default]\nyears = \"10\"\n", "default.years", "must be an integer, got a string"),
    ("[default]\nyears = 1000\n", "default.years", "must be at most 200"),
    ("[default]\ncounted_from = \"discharge\"\n", "default.counted_from",
     "must be one of last-encounter, record-date"),
    ("[default]\nyear = 10\n", "default.year", "unknown setting"),
    ("[minors]\nenabled = 1\n", "minors.enabled", "must be true or false"),
    ("[minors]\nage_of_majority = 0\n", "minors.age_of_majority", "must be at least 1"),
    ("[resource-types]\nObservaton = 5\n", "resource-types.Observaton",
     "not a FHIR R4 resource type"),
    ("[resource-types]\nObservation = \"5\"\n", "resource-types.Observation",
     "must be a number of years or a table"),
    ("[document-types]\n\"discharge\" = 5\n", "document-types.discharge", "not a LOINC code"),
    ("[document-types]\n\"18842-5\" = { years = 5, from = \"x\" }\n",
     "document-types.18842-5.from", "unknown setting"),
    ("default = 5\n", "default", "must be a table"),
    ("[default\nyears = 5\n", "TOML", "is not valid TOML"),
])
def test_a_malformed_schedule_is_refused_naming_the_setting(text: str, setting: str,
                                                            words: str) -> None:
    with pytest.raises(RulesError, match="retention rules") as caught:
        parse_retention_rules(text)
    assert caught.value.setting == setting
    assert words in str(caught.value)


def test_an_unreadable_schedule_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="cannot be read") as caught:
        load_retention_rules(tmp_path / "missing.toml")
    assert caught.value.setting == "file"
