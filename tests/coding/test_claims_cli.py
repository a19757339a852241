"""``chartkeeper claims`` (drg, release, write-batch, post) as an operator runs them, on a copy of
the billed synthetic hospital of test_claims."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from chartkeeper import x12
from chartkeeper.coding.claims import patient_control_number
from chartkeeper.coding.claims_cli import claims_app
from chartkeeper.store import Store

from .conftest import Hospital, store_copy
from .test_claims import Billed, ack_999, build_billed, coverage_of, edit, read, remittance_835

PARTIES_ENV = {
    "CHARTKEEPER_X12_SUBMITTER_ID": "CKSUBMIT01",
    "CHARTKEEPER_X12_SUBMITTER_NAME": "Chartkeeper General Billing",
    "CHARTKEEPER_X12_CONTACT_NAME": "Jane Clerk",
    "CHARTKEEPER_X12_CONTACT_PHONE": "5555551234",
    "CHARTKEEPER_X12_RECEIVER_ID": "SYNCLEAR01",
    "CHARTKEEPER_X12_RECEIVER_NAME": "Synthetic Clearinghouse",
    "CHARTKEEPER_X12_USAGE": "T",
}


@pytest.fixture(scope="module")
def billed(hospital: Hospital, tmp_path_factory: pytest.TempPathFactory) -> Billed:
    return build_billed(hospital, tmp_path_factory.mktemp("billed-cli") / "billed.sqlite")


@pytest.fixture
def home(billed: Billed, tmp_path: Path) -> Path:
    """CHARTKEEPER_HOME with a copy of the billed hospital as its store."""
    store_copy(billed.path, tmp_path / "chartkeeper.sqlite").dispose()
    (tmp_path / "outbox").mkdir()
    return tmp_path


def run(home: Path, *args: str, **env: str) -> Result:
    variables = {"CHARTKEEPER_HOME": str(home),
                 "CHARTKEEPER_DATABASE_URL": f"sqlite:///{home / 'chartkeeper.sqlite'}", **env}
    return CliRunner().invoke(claims_app, list(args), env=variables)


def test_drg_groups_the_stay_and_shows_cc_mcc_and_poa(home: Path, billed: Billed) -> None:
    done = run(home, "drg", billed.inpatient, "--json")
    assert done.exit_code == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["claim"], found["version"], found["drg"]) == (billed.stay_claim, "43.0", "194")
    assert found["title"] == "Simple Pneumonia and Pleurisy with CC"
    assert found["severity"] == "CC" and found["relativeWeight"] is None
    principal, *secondary = found["diagnoses"]
    assert (principal["code"], principal["poa"], principal["principal"]) == ("J189", "Y", True)
    assert [(dx["code"], dx["poa"]) for dx in secondary][:2] == [("I129", "Y"), ("E119", "Y")]
    assert {dx["countedAs"] for dx in secondary} == {"CC", "none"}
    shown = run(home, "drg", billed.inpatient, "--version", "43.1")
    assert shown.exit_code == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "MS-DRG 194 (v43.1): Simple Pneumonia and Pleurisy with CC"
    assert lines[2] == "relative weight: not known (give --weights with the year's Table 5)"
    assert "  principal  J189     POA Y" in lines
    assert any(line.startswith("  secondary  ") and line.endswith("CC") for line in lines)
    assert lines[-1] == f"recorded on Claim/{billed.stay_claim}"
    assert read_claim_drg(home, billed) == ("43.1", "194")


def read_claim_drg(home: Path, billed: Billed) -> tuple[str, str]:
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    try:
        coding = read(store, "Claim", billed.stay_claim)["diagnosis"][0]["packageCode"][
            "coding"][0]
    finally:
        store.dispose()
    return coding["version"], coding["code"]


def test_drg_refuses_a_bad_version_or_an_outpatient_visit(home: Path, billed: Billed) -> None:
    bad = run(home, "drg", billed.inpatient, "--version", "39.0")
    assert bad.exit_code == 2 and "--version must be one of 40.0, 40.1" in bad.stderr
    visit = run(home, "drg", billed.outpatient)
    assert visit.exit_code == 1 and "is not institutional" in visit.stderr


def test_release_takes_the_parties_from_the_environment(home: Path, billed: Billed) -> None:
    outbox = home / "outbox"
    done = run(home, "release", billed.stay_claim, "--outbox", str(outbox), **PARTIES_ENV)
    assert done.exit_code == 0, done.stderr
    [written] = outbox.iterdir()
    assert written.name == "837I-000000001.x12"
    assert done.stdout.startswith(f"released Claim/{billed.stay_claim} (version ")
    assert patient_control_number(billed.stay_claim) in done.stdout
    text = written.read_text(encoding="ascii")
    assert x12.validate(text) == []
    assert text.startswith("ISA*00*          *00*          *ZZ*CKSUBMIT01     *ZZ*SYNCLEAR01")
    assert "NM1*41*2*Chartkeeper General Billing*****46*CKSUBMIT01~" in text
    assert "*T*:~" in text[:106]  # a test interchange (ISA15)


def test_release_of_several_claims_writes_one_batch_per_kind(home: Path,
                                                             billed: Billed) -> None:
    outbox = home / "outbox"
    done = run(home, "release", billed.stay_claim, billed.visit_claim, "--outbox", str(outbox),
               **PARTIES_ENV)
    assert done.exit_code == 0, done.stderr
    assert sorted(p.name for p in outbox.iterdir()) == ["837I-000000001.x12",
                                                        "837P-000000002.x12"]
    lines = done.stdout.strip().splitlines()
    assert [line.split(" (version")[0] for line in lines] == [
        f"released Claim/{billed.stay_claim}", f"released Claim/{billed.visit_claim}"]
    again = run(home, "release", billed.stay_claim, "--outbox", str(outbox), **PARTIES_ENV)
    assert again.exit_code == 1 and "is active, not a draft" in again.stderr


def test_release_says_which_party_is_missing_and_what_is_wrong(home: Path,
                                                               billed: Billed) -> None:
    outbox = home / "outbox"
    partial = {k: v for k, v in PARTIES_ENV.items() if k != "CHARTKEEPER_X12_SUBMITTER_ID"}
    missing = run(home, "release", billed.stay_claim, "--outbox", str(outbox), **partial)
    assert missing.exit_code == 2
    assert "give --submitter-id or set CHARTKEEPER_X12_SUBMITTER_ID" in missing.stderr
    store = Store(f"sqlite:///{home / 'chartkeeper.sqlite'}")
    try:
        edit(store, "Coverage", coverage_of(store, billed.stay_claim),
             lambda c: c.pop("subscriberId"))
    finally:
        store.dispose()
    refused = run(home, "release", billed.stay_claim, "--outbox", str(outbox), **PARTIES_ENV)
    assert refused.exit_code == 1
    assert "was not released; nothing was stored or sent" in refused.stderr
    assert "has no subscriberId" in refused.stderr
    assert list(outbox.iterdir()) == []


def test_post_detects_the_answer_and_refuses_a_malformed_one(home: Path,
                                                             billed: Billed) -> None:
    outbox = home / "outbox"
    for claim in (billed.stay_claim, billed.visit_claim):
        done = run(home, "release", claim, "--outbox", str(outbox), **PARTIES_ENV)
        assert done.exit_code == 0, done.stderr
    ack = home / "ack.999"
    ack.write_text(ack_999(1, "005010X223A2", True), encoding="ascii")
    posted = run(home, "post", str(ack))
    assert posted.exit_code == 0, posted.stderr
    assert posted.stdout.strip() == (f"posted 999 ack.999: 1 ClaimResponse(s) for Claim "
                                     f"{billed.stay_claim}")
    remittance = home / "era.835"
    pcns = (patient_control_number(billed.stay_claim), patient_control_number(billed.visit_claim))
    remittance.write_text(remittance_835(*pcns)[:-30], encoding="ascii")  # cut short
    bad = run(home, "post", str(remittance))
    assert bad.exit_code == 1 and "was not posted; nothing was stored" in bad.stderr
    assert "truncated interchange" in bad.stderr
    remittance.write_text(remittance_835(*pcns), encoding="ascii")
    paid = run(home, "post", str(remittance))
    assert paid.exit_code == 0 and paid.stdout.startswith("posted 835 era.835: 2 ClaimResponse")
    absent = run(home, "post", str(home / "none.835"))
    assert absent.exit_code == 2 and "cannot read" in absent.stderr
