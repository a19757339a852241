"""The master patient index in the workbench, over HTTP and in chromium: the review queue
oldest first with the data-quality summary, a pair side by side with the model's evidence,
decisions (merge with a survivor, link, not a duplicate) that need a reason and are audited,
the history with its undo, and the overlay check. Other roles, forged posts and restricted
records are refused.

The review Tasks are real: made-up people registered twice are added to the workbench's
hospital and scored by a model trained (EM) on a larger synthetic population; the 40-patient
hospital is too small to train one."""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from chartkeeper.mpi.dedupe import DedupeResult, Thresholds, dedupe_rows, patient_row, patient_rows
from chartkeeper.mpi.merge import Decider, link
from chartkeeper.mpi.service import apply, get_review, review_task_id
from chartkeeper.synth.generate import generate
from tests.web.conftest import Workbench, screenshot
from tests.web.support import csrf_of, sign_in_http
from tests.web.test_browser_flow import sign_in

TRAINING_PATIENTS = 1000
SSN = "http://hl7.org/fhir/sid/us-ssn"
VIP_LABEL = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "CEL"}
BATCH = Decider("batch", "him-technician", "duplicate scoring for the workbench tests")
# Made-up people registered twice (nobody in the synthetic hospital): the key, given and family
# name, birth date, sex, each registration's (street, postal code, phone, SSN), and how many
# days ago the pair was queued.
PEOPLE: list[tuple[str, str, str, str, str, list[tuple[str, str, str, str | None]], int]] = [
    ("merge", "Quentin", "Marsh", "1961-03-14", "male",
     [("12 Birch Ln", "44101", "216-555-0101", "123-45-6789"),
      ("88 Cedar Ave", "44120", "216-555-0199", None)], 100),
    ("apart", "Imogen", "Faraday", "1992-05-21", "female",
     [("5 Pine Rd", "44102", "216-555-0404", None),
      ("19 Lake Blvd", "44140", "216-555-0505", None)], 40),
    ("link", "Wilhelmina", "Ostrova", "1950-01-09", "female",
     [("3 Harbor Way", "44107", "216-555-0601", None),
      ("77 Ridge Rd", "44135", "440-555-0777", None)], 10),
    ("open", "Barnaby", "Quillfeather", "1977-09-30", "male",
     [("41 Orchard St", "44103", "216-555-0711", None),
      ("2 Canal Pl", "44113", "216-555-0822", None)], 3),
    ("vip", "Octavia", "Blackwood", "1983-02-17", "female",
     [("9 Summit Dr", "44104", "216-555-0933", None),
      ("60 Meadow Ln", "44118", "216-555-0944", None)], 1),
]


@dataclass(frozen=True)
class Queued:
    task: str
    left: str  # Patient ids as the Task names them
    right: str
    probability: float
    evidence: list[tuple[str, str, float]]


_queued: dict[str, dict[str, Queued]] = {}


def registration(key: str, n: int, given: str, family: str, born: str, sex: str,
                 place: tuple[str, str, str, str | None]) -> dict[str, Any]:
    street, postcode, phone, ssn = place
    patient: dict[str, Any] = {
        "resourceType": "Patient", "id": f"mpi-{key}-{n}", "active": True, "gender": sex,
        "birthDate": born, "name": [{"use": "official", "family": family, "given": [given]}],
        "telecom": [{"system": "phone", "value": phone}],
        "address": [{"line": [street], "city": "Cleveland", "state": "OH",
                     "postalCode": postcode}],
        "identifier": [{"type": {"coding": [{"system":
                                             "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR"}]},
                        "system": "urn:oid:2.16.840.1.113883.3.9999.1",
                        "value": f"MRN-{key}-{n}"}]}
    if ssn:
        patient["identifier"].append({"system": SSN, "value": ssn})
    if key == "vip" and n == 2:
        patient["meta"] = {"security": [VIP_LABEL]}
    return patient


def trained_model() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        generate(Path(folder), TRAINING_PATIENTS, 21, output_format="ndjson")
        lines = (Path(folder) / "ndjson" / "Patient.ndjson").read_text().splitlines()
    trained = dedupe_rows([patient_row(json.loads(line)) for line in lines])
    assert trained.model and not trained.note, trained.note
    return trained.model


