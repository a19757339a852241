"""Release of information end to end: request, authorization check, minimum necessary,
the packet PDF, the completed Task and the accounting of disclosures; refusals store nothing."""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import pypdf
import pytest

from chartkeeper.chart import roi
from chartkeeper.chart.authorization import (
    DateRange,
    Party,
    authorization_consent,
    authorizations_for,
    check_authorization,
    record_authorization,
)
from chartkeeper.chart.packet import PART2_NOTICE, REDISCLOSURE_NOTICE
from chartkeeper.store import InvalidRequest, NotFound
from tests.chart.roi_chart import (
    ATTORNEY,
    DISCHARGE_TEXT,
    IN_SCOPE,
    MRN,
    OTHER_PATIENT_TEXT,
    PROGRESS_TEXT,
    PSY_TEXT,
    RADIOLOGY_TEXT,
    REQUESTED_TYPES,
    SUD_TEXT,
    TODAY,
    Site,
    days,
    open_site,
)

YEAR_2023 = DateRange(date(2023, 1, 1), date(2023, 12, 31))
Resource = dict[str, Any]


@pytest.fixture
def site(database_url: str) -> Iterator[Site]:
    opened = open_site(database_url)
    yield opened
    opened.store.dispose()


def attorney_request(site: Site, **changes: Any) -> str:
    arguments: dict[str, Any] = {"requester": ATTORNEY, "record_types": REQUESTED_TYPES,
                                 "dates": YEAR_2023}
    arguments.update(changes)
    return roi.create_request(site.store, "p1", arguments.pop("purpose", "LEGAL"), **arguments)


def attorney_consent(**changes: Any) -> Resource:
    arguments: dict[str, Any] = {
        "signed": days(-10), "expires": days(180), "record_types": REQUESTED_TYPES,
        "dates": DateRange(date(2022, 1, 1), date(2023, 12, 31)),
        "form": b"%PDF-1.4 scanned signed authorization"}
    arguments.update(changes)
    return authorization_consent(arguments.pop("patient", "p1"),
                                 arguments.pop("recipient", ATTORNEY),
                                 arguments.pop("purposes", ["LEGAL"]), **arguments)


def pdf_pages(pdf: bytes) -> list[str]:
    return [page.extract_text() for page in pypdf.PdfReader(io.BytesIO(pdf)).pages]


def flat(text: str) -> str:
    return " ".join(text.split())


# ------------------------------------------------------------------------------ valid releases
def test_valid_authorization_releases_exactly_the_in_scope_records(site: Site) -> None:
    request_id = attorney_request(site)
    consent_id = record_authorization(site.store, attorney_consent())

    released = roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    assert set(released.selection.references) == IN_SCOPE
    reasons = {item.reference: item.reason for item in released.selection.left_out}
    assert "not requested" in reasons["DocumentReference/d4"]  # SUD note, in type and dates
    assert "substance use" in reasons["Condition/c3"]
    assert "behavioural health" in reasons["DocumentReference/d5"]
    assert "outside the requested dates" in reasons["Condition/c1"]
    assert reasons["DocumentReference/d3"] == "not a requested record type"
    assert "DocumentReference/x1" not in reasons  # another patient's note is not in p1's chart


def test_release_completes_the_task_and_stores_the_packet_with_its_hash(site: Site) -> None:
    request_id = attorney_request(site)
    consent_id = record_authorization(site.store, attorney_consent())

    released = roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    request = roi.get_request(site.store, request_id)
    assert request.status == "completed"
    assert request.task["output"][0]["valueReference"] == {
        "reference": f"DocumentReference/{released.packet_id}"}
    assert {"reference": f"Consent/{consent_id}"} in [
        i.get("valueReference") for i in request.task["input"]]
    with site.store.read() as txn:
        packet = txn.read("DocumentReference", released.packet_id)
        binary = txn.read("Binary", released.binary_id)
    attachment = packet["content"][0]["attachment"]
    assert attachment["url"] == f"Binary/{released.binary_id}"
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(released.pdf).digest()).decode()
    assert attachment["size"] == len(released.pdf)
    assert base64.b64decode(binary["data"]) == released.pdf
    assert binary["contentType"] == "application/pdf"
    assert {"reference": f"Task/{request_id}"} in packet["context"]["related"]
    assert "security" not in packet["meta"]  # nothing sensitive inside
    # A packet is HIM work about the chart, not a record of it: it is never released again.
    later = roi.select_records(site.store, request, None)
    assert f"DocumentReference/{released.packet_id}" not in [
        *later.references, *(item.reference for item in later.left_out)]


