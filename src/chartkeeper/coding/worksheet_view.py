"""The worksheet the coder works from: an encounter's notes, the suggestions for them
(re-ranked by what coders decided before), the engine's own suggestions, and what was decided
on the encounter already."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from chartkeeper.coding import codesets, feedback, service
from chartkeeper.coding.cac import Suggestions
from chartkeeper.coding.icd10cm import Tabular
from chartkeeper.coding.worksheet import NoCodeSet, Resource, claim_id
from chartkeeper.coding.worksheet_text import EncounterDocuments, encounter_text
from chartkeeper.store.errors import Gone, NotFound
from chartkeeper.store.service import Store, Txn


@dataclass
class Worksheet:
    """What the coder works from: the notes, the suggestions (re-ranked by what coders decided
    before), the engine's own suggestions, and what was decided on this encounter already."""

    documents: EncounterDocuments
    release: str
    suggestions: Suggestions
    engine_suggestions: Suggestions
    recorded: list[feedback.FeedbackRow]
    claim: Resource | None
    explanations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        suggestions = self.suggestions.to_json()
        for item in [*suggestions["diagnoses"], *suggestions["procedures"]]:
            item["explanation"] = self.explanations.get(item["code"])
            for evidence in item["evidence"]:
                document, local = self.documents.locate(evidence["start"])
                evidence.update(document=f"DocumentReference/{document.id}",
                                documentStart=local,
                                documentEnd=local + evidence["end"] - evidence["start"])
        return {**self.documents.to_json(), "release": self.release,
                "suggestions": suggestions,
                "recorded": [row.to_json() for row in self.recorded],
                "claim": None if self.claim is None else {
                    "id": self.claim["id"], "version": self.claim["meta"]["versionId"],
                    "status": self.claim.get("status")}}


def worksheet(store: Store, encounter_id: str) -> Worksheet:
    """An encounter's worksheet: its text, the suggestions and the decisions recorded."""
    with store.read() as txn:
        documents = encounter_text(txn, encounter_id)
        claim = current_claim(txn, encounter_id)
    release, _ = icd10cm_release(store.engine, documents)
    raw, shown, model = suggestions_for(store.engine, documents)
    explanations = {}
    prior = {s.code: s.confidence for s in [*raw.diagnoses, *raw.procedures]}
    for suggestion in [*shown.diagnoses, *shown.procedures]:
        if suggestion.code in prior:
            section = suggestion.evidence[0].section if suggestion.evidence else None
            explanations[suggestion.code] = model.explain(suggestion.code, section,
                                                          prior[suggestion.code])
    with store.engine.connect() as conn:
        recorded = feedback.decisions_for(conn, encounter_id)
    return Worksheet(documents, release.version, shown, raw, recorded, claim, explanations)


def suggestions_for(engine: Engine, documents: EncounterDocuments
                    ) -> tuple[Suggestions, Suggestions, feedback.RankingModel]:
    """The engine's suggestions for the encounter's text, the same re-ranked by what coders
    decided before, and the ranking model that re-ranked them."""
    if documents.text.strip():
        raw = service.suggest(engine, documents.text, documents.setting, age=documents.age,
                              on=documents.date_of_service)
    else:
        raw = Suggestions([], None, [])  # nothing to read: the coder adds codes by hand
    model = feedback.load_model(engine)
    return raw, feedback.rerank(engine, raw, model=model), model


def icd10cm_release(engine: Engine, documents: EncounterDocuments
                    ) -> tuple[codesets.Release, Tabular]:
    """The ICD-10-CM release in force on the encounter's date of service, and its tabular."""
    codesets.ensure_packaged(engine)
    on = documents.date_of_service
    try:
        release = codesets.release_for(engine, "icd10cm", on)
    except codesets.NoRelease as exc:
        fiscal_year = on.year + 1 if on.month >= 10 else on.year
        raise NoCodeSet(
            f"Encounter/{documents.encounter_id}: no ICD-10-CM release is in force on its date "
            f"of service {on.isoformat()} ({exc}); import the CMS ICD-10-CM tabular of fiscal "
            f"year {fiscal_year} with `chartkeeper codes import --system icd10cm "
            f"--fiscal-year {fiscal_year} FILE`") from None
    table: Tabular = codesets.model(engine, release)
    return release, table


def current_claim(txn: Txn, encounter_id: str) -> Resource | None:
    """The Claim that bills the encounter, None before its first coding (or once deleted)."""
    try:
        return txn.read("Claim", claim_id(encounter_id))
    except (NotFound, Gone):
        return None
