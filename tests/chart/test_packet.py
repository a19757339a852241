"""The release packet over real-shaped records: a synthetic patient's whole chart, and speed."""

from __future__ import annotations

import base64
import io
import time
from collections import Counter
from datetime import date
from pathlib import Path

import pypdf
import pytest

from chartkeeper.chart import roi
from chartkeeper.chart.packet import Facility, PacketContent, build_packet, printable
from chartkeeper.security.privacy import DisclosureLog, create_privacy_schema
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.generate import generate


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "hospital"
    generate(out, 6, 2027)
    return out


def test_patient_gets_their_whole_synthetic_chart_with_every_note(
        hospital: Path, sqlite_url: str) -> None:
    store = Store(sqlite_url)
    store.create_schema()
    create_privacy_schema(store.engine)
    Importer(store, workers=0).import_files(find_files([hospital / "bundles"]))
    with store.read() as txn:
        documents = txn.search_params("DocumentReference", [("_count", "1000")]).matches
    patient_id = Counter(d["subject"]["reference"] for d in documents).most_common(1)[0][0]
    patient_id = patient_id.removeprefix("Patient/")
    request_id = roi.create_request(store, patient_id, "PATRQT",
                                    identity_verification="Photo ID checked in person")
    progress: list[tuple[int, int]] = []

    started = time.perf_counter()
    released = roi.release(store, DisclosureLog(store.engine), request_id, None, "rosa.roi",
                           date.today(), on_progress=lambda done, total: progress.append(
                               (done, total)))
    elapsed = time.perf_counter() - started

    mine = [d for d in documents if d["subject"]["reference"] == f"Patient/{patient_id}"]
    assert {f"DocumentReference/{d['id']}" for d in mine} <= set(released.selection.references)
    text = " ".join(" ".join(p.extract_text().split())
                    for p in pypdf.PdfReader(io.BytesIO(released.pdf)).pages)
    for document in mine:  # each note's text is in the packet (its first line, say)
        first_line = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
        first_line = printable(first_line).strip().splitlines()[0]
        assert " ".join(first_line.split()) in text
    assert progress[-1][0] == progress[-1][1] and len(progress) >= len(mine) + 1
    assert released.disclosure is None  # the patient's own request is not accounted
    assert elapsed < 5, elapsed
    store.dispose()


def test_a_packet_of_fifty_documents_builds_in_well_under_two_seconds() -> None:
    note = "\n".join(f"Line {i}: patient reports improvement; BP 128/82 mmHg, T 37.1 °C, "
                     "glucose 5.4 mmol/L, µg dosing reviewed — “stable”." for i in range(60))
    documents = [{"resourceType": "DocumentReference", "id": f"d{i}",
                  "type": {"text": f"Progress note {i}"}, "date": f"2024-02-{i % 28 + 1:02d}",
                  "content": [{"attachment": {"contentType": "text/plain",
                                              "data": base64.b64encode(note.encode()).decode()}}]}
                 for i in range(50)]
    results = [{"resourceType": "Observation", "id": f"o{i}", "code": {"text": "Glucose"},
                "effectiveDateTime": "2024-02-01", "valueQuantity": {"value": i, "unit": "mg/dL"}}
               for i in range(200)]
    content = PacketContent(Facility("Springfield General Hospital"), date(2026, 1, 5),
                            ["Jane Smith"], "Zoë Ångström", "1970-01-01", "MRN-1", "LEGAL",
                            ["Authorization: Consent/1"], [], "rosa.roi", "task-1",
                            documents + results, part2=False)

    started = time.perf_counter()
    pdf = build_packet(content)
    elapsed = time.perf_counter() - started

    pages = pypdf.PdfReader(io.BytesIO(pdf)).pages
    assert len(pages) > 50
    assert all("Zoë Ångström" in page.extract_text() for page in pages)
    text = "".join(page.extract_text() for page in pages)
    assert "T 37.1 °C" in text and "µg dosing" in text and "“stable”" in text
    assert elapsed < 1.5, elapsed  # about 0.6 s on one core here