def test_packet_pdf_holds_the_cover_letter_the_documents_and_the_patient_on_every_page(
        site: Site) -> None:
    request_id = attorney_request(site)
    consent_id = record_authorization(site.store, attorney_consent())

    released = roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    pages = pdf_pages(released.pdf)
    text = flat("\n".join(pages))
    for fact in ("Springfield General Hospital", "Jane Smith", "Smith & Law LLP",
                 "12 Court Street", "Maria Lopez", "Date of birth: 1970-05-04", MRN,
                 "Purpose of the disclosure: LEGAL", f"Consent/{consent_id}",
                 f"valid until {days(180).isoformat()}", "Released by: rosa.roi",
                 "2023-02-03 Discharge summary", "2023-08-15 Progress note",
                 flat(REDISCLOSURE_NOTICE), DISCHARGE_TEXT, PROGRESS_TEXT, "Pneumonia",
                 "128 mm[Hg]", "90 mm[Hg] - 130 mm[Hg]"):
        assert fact in text, fact
    for withheld in (SUD_TEXT, PSY_TEXT, RADIOLOGY_TEXT, OTHER_PATIENT_TEXT,
                     "Alcohol use disorder", "Essential hypertension", PART2_NOTICE):
        assert withheld not in text, withheld
    assert len(pages) >= 3
    for number, page in enumerate(pages, start=1):
        assert "Maria Lopez" in page and MRN in page
        assert f"Page {number} of {len(pages)}" in page


def test_part_2_records_go_only_when_requested_and_authorized_with_the_42_cfr_2_notice(
        site: Site) -> None:
    request_id = attorney_request(site, sensitive=["substance-use"])
    consent_id = record_authorization(site.store,
                                          attorney_consent(sensitive=["substance-use"]))

    released = roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    assert set(released.selection.references) == IN_SCOPE | {"DocumentReference/d4",
                                                              "Condition/c3"}
    text = flat("\n".join(pdf_pages(released.pdf)))
    assert SUD_TEXT in text and PART2_NOTICE in text
    assert PSY_TEXT not in text  # behavioural health was neither requested nor authorized
    with site.store.read() as txn:
        packet = txn.read("DocumentReference", released.packet_id)
        binary = txn.read("Binary", released.binary_id)
    for resource in (packet, binary):
        assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                "code": "ETH"} in resource["meta"]["security"]


def test_disclosure_under_authorization_is_in_the_accounting(site: Site) -> None:
    request_id = attorney_request(site)
    consent_id = record_authorization(site.store, attorney_consent())

    released = roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    [entry] = site.log.accounting("p1")
    assert entry == released.disclosure
    assert entry.recipient.startswith("Jane Smith, Smith & Law LLP")
    assert entry.purpose.startswith("LEGAL")
    assert set(entry.resources) == IN_SCOPE
    assert released.packet_id in entry.description and entry.released_by == "rosa.roi"


@pytest.mark.parametrize("purpose", ["PATRQT", "TREAT"])
def test_disclosures_to_the_patient_or_for_treatment_are_not_in_the_accounting(
        site: Site, purpose: str) -> None:
    provider = Party("Dr. Lee", "Riverside Cardiology", "3 River Road")
    request_id = roi.create_request(
        site.store, "p1", purpose, requester=None if purpose == "PATRQT" else provider,
        record_types=REQUESTED_TYPES, dates=YEAR_2023,
        identity_verification="Driver's licence checked at the HIM window by rosa.roi")

    released = roi.release(site.store, site.log, request_id, None, "rosa.roi", TODAY)

    assert released.disclosure is None
    assert site.log.accounting("p1") == []
    assert set(released.selection.references) == IN_SCOPE
    assert roi.get_request(site.store, request_id).status == "completed"
    text = flat("\n".join(pdf_pages(released.pdf)))
    assert ("right of access" if purpose == "PATRQT" else "164.506(c)") in text