def review_tasks(workbench: Workbench) -> dict[str, Queued]:
    """The made-up people's review Tasks in the workbench's store (made once per workbench)."""
    if workbench.url in _queued:
        return _queued[workbench.url]
    with workbench.store.write() as txn:
        for key, given, family, born, sex, places, _days in PEOPLE:
            for n, place in enumerate(places, 1):
                txn.create(registration(key, n, given, family, born, sex, place),
                           resource_id=f"mpi-{key}-{n}")
    workbench.security.forget_restricted_patients()
    scored = dedupe_rows(list(patient_rows(workbench.store)),
                         Thresholds(auto_link=0.999, review=0.05), model=trained_model())
    pairs = {frozenset((p.left, p.right)): p for p in scored.links + scored.review}
    ours = [pairs[frozenset((f"mpi-{key}-1", f"mpi-{key}-2"))] for key, *_ in PEOPLE]
    written = apply(workbench.store, DedupeResult(len(ours), review=ours), BATCH)
    assert written.queued == len(PEOPLE)
    now = datetime.now(UTC)
    queued = {}
    with workbench.store.write() as txn:
        for (key, *_rest, days), pair in zip(PEOPLE, ours, strict=True):
            task_id = review_task_id(pair.left, pair.right)
            task = txn.read("Task", task_id)
            task["authoredOn"] = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")
            txn.update("Task", task_id, task)
            review = get_review(txn, task_id)
            queued[key] = Queued(task_id, review.left, review.right, review.probability,
                                 review.evidence)
    _queued[workbench.url] = queued
    return queued


@pytest.fixture
def queued(workbench: Workbench) -> dict[str, Queued]:
    return review_tasks(workbench)


@pytest.fixture
def tech(workbench: Workbench) -> Any:
    client = sign_in_http(workbench.url, workbench.accounts["tech"])
    yield client
    client.close()


def run_overlay_check(client: httpx.Client, token: str) -> str:
    """Start the overlay check, wait for its job, and return where its findings are."""
    started = client.post("/mpi/overlays", data={"csrf_token": token})
    assert started.status_code == 303 and started.headers["location"].startswith("/jobs/")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = client.get(started.headers["location"], headers={"HX-Request": "1"}).text
        if 'data-status="done"' in job:
            found = re.search(r'id="job-result" href="([^"]+)"', job)
            assert found is not None
            return found.group(1)
        assert 'data-status="failed"' not in job, job
        time.sleep(0.2)
    raise AssertionError("the overlay check did not finish in a minute")


def audit(workbench: Workbench, **filters: Any) -> list[Any]:
    return workbench.security.trail.entries(limit=10_000, **filters)


def task_status(workbench: Workbench, task_id: str) -> str:
    with workbench.store.read() as txn:
        return str(txn.read("Task", task_id)["status"])


# ------------------------------------------------------------------------------ the queue
def test_the_queue_lists_the_reviews_oldest_first_with_the_data_quality_summary(
        workbench: Workbench, queued: dict[str, Queued], tech: httpx.Client) -> None:
    page = tech.get("/mpi")
    assert page.status_code == 200
    listed = re.findall(r'<tr data-task="([^"]+)"', page.text)
    assert listed == [queued[k].task for k in ("merge", "apart", "link", "open")]
    assert queued["vip"].task not in page.text  # a VIP's pair needs break-the-glass
    assert "1 reviews of restricted records are not shown" in page.text
    assert "Quentin Marsh" in page.text and "born 1961-03-14" in page.text
    ages = re.search(r'id="queue-age".*?<tbody><tr>(.*?)</tr>', page.text, re.S)
    assert ages is not None
    assert re.findall(r"<td>(\d+)</td>", ages.group(1)) == ["2", "1", "1", "1"]
    assert f'href="/mpi/reviews/{queued["merge"].task}">100 days' in page.text
    assert re.search(r'id="pending-pairs">5<', page.text)
    searched = [e for e in audit(workbench, user_id="tech", action="search")
                if e.details.get("page") == "duplicate review queue"]
    assert searched and "mpi-merge-1" in searched[-1].details["patients"]
    home = tech.get("/home").text
    assert re.search(r'MPI review</span>\s*<span class="count" aria-label="5 items">5<', home)


