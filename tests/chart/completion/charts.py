"""Hand-made charts for record-completion tests, and scoring against the synthetic answer key."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from chartkeeper.chart.completion.analysis import Deficiency
from chartkeeper.chart.completion.rules import RULE_NAMES, CompletionRules, pcs_matches
from chartkeeper.store import Store

LOINC = "http://loinc.org"
PCS = "http://www.cms.gov/Medicare/Coding/ICD10"
H_AND_P, OPERATIVE, DISCHARGE, PATHOLOGY, PROGRESS = (
    "34117-2", "11504-8", "18842-5", "11526-1", "11506-3")


def at(text: str) -> datetime:
    """A UTC moment written as ``YYYY-MM-DD HH:MM``."""
    return datetime.fromisoformat(text + "+00:00")


def instant(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class Chart:
    """Writes small records straight into a store and returns their references."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.patient = self._create({"resourceType": "Patient",
                                     "name": [{"family": "Testpatient", "given": ["Ann"]}]})

    def _create(self, resource: dict[str, Any]) -> str:
        with self.store.write() as txn:
            result = txn.create(resource)
        return f"{result.resource_type}/{result.resource_id}"

    def practitioner(self, family: str) -> str:
        return self._create({"resourceType": "Practitioner",
                             "name": [{"family": family, "given": ["Pat"], "prefix": ["Dr."]}]})

    def stay(self, admitted: datetime, discharged: datetime | None, physician: str, *,
             klass: str = "IMP", status: str = "finished",
             consultant: str | None = None) -> str:
        participants = []
        if consultant is not None:  # listed first, but not the attending
            participants.append({"individual": {"reference": consultant}})
        participants.append({"type": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
            "code": "ATND"}]}], "individual": {"reference": physician}})
        period = {"start": instant(admitted)}
        if discharged is not None:
            period["end"] = instant(discharged)
        return self._create({
            "resourceType": "Encounter", "status": status,
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                      "code": klass},
            "subject": {"reference": self.patient}, "participant": participants,
            "period": period})

    def document(self, encounter: str, loinc: str, written: datetime, author: str, *,
                 signed: bool = True, status: str = "current",
                 doc_status: str | None = None) -> str:
        document: dict[str, Any] = {
            "resourceType": "DocumentReference", "status": status,
            "docStatus": doc_status or ("final" if signed else "preliminary"),
            "type": {"coding": [{"system": LOINC, "code": loinc}]},
            "subject": {"reference": self.patient}, "date": instant(written),
            "author": [{"reference": author}],
            "content": [{"attachment": {"contentType": "text/plain",
                                        "creation": instant(written)}}],
            "context": {"encounter": [{"reference": encounter}]}}
        if signed:
            document["authenticator"] = {"reference": author}
        return self._create(document)

    def procedure(self, encounter: str, pcs: str, performed: datetime, surgeon: str) -> str:
        return self._create({
            "resourceType": "Procedure", "status": "completed",
            "code": {"coding": [{"system": PCS, "code": pcs}]},
            "subject": {"reference": self.patient}, "encounter": {"reference": encounter},
            "performedDateTime": instant(performed),
            "performer": [{"actor": {"reference": surgeon}}]})

    def complete_stay(self, admitted: datetime, discharged: datetime, physician: str) -> str:
        """A stay with a timely, signed H&P and discharge summary."""
        stay = self.stay(admitted, discharged, physician)
        self.document(stay, H_AND_P, admitted + timedelta(hours=2), physician)
        self.document(stay, DISCHARGE, discharged, physician)
        return stay

    def sign(self, document: str, physician: str) -> None:
        sign(self.store, document, physician)


def sign(store: Store, document: str, physician: str) -> None:
    """What signing does to a document: final status and an authenticator."""
    _, _, ident = document.partition("/")
    with store.write() as txn:
        current = txn.read("DocumentReference", ident)
        current.update(docStatus="final", authenticator={"reference": physician})
        txn.update("DocumentReference", ident, current)


# ---------------------------------------------------------------------- the answer key
@dataclass
class Score:
    found: int
    expected: int
    matched: int

    @property
    def precision(self) -> float:
        return self.matched / self.found if self.found else 1.0

    @property
    def recall(self) -> float:
        return self.matched / self.expected if self.expected else 1.0


def _identifiers(store: Store, references: Iterable[str]) -> dict[str, str]:
    """Store reference -> the hospital's visit or document number."""
    numbers: dict[str, str] = {}
    with store.read() as txn:
        for reference in sorted(set(references)):
            kind, _, ident = reference.partition("/")
            resource = txn.read(kind, ident)
            identifier = (resource["masterIdentifier"] if kind == "DocumentReference"
                          else resource["identifier"][0])
            numbers[reference] = identifier["value"]
    return numbers


def expected_deficiencies(answer_key: Path, rules: CompletionRules, as_of: date
                          ) -> set[tuple[str, str]]:
    """(rule, visit or document number) the answer key says the analysis should find, for
    the encounters discharged by ``as_of`` of the classes each rule looks at."""
    expected: set[tuple[str, str]] = set()
    for line in answer_key.read_text(encoding="utf-8").splitlines():
        for encounter in json.loads(line)["encounters"]:
            if encounter["end"] > as_of.isoformat():
                continue
            for document in encounter["documents"]:
                if document["deficiency"] == "unsigned":
                    rule, target = "authentication", document["document"]
                elif document["deficiency"] == "missing":
                    rule, target = document["kind"], encounter["encounter"]
                else:
                    continue
                if encounter["class"] in rules.rule(rule).encounter_classes:
                    expected.add((rule, target))
    return expected


def coded_procedures(answer_key: Path, patterns: tuple[str, ...], classes: tuple[str, ...],
                     as_of: date) -> int:
    """How many procedures of the discharged encounters in ``classes`` have an ICD-10-PCS
    code matching ``patterns`` (so a rule that finds nothing had something to check)."""
    count = 0
    for line in answer_key.read_text(encoding="utf-8").splitlines():
        for encounter in json.loads(line)["encounters"]:
            if encounter["end"] <= as_of.isoformat() and encounter["class"] in classes:
                count += sum(bool(p["icd10pcs"]) and pcs_matches(p["icd10pcs"], patterns)
                             for p in encounter["procedures"])
    return count


def score(store: Store, deficiencies: list[Deficiency], answer_key: Path,
          rules: CompletionRules, as_of: date) -> dict[str, Score]:
    """Precision and recall per rule of ``deficiencies`` against the answer key."""
    numbers = _identifiers(store, [d.document if d.rule == "authentication" and d.document
                                   else d.encounter for d in deficiencies])
    found = {(d.rule, numbers[d.document if d.rule == "authentication" and d.document
                              else d.encounter]) for d in deficiencies}
    expected = expected_deficiencies(answer_key, rules, as_of)
    scores = {}
    for rule in RULE_NAMES:
        mine = {f for f in found if f[0] == rule}
        truth = {e for e in expected if e[0] == rule}
        scores[rule] = Score(len(mine), len(truth), len(mine & truth))
    return scores


def score_table(scores: dict[str, Score]) -> str:
    lines = [f"{'rule':<22}{'found':>6}{'expected':>9}{'matched':>8}{'precision':>10}"
             f"{'recall':>8}"]
    for rule, s in scores.items():
        lines.append(f"{rule:<22}{s.found:>6}{s.expected:>9}{s.matched:>8}"
                     f"{s.precision:>10.3f}{s.recall:>8.3f}")
    return "\n".join(lines)