def test_patient_request_needs_identity_verification_then_releases(site: Site) -> None:
    request_id = roi.create_request(site.store, "p1", "PATRQT", record_types=["Condition"],
                                    sensitive=["substance-use"])

    with pytest.raises(roi.ReleaseRefused) as refused:
        roi.release(site.store, site.log, request_id, None, "rosa.roi", TODAY)
    assert [p.code for p in refused.value.problems] == ["identity-not-verified"]

    roi.record_identity_verification(site.store, request_id, "Passport seen by rosa.roi")
    released = roi.release(site.store, site.log, request_id, None, "rosa.roi", TODAY)
    # The right of access (164.524) covers the patient's own sensitive records, asked for.
    assert set(released.selection.references) == {"Condition/c1", "Condition/c2",
                                                   "Condition/c3"}


# ------------------------------------------------------------------------------ refusals
def _edit(path: list[str | int], value: Any) -> Callable[[Resource], None]:
    def apply(consent: Resource) -> None:
        node: Any = consent
        for key in path[:-1]:
            node = node[key]
        if value is None:
            node.pop(path[-1])
        else:
            node[path[-1]] = value
    return apply


INVALID: dict[str, tuple[Callable[[Resource], None] | None, dict[str, Any], str, str]] = {
    # name: (change to the authorization, change to the request, problem code, words)
    "expired": (_edit(["provision", "period", "end"], days(-1).isoformat()), {}, "expired",
                f"expired on {days(-1).isoformat()}"),
    "not yet valid": (_edit(["provision", "period", "start"], days(5).isoformat()), {},
                      "not-yet-valid", "not valid before"),
    "unsigned": (_edit(["sourceAttachment"], None), {}, "unsigned", "is not signed"),
    "revoked": (_edit(["status"], "inactive"), {}, "not-active", "is inactive, not active"),
    "wrong patient": (_edit(["patient"], {"reference": "Patient/p2"}), {}, "wrong-patient",
                      "is for Patient/p2"),
    "purpose not covered": (_edit(["provision", "purpose"], [{
        "system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HPAYMT"}]), {},
        "purpose-not-covered", "purpose LEGAL (legal proceedings) is not covered"),
    "recipient not covered": (_edit(["provision", "actor", 0, "reference"],
                                    {"display": "Acme Insurance"}), {},
                              "recipient-not-covered", "Jane Smith, Smith & Law LLP is not named"),
    "dates outside": (None, {"dates": DateRange(date(2021, 1, 1), date(2023, 12, 31))},
                      "dates-outside-scope", "requested dates 2021-01-01 to 2023-12-31"),
    "type outside": (None, {"record_types": [*REQUESTED_TYPES, "MedicationRequest"]},
                     "type-outside-scope", "record types MedicationRequest are outside"),
    "sensitive not authorized": (None, {"sensitive": ["substance-use"]},
                                 "sensitive-not-authorized",
                                 "not explicitly authorized: substance use disorder"),
    "no authorization": (None, {}, "no-authorization", "needs a signed HIPAA authorization"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_authorization_is_refused_naming_the_problem_and_nothing_is_stored(
        site: Site, case: str) -> None:
    change_consent, change_request, code, words = INVALID[case]
    request_id = attorney_request(site, **change_request)
    consent = attorney_consent()
    if change_consent is not None:
        change_consent(consent)
    consent_id = None if case == "no authorization" else \
        record_authorization(site.store, consent)
    before = site.counts()

    with pytest.raises(roi.ReleaseRefused) as refused:
        roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)

    assert [p.code for p in refused.value.problems] == [code]
    assert words in str(refused.value)
    assert site.counts() == before
    assert site.log.accounting("p1") == []
    assert roi.get_request(site.store, request_id).status == "requested"


def test_a_released_request_cannot_be_released_again(site: Site) -> None:
    request_id = attorney_request(site)
    consent_id = record_authorization(site.store, attorney_consent())
    roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)
    before = site.counts()

    with pytest.raises(roi.ReleaseRefused, match="is completed, not open"):
        roi.release(site.store, site.log, request_id, consent_id, "rosa.roi", TODAY)
    assert site.counts() == before and len(site.log.accounting("p1")) == 1