def test_the_review_page_shows_both_registrations_side_by_side_with_the_evidence(
        workbench: Workbench, queued: dict[str, Queued], tech: httpx.Client) -> None:
    pair = queued["merge"]
    page = tech.get(f"/mpi/reviews/{pair.task}")
    assert page.status_code == 200
    text = page.text
    for value in ("Quentin Marsh", "1961-03-14", "male", "12 Birch Ln Cleveland, OH",
                  "88 Cedar Ave Cleveland, OH", "216-555-0101", "216-555-0199", "***-**-6789",
                  "MRN-merge-1", f"{pair.probability:.4f}"):
        assert value in text, value
    assert "123-45-6789" not in text  # the SSN is masked as on the chart
    rows = dict(re.findall(r'<tr data-field="([^"]+)">(.*?)</tr>', text, re.S))
    assert set(rows) >= {"First name", "Last name", "Birth date", "Sex", "Street address",
                         "Postal code", "Phone", "Social Security number"}
    labels = {"first_name": "First name", "dob": "Birth date", "phone": "Phone"}
    for field, level, weight in pair.evidence:
        if field in labels:
            assert level in rows[labels[field]] and f"{weight:+.2f}" in rows[labels[field]]
    reads = [e for e in audit(workbench, patient_id=pair.left, user_id="tech", action="read")
             if e.details.get("page") == "duplicate review"]
    assert reads and set(reads[-1].details["patients"]) == {pair.left, pair.right}


# -------------------------------------------------------------------------- refusals
def test_a_decision_without_a_reason_or_a_choice_is_refused_and_changes_nothing(
        workbench: Workbench, queued: dict[str, Queued], tech: httpx.Client) -> None:
    pair = queued["open"]
    page = tech.get(f"/mpi/reviews/{pair.task}")
    token = csrf_of(page.text)
    before = workbench.store.row_counts()
    for fields, status, message in [
        ({"decision": "not-duplicate", "reason": "  "}, 400, "give the reason"),
        ({"reason": "looked at both"}, 400, "choose a decision"),
        ({"decision": "merge:somebody-else", "reason": "same person"}, 400,
         "needs the surviving patient"),
    ]:
        answer = tech.post(f"/mpi/reviews/{pair.task}/decision",
                           data={"csrf_token": token, **fields})
        assert answer.status_code == status, answer.text[:300]
        assert message in answer.text and 'id="decision-error"' in answer.text
        assert 'id="decide"' in answer.text  # the form again, to correct
    assert workbench.store.row_counts() == before
    assert task_status(workbench, pair.task) == "ready"
    failed = [e for e in audit(workbench, user_id="tech", action="update")
              if e.details.get("change") == "duplicate review decided"]
    assert failed and failed[-1].outcome != "success"


def test_other_roles_forged_posts_and_restricted_records_are_refused(
        workbench: Workbench, queued: dict[str, Queued], tech: httpx.Client) -> None:
    pair = queued["open"]
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    try:
        for path in ("/mpi", f"/mpi/reviews/{pair.task}", "/mpi/history", "/mpi/overlays"):
            refused = coder.get(path)
            assert refused.status_code == 403 and "Not permitted" in refused.text, path
            assert "Barnaby" not in refused.text
        token = csrf_of(coder.get("/home").text)
        before = workbench.store.row_counts()
        forged = coder.post(f"/mpi/reviews/{pair.task}/decision", data={
            "csrf_token": token, "decision": "link", "reason": "a coder may not"})
        assert forged.status_code == 403
        no_token = tech.post(f"/mpi/reviews/{pair.task}/decision", data={
            "decision": "link", "reason": "no token"})
        assert no_token.status_code == 403 and "CSRF" in no_token.text
        assert workbench.store.row_counts() == before
        assert task_status(workbench, pair.task) == "ready"
        denied = [e for e in audit(workbench, user_id="coder") if e.outcome != "success"]
        assert len(denied) >= 5
    finally:
        coder.close()
    vip = tech.get(f"/mpi/reviews/{queued['vip'].task}")
    assert vip.status_code == 403 and "break-the-glass" in vip.text
    assert "Octavia" not in vip.text


