"""What computer-assisted coding answers: suggested codes with their evidence, and the error
for a request that cannot be answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class SuggestError(ValueError):
    """A request for suggestions that cannot be answered (empty text, unknown setting)."""


@dataclass(frozen=True)
class Evidence:
    start: int
    end: int
    text: str
    section: str

    def to_json(self) -> dict[str, Any]:
        return {"start": self.start, "end": self.end, "text": self.text, "section": self.section}


@dataclass
class Suggestion:
    code: str
    display: str
    confidence: float
    evidence: list[Evidence] = field(default_factory=list)
    proposed: bool = False
    words: frozenset[str] = field(default=frozenset(), repr=False)  # what the text said

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "display": self.display,
                "confidence": round(self.confidence, 3), "proposed": self.proposed,
                "evidence": [item.to_json() for item in self.evidence]}


@dataclass
class Suggestions:
    diagnoses: list[Suggestion]
    principal: str | None
    procedures: list[Suggestion]

    def to_json(self) -> dict[str, Any]:
        return {"diagnoses": [s.to_json() for s in self.diagnoses], "principal": self.principal,
                "procedures": [s.to_json() for s in self.procedures]}


def with_evidence_text(suggestions: Suggestions, text: str) -> Suggestions:
    """Fill each evidence span's text from the document it points into."""
    for suggestion in [*suggestions.diagnoses, *suggestions.procedures]:
        suggestion.evidence = [Evidence(e.start, e.end, text[e.start:e.end], e.section)
                               for e in suggestion.evidence]
    return suggestions
