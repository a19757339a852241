"""Computer-assisted coding against the synthetic hospital's answer key (issue 8; goals:
recall@10 >= 0.90, precision of the proposed codes >= 0.80, principal diagnosis right for
>= 80% of inpatient stays, 100% of final codes valid and edit-clean; >= 20 notes/s for a
two-page note).

The hospital is generated here (``chartkeeper.synth``) with a seed the engine was never tuned
on (development used seed 11; the default here is 29). For each encounter with documents, its
documents' text, joined in order, goes to the product's own ``coding.service.suggest`` with
the encounter's setting (inpatient for class IMP). The answer key, read only by this script,
gives the encounter's principal and secondary ICD-10-CM codes.

* recall@10: the share of the key's codes among the first ten suggestions.
* precision: the share of proposed suggestions (confidence >= 0.5) that are in the key.
* principal: inpatient stays whose suggested principal is the key's principal.
* valid and edit-clean: the proposed codes, taken as the coder's final codes, are billable in
  the ICD-10-CM release and no two of them are an Excludes1 pair; for encounters of FY2026
  (the packaged release's year) the whole claim goes through ``coding.edits.check``
  (validity for the date, 7th characters, Excludes1, sequencing, the MCE for stays, with POA
  Y as the coder would set it) and any error counts.
* procedures: for inpatient stays, the key's ICD-10-PCS codes among the suggested
  procedures (the FY2025 PCS Tables and Index and the FY2026 Tables from ../shared/data,
  imported as a site would); for outpatient visits, the key's HCPCS drug (J) codes among the
  proposed ones (the 2020 HCPCS file, the newest here).
* speed: suggestions per second, one document at a time (the median document length is
  printed), and for "two-page" texts of at least 5,500 characters (an inpatient stay's
  documents joined), on one core.

    .venv/bin/python bench/cac_eval.py                      # 2,000 patients, seed 29
    .venv/bin/python bench/cac_eval.py --patients 500 --seed 11
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from chartkeeper.coding import codesets, edits, service  # noqa: E402
from chartkeeper.store.engine import make_engine  # noqa: E402
from chartkeeper.synth.generate import generate  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "codesets"
TWO_PAGES = 5_500  # characters: about two printed pages of a clinical note


def documents(folder: Path) -> dict[str, tuple[str, str]]:
    """Document id (the answer key's) -> (LOINC display of its type, text)."""
    found: dict[str, tuple[str, str]] = {}
    with (folder / "DocumentReference.ndjson").open(encoding="utf-8") as lines:
        for line in lines:
            document = json.loads(line)
            text = base64.b64decode(document["content"][0]["attachment"]["data"]).decode()
            found[document["masterIdentifier"]["value"]] = (document["type"]["text"], text)
    return found


def encounters(out: Path) -> list[dict[str, Any]]:
    with (out / "answer-key.ndjson").open(encoding="utf-8") as lines:
        return [encounter for line in lines for encounter in json.loads(line)["encounters"]
                if any("document" in d for d in encounter["documents"])]


def patients_of(folder: Path) -> dict[str, tuple[dt.date, str, str]]:
    """Encounter visit number -> (the patient's birth date, sex, the encounter's period end)."""
    born: dict[str, tuple[dt.date, str]] = {}
    with (folder / "Patient.ndjson").open(encoding="utf-8") as lines:
        for line in lines:
            patient = json.loads(line)
            born[patient["id"]] = (dt.date.fromisoformat(patient["birthDate"]),
                                   patient.get("gender", "unknown"))
    found: dict[str, tuple[dt.date, str, str]] = {}
    with (folder / "Encounter.ndjson").open(encoding="utf-8") as lines:
        for line in lines:
            encounter = json.loads(line)
            birth, sex = born[encounter["subject"]["reference"].split("/")[1]]
            for identifier in encounter.get("identifier", []):
                found[identifier["value"]] = (birth, sex, encounter["period"].get("end", ""))
    return found


def coded_claim(visit: dict[str, Any], found: Any,
                people: dict[str, tuple[dt.date, str, str]]) -> edits.CodedClaim | None:
    """The proposed codes as a coder's final codes, for encounters in FY2026."""
    start, end = dt.date.fromisoformat(visit["start"]), dt.date.fromisoformat(visit["end"])
    birth, sex, _ = people[visit["encounter"]]
    if not dt.date(2025, 10, 1) <= end <= dt.date(2026, 9, 30):
        return None
    codes = [s.code for s in found.diagnoses if s.proposed]
    if found.principal in codes:
        codes.remove(found.principal)
        codes.insert(0, found.principal)
    if not codes:
        return None
    age = start.year - birth.year - ((start.month, start.day) < (birth.month, birth.day))
    if not 0 <= age <= 124:
        return None  # a duplicate registration's mistyped birth date: no claim to edit
    sex = sex if sex in ("male", "female") else "unknown"
    if visit["class"] == "IMP":
        return edits.CodedClaim(
            "inpatient", age, sex, tuple(edits.ClaimDiagnosis(c, "Y") for c in codes),
            admitted=start, discharged=end, discharge_status="01",
            procedures=tuple(edits.ClaimProcedure(p.code, start) for p in found.procedures
                             if p.proposed))
    return edits.CodedClaim("outpatient", age, sex,
                            tuple(edits.ClaimDiagnosis(c) for c in codes), service_date=end)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=29)
    parser.add_argument("--limit", type=int, default=0, help="at most this many encounters")
    parser.add_argument("--as-of", default="2026-09-30",
                        help="the hospital's last day (its final year is FY2026, the year of "
                             "the packaged ICD-10-CM, so those claims can be edited)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cac-eval-"))
    started = time.perf_counter()
    generate(work / "hospital", args.patients, args.seed, output_format="ndjson",
             as_of=dt.date.fromisoformat(args.as_of))
    texts = documents(work / "hospital" / "ndjson")
    people = patients_of(work / "hospital" / "ndjson")
    visits = encounters(work / "hospital")
    if args.limit:
        visits = visits[:args.limit]
    print(f"generated {args.patients} patients (seed {args.seed}): {len(visits)} encounters "
          f"with documents, {len(texts)} documents, {time.perf_counter() - started:.0f} s")

    engine = make_engine(f"sqlite:///{work / 'store.sqlite'}")
    pcs = DATA / "icd10pcs-fy2025-tables-index-definitions"
    for system, name in (("icd10pcs", "icd10pcs_tables_2025.xml"),
                         ("icd10pcs-index", "icd10pcs_index_2025.xml")):
        codesets.import_release(engine, (pcs / name).read_bytes(), system=system, source=name,
                                effective_from=dt.date(2024, 10, 1),
                                effective_to=dt.date(2025, 9, 30))
    hcpcs = DATA / "hcpcs_2020_cms" / "2020-Alpha-Numeric-HCPCS-File.zip"
    codesets.import_release(engine, hcpcs.read_bytes(), system="hcpcs", source=hcpcs.name,
                            effective_from=dt.date(2020, 1, 1), effective_to=dt.date(2020, 12, 31))
    fy2026 = DATA / "icd10pcs-fy2026-tables" / "icd10pcs_tables_2026.xml"
    codesets.import_release(engine, fy2026.read_bytes(), system="icd10pcs", source=fy2026.name,
                            effective_from=dt.date(2025, 10, 1),
                            effective_to=dt.date(2026, 9, 30))
    started = time.perf_counter()
    table = service.tabular(engine)
    service.coder(engine)
    print(f"code set {table.version}; suggestion engine built in "
          f"{time.perf_counter() - started:.1f} s")

    stats: dict[str, Counter[str]] = defaultdict(Counter)
    misses: Counter[tuple[str, str]] = Counter()
    wrong: Counter[tuple[str, str]] = Counter()
    invalid: Counter[str] = Counter()
    conflicts: Counter[tuple[str, str]] = Counter()
    edit_errors: Counter[str] = Counter()
    started = time.perf_counter()
    for visit in visits:
        kinds = [texts[d["document"]] for d in visit["documents"] if "document" in d]
        note_type = kinds[-1][0] if visit["class"] == "IMP" else kinds[0][0]
        text = "\n\n".join(body for _, body in kinds)
        setting = "inpatient" if visit["class"] == "IMP" else "outpatient"
        found = service.suggest(engine, text, setting)
        key = {visit["principal"], *visit["secondary"]}
        top = [s.code for s in found.diagnoses[:10]]
        proposed = [s.code for s in found.diagnoses if s.proposed]
        for bucket in (note_type, "all"):
            counts = stats[bucket]
            counts["encounters"] += 1
            counts["key codes"] += len(key)
            counts["found@10"] += len(key & set(top))
            counts["proposed"] += len(proposed)
            counts["proposed right"] += len(key & set(proposed))
            if setting == "inpatient":
                counts["stays"] += 1
                counts["principal right"] += found.principal == visit["principal"]
                wanted = {p["icd10pcs"] for p in visit["procedures"] if p["icd10pcs"]}
                offered = [s.code for s in found.procedures]
                counts["pcs key"] += len(wanted)
                counts["pcs found"] += len(wanted & set(offered))
                counts["pcs proposed"] += sum(s.proposed for s in found.procedures)
                counts["pcs right"] += len(wanted & {s.code for s in found.procedures
                                                     if s.proposed})
            else:
                wanted = {p["hcpcs"] for p in visit["procedures"]
                          if p["hcpcs"] and p["hcpcs"].startswith("J")}
                offered = {s.code for s in found.procedures if s.proposed}
                counts["drug key"] += len(wanted)
                counts["drug found"] += len(wanted & offered)
                counts["drug proposed"] += len(offered)
        misses.update((code, note_type) for code in key - set(top))
        wrong.update((code, note_type) for code in set(proposed) - key)
        claim = coded_claim(visit, found, people)
        if claim is not None:
            stats["all"]["claims edited"] += 1
            failed = edits.errors(edits.check(engine, claim))
            if failed:
                stats["all"]["claims with errors"] += 1
                edit_errors.update(e.rule for e in failed)
        for code in proposed:
            stats["all"]["final codes"] += 1
            if not table.is_billable(code):
                invalid[code] += 1
        for index, first in enumerate(proposed):
            for second in proposed[index + 1:]:
                if table.excludes1_conflict(first, second):
                    conflicts[(first, second)] += 1
    elapsed = time.perf_counter() - started

    print("\n| note type | encounters | recall@10 | precision | principal (inpatient) |")
    print("|---|---|---|---|---|")
    for bucket in sorted(stats, key=lambda b: (b == "all", -stats[b]["encounters"])):
        counts = stats[bucket]
        principal = (f"{counts['principal right']}/{counts['stays']} = "
                     f"{counts['principal right'] / counts['stays']:.3f}"
                     if counts["stays"] else "-")
        print(f"| {bucket} | {counts['encounters']:,} | "
              f"{counts['found@10'] / counts['key codes']:.3f} | "
              f"{counts['proposed right'] / max(1, counts['proposed']):.3f} | {principal} |")
    everything = stats["all"]
    print(f"\nICD-10-PCS, inpatient stays: {everything['pcs found']}/{everything['pcs key']} of "
          f"the key's procedures suggested; proposed {everything['pcs proposed']}, of which "
          f"{everything['pcs right']} in the key")
    print(f"HCPCS drug codes, outpatient: {everything['drug found']}/{everything['drug key']} "
          f"of the key's J codes proposed; proposed {everything['drug proposed']}")
    finals = stats["all"]["final codes"]
    print(f"\nfinal codes: {finals:,}; not billable: {sum(invalid.values())} {dict(invalid)}; "
          f"Excludes1 pairs: {sum(conflicts.values())} {dict(conflicts)}")
    print(f"claims of FY2026 edited (the proposed codes as final, POA Y): "
          f"{stats['all']['claims edited']:,}; with an edit error: "
          f"{stats['all']['claims with errors']} {dict(edit_errors)}")
    print(f"missed most: {misses.most_common(8)}")
    print(f"wrongly proposed most: {wrong.most_common(8)}")
    print(f"encounters/s over the whole run: {len(visits) / elapsed:.1f}")
    speed(engine, texts)
    print(f"\n{dt.date.today()}  .venv/bin/python bench/cac_eval.py --patients {args.patients} "
          f"--seed {args.seed} --as-of {args.as_of}"
          + (f" --limit {args.limit}" if args.limit else ""))