# ------------------------------------------------------------------------- decisions
def test_merge_in_the_browser_then_undo_it_from_the_history(
        page: Any, workbench: Workbench, queued: dict[str, Queued]) -> None:
    pair = queued["merge"]
    survivor, prior = pair.left, pair.right
    sign_in(page, workbench, "tech", "/mpi")
    page.click(f'tr[data-task="{pair.task}"] a')
    page.wait_for_url(f"**/mpi/reviews/{pair.task}")
    assert page.locator("#evidence").is_visible()
    screenshot(page, "mpi-01-review")

    page.check('input[value="not-duplicate"]')
    page.fill("#reason", "   ")  # passes the browser's check; the server wants words
    page.click("#decide button[type=submit]")
    assert "give the reason" in page.locator("#decision-error").inner_text()
    assert page.locator("#review-status").inner_text() == "awaiting review"
    assert task_status(workbench, pair.task) == "ready"

    page.check(f'input[value="merge:{survivor}"]')
    page.fill("#reason", "Same SSN last four and birth date; moved house")
    page.click("#decide button[type=submit]")
    page.wait_for_selector("#decided")
    assert page.locator("#review-status").inner_text() == "merged"
    screenshot(page, "mpi-02-merged")
    with workbench.store.read() as txn:
        old = txn.read("Patient", prior)
        provenance_id = txn.read("Task", pair.task)["output"][1]["valueReference"][
            "reference"].split("/")[1]
    assert old["active"] is False
    assert {"other": {"reference": f"Patient/{survivor}"}, "type": "replaced-by"} in old["link"]
    page.goto(f"{workbench.url}/patients/{prior}")
    assert f"This record was merged into Patient/{survivor}" in page.locator("main").inner_text()
    page.goto(f"{workbench.url}/mpi/reviews/{pair.task}")

    page.click("text=merge and link history")
    page.wait_for_url("**/mpi/history")
    row = page.locator(f"#decision-{provenance_id}")
    assert "merged" in row.inner_text() and "Same SSN last four" in row.inner_text()
    assert "tech" in row.inner_text()
    row.locator("input[name=reason]").fill("Twins: different people after all")
    row.locator("button[type=submit]").click()
    page.wait_for_selector("#undone")
    assert "merge undone" in page.locator("#undone").inner_text()
    assert "(undone)" in page.locator(f"#decision-{provenance_id}").inner_text()
    assert page.locator(f"#decision-{provenance_id} form").count() == 0  # undone once only
    screenshot(page, "mpi-03-undone")
    with workbench.store.read() as txn:
        restored = txn.read("Patient", prior)
    assert restored["active"] is True and "link" not in restored

    decided = [e for e in audit(workbench, patient_id=prior, user_id="tech",
                                action="update") if e.outcome == "success"]
    assert [e.details.get("decision") for e in decided][-2:] == ["merge", "unmerge"]
    assert decided[-2].details["provenance"] == provenance_id
    assert decided[-1].details["undone"] == provenance_id


def test_not_a_duplicate_and_link_are_recorded_with_who_and_why(
        workbench: Workbench, queued: dict[str, Queued], tech: httpx.Client) -> None:
    apart, linked = queued["apart"], queued["link"]
    token = csrf_of(tech.get(f"/mpi/reviews/{apart.task}").text)
    kept = tech.post(f"/mpi/reviews/{apart.task}/decision", data={
        "csrf_token": token, "decision": "not-duplicate",
        "reason": "Different mothers' maiden names on the registration forms"})
    assert kept.status_code == 303
    page = tech.get(f"/mpi/reviews/{apart.task}").text
    assert 'id="decide"' not in page and "Not a duplicate by tech" in page
    assert "Different mothers" in page
    with workbench.store.read() as txn:
        review = get_review(txn, apart.task)
        assert review.verdict == "not-duplicate" and not review.open
        assert "link" not in txn.read("Patient", apart.left)

    done = tech.post(f"/mpi/reviews/{linked.task}/decision", data={
        "csrf_token": token, "decision": "link", "reason": "Two facilities' registrations"})
    assert done.status_code == 303
    again = tech.post(f"/mpi/reviews/{linked.task}/decision", data={
        "csrf_token": token, "decision": "merge:" + linked.left, "reason": "changed my mind"})
    assert again.status_code == 409 and "decided already" in again.text
    with workbench.store.read() as txn:
        left = txn.read("Patient", linked.left)
    assert {"other": {"reference": f"Patient/{linked.right}"}, "type": "seealso"} in left["link"]
    history = tech.get("/mpi/history").text
    row = re.search(r'<tr id="decision-([^"]+)" data-activity="link">(.*?)</tr>', history, re.S)
    assert row is not None and "Two facilities" in row.group(2)
    assert "Wilhelmina Ostrova" in row.group(2)
    no_reason = tech.post(f"/mpi/history/{row.group(1)}/undo",
                          data={"csrf_token": token, "reason": ""})
    assert no_reason.status_code == 400 and "give the reason" in no_reason.text
    undone = tech.post(f"/mpi/history/{row.group(1)}/undo",
                       data={"csrf_token": token, "reason": "Linked the wrong pair"})
    assert undone.status_code == 303 and undone.headers["location"].endswith("unlink")
    with workbench.store.read() as txn:
        assert "link" not in txn.read("Patient", linked.left)
    entries = [e.details for e in audit(workbench, user_id="tech", action="update")
               if e.outcome == "success" and e.details.get("decision")]
    assert [d["decision"] for d in entries][-3:] == ["not-duplicate", "link", "unlink"]


