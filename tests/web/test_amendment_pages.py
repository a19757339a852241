"""Amendments in the workbench (45 CFR 164.526): HIM records a patient's request against a
signed document; the physician accepts it (signed amendment linked, original kept) or it is
denied on a lawful ground and the patient's disagreement is linked. Wrong roles and forged
posts are refused."""

from __future__ import annotations

import re

from chartkeeper.chart.signing import is_locked
from tests.web.conftest import Workbench
from tests.web.support import csrf_of, sign_in_http


def a_document(workbench: Workbench, signed: bool) -> tuple[str, str]:
    with workbench.store.read() as txn:
        found = txn.search_params("DocumentReference", [
            ("authenticator:missing", "false" if signed else "true"), ("_count", "50"),
            ("_sort", "-date")]).matches
    document = next(d for d in found if "relatesTo" not in d)
    return document["subject"]["reference"].split("/")[1], document["id"]


def test_request_then_accept_keeps_the_original(workbench: Workbench) -> None:
    patient, document = a_document(workbench, signed=True)
    with workbench.store.read() as txn:
        original = txn.read("DocumentReference", document)
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    doctor = sign_in_http(workbench.url, workbench.accounts["drsmith"])
    try:
        page = tech.get(f"/patients/{patient}/documents/{document}")
        assert 'id="amendment-request"' in page.text
        made = tech.post(f"/patients/{patient}/documents/{document}/amendment-requests", data={
            "csrf_token": csrf_of(page.text), "requested_by": "the patient",
            "change": "My father had diabetes, not my mother.", "reason": "Family history "
            "is wrong."})
        assert made.status_code == 303
        task_path = made.headers["location"]
        assert "My father had diabetes" in tech.get(task_path).text
        assert "Amendment requests" in tech.get("/home").text

        detail = doctor.get(task_path)
        assert 'id="accept"' in detail.text
        accepted = doctor.post(f"{task_path}/accept", data={
            "csrf_token": csrf_of(detail.text),
            "text": "Family history corrected: father with type 2 diabetes."})
        assert accepted.status_code == 303
        after = doctor.get(task_path).text
        assert "accepted" in after
        amendment = re.search(r"Linked: <a href=\"[^\"]+/documents/([^\"]+)\"", after)
        assert amendment is not None
        with workbench.store.read() as txn:
            assert txn.read("DocumentReference", document) == original
            linked = txn.read("DocumentReference", amendment.group(1))
        assert is_locked(linked)
        assert linked["relatesTo"][0]["target"]["reference"] == f"DocumentReference/{document}"
        audit = workbench.security.trail.entries(user_id="drsmith", action="update", limit=50)
        assert any(e.details.get("change") == "amendment accepted" for e in audit)
    finally:
        tech.close()
        doctor.close()


def test_deny_on_a_lawful_ground_then_the_disagreement(workbench: Workbench) -> None:
    patient, document = a_document(workbench, signed=True)
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    try:
        page = tech.get(f"/patients/{patient}/documents/{document}")
        task_path = tech.post(f"/patients/{patient}/documents/{document}/amendment-requests",
                              data={"csrf_token": csrf_of(page.text), "requested_by": "patient",
                                    "change": "Remove the diagnosis.", "reason": "I disagree."}
                              ).headers["location"]
        detail = tech.get(task_path)
        assert 'id="accept"' not in detail.text  # only a physician signs an amendment
        token = csrf_of(detail.text)
        unlawful = tech.post(f"{task_path}/deny", data={"csrf_token": token,
                                                        "basis": "too much work"})
        assert unlawful.status_code == 400 and "not a ground for denial" in unlawful.text
        denied = tech.post(f"{task_path}/deny", data={
            "csrf_token": token, "basis": "accurate-and-complete",
            "explanation": "Reviewed with the attending."})
        assert denied.status_code == 303
        after = tech.get(task_path)
        assert "accurate and complete" in after.text and 'id="disagreement"' in after.text
        filed = tech.post(f"{task_path}/disagreement", data={
            "csrf_token": csrf_of(after.text), "statement": "I maintain the diagnosis is wrong.",
            "filed_by": "the patient"})
        assert filed.status_code == 303
        assert "Linked:" in tech.get(task_path).text
    finally:
        tech.close()


def test_wrong_roles_and_forged_posts_are_refused(workbench: Workbench) -> None:
    patient, document = a_document(workbench, signed=True)
    coder = sign_in_http(workbench.url, workbench.accounts["coder"])
    tech = sign_in_http(workbench.url, workbench.accounts["tech"])
    try:
        token = csrf_of(coder.get("/home").text)
        path = f"/patients/{patient}/documents/{document}/amendment-requests"
        fields = {"requested_by": "x", "change": "y", "reason": "z"}
        assert coder.post(path, data={**fields, "csrf_token": token}).status_code == 403
        assert coder.get("/amendments").status_code == 403
        assert tech.post(path, data=fields).status_code == 403  # no CSRF token
        empty = tech.post(path, data={"csrf_token": csrf_of(tech.get("/home").text),
                                      "requested_by": "x", "change": " ", "reason": "z"})
        assert empty.status_code == 400 and "requested change is required" in empty.text
    finally:
        coder.close()
        tech.close()