def test_treatment_needs_no_authorization_but_sensitive_records_still_do(site: Site) -> None:
    request = roi.get_request(site.store, roi.create_request(
        site.store, "p1", "TREAT", requester=Party("Dr. Lee"), sensitive=["behavioral-health"]))
    problems = check_authorization(None, request, TODAY)
    assert [p.code for p in problems] == ["sensitive-not-authorized"]
    assert "behavioural health" in problems[0].message


# ------------------------------------------------------------------------------ malformed input
@pytest.mark.parametrize(("arguments", "message"), [
    ({"purpose": "GOSSIP"}, "unknown purpose of use 'GOSSIP'"),
    ({"due": days(-1)}, "is in the past"),
    ({"patient_id": "nobody"}, "Patient/nobody is not in the record store"),
    ({"record_types": ["Spreadsheet"]}, "record type 'Spreadsheet'"),
    ({"dates": DateRange(date(2024, 1, 1), date(2023, 1, 1))}, "starts 2024-01-01 after"),
    ({"sensitive": ["gossip"]}, "unknown sensitive categories ['gossip']"),
    ({"requester": Party("  ")}, "needs a name"),
])
def test_malformed_requests_are_refused_clearly_and_store_nothing(
        site: Site, arguments: dict[str, Any], message: str) -> None:
    call: dict[str, Any] = {"patient_id": "p1", "purpose": "LEGAL", "requester": ATTORNEY}
    call.update(arguments)
    before = site.counts()
    with pytest.raises(InvalidRequest, match=message.replace("(", r"\(").replace("[", r"\[")):
        roi.create_request(site.store, call.pop("patient_id"), call.pop("purpose"), **call)
    assert site.counts() == before


def test_unknown_consent_and_non_roi_task_are_clear_errors(site: Site) -> None:
    request_id = attorney_request(site)
    with pytest.raises(InvalidRequest, match="no authorization Consent/missing"):
        roi.release(site.store, site.log, request_id, "missing", "rosa.roi", TODAY)
    with site.store.write() as txn:
        other = txn.create({"resourceType": "Task", "status": "requested", "intent": "order",
                            "code": {"text": "code the chart"}}).resource_id
    with pytest.raises(NotFound, match="not a release-of-information request"):
        roi.get_request(site.store, other)


# ------------------------------------------------------------------------------ the queue
def test_queue_lists_open_requests_oldest_due_first(site: Site) -> None:
    later = attorney_request(site, due=days(20))
    sooner = attorney_request(site, due=days(3))
    default = attorney_request(site)  # due 30 days after receipt (164.524(b)(2))
    rejected = attorney_request(site, due=days(1))
    roi.reject_request(site.store, rejected, "Authorization form incomplete")
    roi.start_request(site.store, later, "rosa.roi")

    queue = roi.list_requests(site.store)
    assert [r.id for r in queue] == [rejected, sooner, later, default]
    assert queue[-1].due == days(30) and queue[2].status == "in-progress"
    assert [r.id for r in roi.list_requests(site.store, "requested")] == [sooner, default]
    with pytest.raises(InvalidRequest, match="unknown Task status"):
        roi.list_requests(site.store, "pending")


def test_authorizations_are_listed_for_their_patient(site: Site) -> None:
    first = record_authorization(site.store, attorney_consent(signed=days(-30)))
    second = record_authorization(site.store, attorney_consent(signed=days(-2)))
    assert [c["id"] for c in authorizations_for(site.store, "p1")] == [second, first]
    assert authorizations_for(site.store, "p2") == []