def test_the_overlay_check_lists_linked_records_that_disagree(
        workbench: Workbench, tech: httpx.Client) -> None:
    with workbench.store.write() as txn:
        for pid, born in (("mpi-overlay-1", "1944-04-04"), ("mpi-overlay-2", "1971-07-07")):
            txn.create({"resourceType": "Patient", "id": pid, "gender": "male",
                        "birthDate": born, "name": [{"family": "Overlaid", "given": [pid]}]},
                       resource_id=pid)
        link(txn, "mpi-overlay-1", "mpi-overlay-2",
             Decider("tech", "him-technician", "same MRN at two facilities"))
    form = tech.get("/mpi/overlays")
    assert form.status_code == 200 and 'id="overlays"' not in form.text
    page = tech.get(run_overlay_check(tech, csrf_of(form.text)))
    assert page.status_code == 200
    rows = re.findall(r'<tr data-kind="linked-conflict">(.*?)</tr>', page.text, re.S)
    row = next(r for r in rows if "/patients/mpi-overlay-1" in r)
    assert "birth date 1944-04-04 / 1971-07-07" in row and "/patients/mpi-overlay-2" in row
    shown = [e for e in audit(workbench, patient_id="mpi-overlay-1", user_id="tech",
                              action="search") if e.details.get("page") == "overlay check"]
    assert shown
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    try:  # another user cannot read the findings, nor start a check
        assert "mpi-overlay-1" not in coder.get(page.url.raw_path.decode()).text
        refused = coder.post("/mpi/overlays", data={"csrf_token": csrf_of(
            coder.get("/home").text)})
        assert refused.status_code == 403
    finally:
        coder.close()
    summary = tech.get("/mpi").text
    assert re.search(r'id="linked-pairs">[1-9]', summary)


def test_a_federated_merge_shows_the_prior_records_in_the_survivors_chart(
        workbench: Workbench, tech: httpx.Client) -> None:
    from chartkeeper.mpi.merge import merge

    with workbench.store.write() as txn:
        for n in (1, 2):
            txn.update("Patient", f"fed-{n}", registration(
                "fed", n, "Rosalind", "Thistlewood", "1958-08-08", "female",
                ("4 Elm Ct", "44105", "216-555-0321", None)) | {"id": f"fed-{n}"})
        txn.create({"resourceType": "Encounter", "status": "finished",
                    "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                              "code": "AMB"},
                    "type": [{"text": "Federated follow-up visit"}],
                    "subject": {"reference": "Patient/fed-2"},
                    "period": {"start": "2025-02-03T09:00:00Z", "end": "2025-02-03T09:30:00Z"}})
        outcome = merge(txn, "fed-1", "fed-2", Decider("tech", "him-technician",
                                                       "same person, two registrations"),
                        mode="federate")
    assert outcome.repointed == 0  # the records stay on the prior registration
    page = tech.get("/patients/fed-1")
    assert page.status_code == 200
    assert "Federated follow-up visit" in page.text
    assert "Federated follow-up visit" in tech.get("/patients/fed-2").text