def speed(engine: Any, texts: dict[str, tuple[str, str]]) -> None:
    """Notes per second, one document at a time and for two-page texts."""
    bodies = [body for _, body in texts.values()]
    sample = bodies[:: max(1, len(bodies) // 1000)][:1000]
    started = time.perf_counter()
    for body in sample:
        service.suggest(engine, body, "outpatient")
    rate = len(sample) / (time.perf_counter() - started)
    print(f"\nspeed, one document at a time: {rate:.1f} notes/s over {len(sample)} documents "
          f"(median {statistics.median(len(b) for b in sample):,.0f} characters)")
    long_notes: list[str] = []
    current = ""
    for kind, body in texts.values():
        if kind in ("History and physical note", "Discharge summary",
                    "Emergency department note", "Surgical operation note"):
            current += "\n\n" + body
            if len(current) >= TWO_PAGES:
                long_notes.append(current)
                current = ""
    long_notes = long_notes[:200]
    if long_notes:
        started = time.perf_counter()
        for body in long_notes:
            service.suggest(engine, body, "inpatient")
        rate = len(long_notes) / (time.perf_counter() - started)
        print(f"speed, two-page notes: {rate:.1f} notes/s over {len(long_notes)} notes "
              f"(median {statistics.median(len(b) for b in long_notes):,.0f} characters)")


if __name__ == "__main__":
    main()
