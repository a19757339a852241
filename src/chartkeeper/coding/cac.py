"""Computer-assisted coding: ICD-10-CM suggestions for a clinical text, each with its evidence.

The text is cut into sections (medspaCy's sectionizer) and clauses; each clause is matched
against the code titles and inclusion terms (``terms.TermIndex``); each mention then goes
through medspaCy's ConText, so that negated, family, hypothetical and historical mentions are
not coded as current conditions, and uncertain ones only where the inpatient guideline
(Section II.H / III.C) allows: in the final diagnoses of a stay.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from spacy.language import Language
from spacy.tokens import Doc, Span

from chartkeeper.coding.cac_pipeline import build_pipeline as build_pipeline
from chartkeeper.coding.cac_procedures import (
    OBSTETRIC_WORDS,
    REGIMEN_CYCLE,
    DrugCoder,
    ProcedureCoder,
    context_words,
)
from chartkeeper.coding.cac_results import Evidence as Evidence
from chartkeeper.coding.cac_results import SuggestError as SuggestError
from chartkeeper.coding.cac_results import Suggestion as Suggestion
from chartkeeper.coding.cac_results import Suggestions as Suggestions
from chartkeeper.coding.cac_results import with_evidence_text as with_evidence_text
from chartkeeper.coding.cac_rules import (
    _UNSPECIFIED,
    _clauses,
    _distinct,
    _document_facts,
    _end_char,
    _facts_for,
    _site_documented,
    _site_named_beside,
    _span_of,
)
from chartkeeper.coding.cac_rules import _may_be_principal as _may_be_principal
from chartkeeper.coding.cac_titles import body_sites as body_sites
from chartkeeper.coding.cac_titles import coder_from_titles as coder_from_titles
from chartkeeper.coding.terms import Match, TermIndex, words

Setting = Literal["inpatient", "outpatient"]
SETTINGS: tuple[Setting, ...] = ("inpatient", "outpatient")

# How much a mention in each section says that the condition was addressed at this visit.
# Sections not named here (medications, allergies, exam, labs, family and social history,
# the header) are not coded from.
SECTION_WEIGHT: dict[str, float] = {
    "diagnoses": 1.0,
    "observation_and_plan": 0.95,
    "problem_list": 0.8,
    "impression": 0.45,
    "imaging": 0.35,
    "chief_complaint": 0.45,
    "history_of_present_illness": 0.55,
    "hospital_course": 0.7,
    "reason_for_examination": 0.45,
    "past_medical_history": 0.35,
    "procedures": 0.3,
    "plan": 0.3,
}
SYMPTOM_WEIGHT = 0.4  # a symptom mentioned in passing, not listed as a diagnosis
_LISTED = frozenset({"diagnoses", "observation_and_plan", "impression"})
BULLET_WEIGHT = 0.4  # a "- ..." line in an assessment and plan is an action, not a diagnosis
PROCEDURE_NAME_WORDS = 8  # a procedure as listed is a name, not a sentence
_NARRATIVE = re.compile(r"\b(?:was|were|is|are|has|had|been|then)\b", re.I)
PROPOSE_AT = 0.5  # suggestions at or above this confidence are proposed; the rest are offered

_GIVEN_IN = frozenset({"observation_and_plan", "plan", "procedures", "hospital_course"})
# The visit gave a cycle of chemotherapy or immunotherapy ("Chemotherapy today").
_INFUSED_TODAY = re.compile(r"\b(?:chemotherapy|immunotherapy|infusion)\s+(?:today|given|"
                            r"administered)\b", re.I)
_THIS_STAY = frozenset({"procedures", "hospital_course", "observation_and_plan", "diagnoses",
                        "plan"})
_DELIVERED = re.compile(r"\b(?:delivered|cesarean section|c-section|vaginal delivery|"
                        r"normal delivery|NSVD|SVD)\b", re.I)
_SIGNATURE = re.compile(r"\b(?:MD|DO|signed|dictated|electronically|attending|author)\b")
_PRINCIPAL_LABEL = re.compile(r"\bprincipal\b", re.I)


@dataclass(frozen=True)
class _Mention:
    match: Match
    start: int
    end: int
    section: str
    clause_start: int
    coverage: float
    principal_label: bool
    bullet: bool


class Coder:
    """Suggests ICD-10-CM codes for clinical text from the titles of one code-set release."""

    def __init__(self, diagnoses: TermIndex, displays: dict[str, str],
                 nlp: Language | None = None,
                 excludes1: Callable[[str, str], str | None] | None = None,
                 procedures: ProcedureCoder | None = None,
                 drugs: DrugCoder | None = None) -> None:
        self.diagnoses = diagnoses
        self.procedures = procedures
        self.drugs = drugs
        self.displays = displays
        self.nlp = nlp or build_pipeline()
        self.excludes1 = excludes1

    def suggest(self, text: str, setting: str, *, age: int | None = None,
                limit: int = 25) -> Suggestions:
        if setting not in SETTINGS:
            raise SuggestError(f"setting must be one of {', '.join(SETTINGS)}, got {setting!r}")
        if not text or not text.strip():
            raise SuggestError("text is empty: nothing to code")
        doc = self._sections_doc(text)
        facts = _document_facts(text, age)
        mentions = list(self._mentions(doc, text, facts))
        kept = self._in_context(doc, mentions, setting)
        diagnoses = self._obstetric_outcome(doc, text, self._rank(kept, limit))
        self._resolve(diagnoses, kept)
        principal = self._principal(diagnoses, kept, setting)
        # The principal (first-listed) diagnosis leads the list; the rest stay by confidence.
        diagnoses.sort(key=lambda s: s.code != principal)
        procedures = (self._procedures(doc, text, facts)
                      if self.procedures is not None and setting == "inpatient" else [])
        if self.drugs is not None and setting == "outpatient":
            procedures.extend(self._drugs(doc, text))
        return Suggestions(diagnoses, principal, procedures)

    def _drugs(self, doc: Doc, text: str) -> list[Suggestion]:
        """HCPCS drug codes for drugs the visit's plan or course says were given."""
        assert self.drugs is not None
        found: dict[str, Suggestion] = {}
        infused = _INFUSED_TODAY.search(text) is not None
        for section in doc._.sections:
            regimen_only = section.category not in _GIVEN_IN
            if regimen_only and not (infused and section.category in _LISTED):
                continue
            start, end = doc[section.body_start].idx, _end_char(doc, section.body_end)
            for clause_start, clause_end, _ in _clauses(text, start, end):
                clause = text[clause_start:clause_end]
                cycle = infused and REGIMEN_CYCLE.search(clause) is not None
                if regimen_only and not cycle:
                    continue
                for drug in (self.drugs.regimen(clause) if cycle else self.drugs.find(clause)):
                    span = _span_of(words(clause, clause_start), drug.drug)
                    if span is None and cycle:  # named by the regimen's acronym: the clause
                        span = (clause_start, clause_start + len(clause.rstrip()))
                    if span is None or drug.code in found:
                        continue
                    found[drug.code] = Suggestion(
                        drug.code, drug.title, 0.7,
                        [Evidence(span[0], span[1], "", section.category)], True)
        return list(found.values())

    def _procedures(self, doc: Doc, text: str, facts: frozenset[str]) -> list[Suggestion]:
        """ICD-10-PCS codes for the procedures an inpatient record names (its procedure
        sections), each finished from the words of those sections."""
        assert self.procedures is not None
        bodies = [(doc[s.body_start:s.body_end].start_char, doc[s.body_start:s.body_end].end_char)
                  for s in doc._.sections if s.category == "procedures"]
        context = context_words(text[start:end] for start, end in bodies)
        extra = OBSTETRIC_WORDS if "obstetric" in facts else frozenset()
        found: dict[str, Suggestion] = {}
        for start, end in bodies:
            for clause_start, clause_end, _ in _clauses(text, start, end):
                clause_words = words(text[clause_start:clause_end], clause_start)
                present = frozenset(w.text for w in clause_words)
                if (not present or len(clause_words) > PROCEDURE_NAME_WORDS
                        or _NARRATIVE.search(text, clause_start, clause_end)):
                    continue  # an operative narrative's steps are context, not procedures
                for match in self.procedures.find(present | extra):
                    span = _span_of(clause_words, match.covered)
                    if span is None:
                        continue
                    try:
                        done = self.procedures.complete(match.term.code, context | present)
                    except ValueError:
                        continue
                    share = done.read / (done.read + done.defaulted) if done.defaulted else 1.0
                    confidence = 0.55 + 0.4 * share
                    evidence = Evidence(span[0], span[1], "", "procedures")
                    known = found.get(done.code)
                    if known is None:
                        found[done.code] = Suggestion(done.code, done.title, confidence,
                                                      [evidence], confidence >= PROPOSE_AT)
                    else:
                        known.evidence.append(evidence)
        return sorted(found.values(), key=lambda s: (-s.confidence, s.evidence[0].start))

    def _sections_doc(self, text: str) -> Doc:
        doc = self.nlp.make_doc(text)
        doc.spans["medspacy_spans"] = []
        for name, component in self.nlp.pipeline:
            if name == "medspacy_context":
                break
            doc = component(doc)
        # A line that starts a list item or a heading starts a sentence, so that a negation
        # ("Denies chest pain") never reaches into the next item or section.
        for token in doc[:-1]:
            following = doc[token.i + 1]
            if "\n" in token.text and (following.is_upper or following.is_digit
                                        or following.text[:1] in "-#*•"
                                        or "\n\n" in token.text):
                following.is_sent_start = True
        return doc

    def _mentions(self, doc: Doc, text: str, facts: frozenset[str]) -> Iterator[_Mention]:
        for section in doc._.sections:
            category = section.category or "other"
            if category not in SECTION_WEIGHT:
                continue
            body = doc[section.body_start:section.body_end]
            yield from self._section_mentions(text, body.start_char, body.end_char, category,
                                              facts)

    def _section_mentions(self, text: str, start: int, end: int, category: str,
                          facts: frozenset[str]) -> Iterator[_Mention]:
        for clause_start, clause_end, bullet in _clauses(text, start, end):
            clause = text[clause_start:clause_end]
            if _SIGNATURE.search(clause):
                continue  # "Signed by Alexander ..." names a clinician, not a disease
            found = words(clause, clause_start)
            if not found:
                continue
            present = frozenset(w.text for w in found)
            labelled = bool(_PRINCIPAL_LABEL.search(text[max(start, clause_start - 12):
                                                         clause_end]))
            for match in _distinct(self.diagnoses.matches(present | _facts_for(present, facts))):
                span = _span_of(found, match.covered)
                if span is None:
                    continue
                coverage = len(match.covered & present) / len(present)
                yield _Mention(match, span[0], span[1], category, clause_start, coverage,
                               labelled, bullet)

    def _in_context(self, doc: Doc, mentions: list[_Mention],
                    setting: str) -> list[tuple[_Mention, float]]:
        context = self.nlp.get_pipe("medspacy_context")
        # ConText's scope never leaves a sentence, so it runs on the sentences that hold a
        # mention only, not on the medication lists and exam findings around them.
        by_sentence: dict[int, list[int]] = defaultdict(list)
        for number, mention in enumerate(mentions):
            span = doc.char_span(mention.start, mention.end, alignment_mode="expand")
            by_sentence[(span or doc[0:1]).sent.start].append(number)
        modified: list[Span | None] = [None] * len(mentions)
        for start, numbers in by_sentence.items():
            sentence = doc[start].sent
            sub = sentence.as_doc()
            offset = sentence.start_char
            spans = []
            for number in numbers:
                span = sub.char_span(mentions[number].start - offset,
                                     mentions[number].end - offset, alignment_mode="expand")
                spans.append(span if span is not None else sub[0:len(sub)])
            sub.spans["medspacy_spans"] = spans
            sub = context(sub)
            for number, span in zip(numbers, sub.spans["medspacy_spans"], strict=True):
                modified[number] = span
        kept: list[tuple[_Mention, float]] = []
        for mention, span in zip(mentions, modified, strict=True):
            assert span is not None
            if span._.is_negated or span._.is_family or span._.is_hypothetical:
                continue
            weight = SECTION_WEIGHT[mention.section]
            if mention.bullet:
                weight *= BULLET_WEIGHT
            if mention.match.term.code.startswith("R") and not (
                    mention.section in _LISTED and mention.coverage >= 0.5):
                # Signs and symptoms routine to a disease are not coded beside it (guideline
                # I.B.5): a symptom is coded when the provider lists it as a diagnosis.
                weight *= SYMPTOM_WEIGHT
            if span._.is_uncertain:
                # Uncertain diagnoses are coded as if established only for inpatient stays, and
                # only as the final diagnoses; outpatient, the symptoms are coded instead.
                if setting != "inpatient" or mention.section != "diagnoses":
                    continue
                weight *= 0.85
            if span._.is_historical and mention.section not in ("diagnoses",
                                                                  "observation_and_plan"):
                continue
            quality = max(0.55, 1.0 - 0.06 * mention.match.missing_defaults)
            kept.append((mention, weight * quality * (0.55 + 0.45 * mention.coverage)))
        return kept

    def _rank(self, kept: list[tuple[_Mention, float]], limit: int) -> list[Suggestion]:
        by_code: dict[str, Suggestion] = {}
        first_seen: dict[str, int] = {}
        for mention, confidence in kept:
            code = mention.match.term.code
            suggestion = by_code.get(code)
            if suggestion is None:
                suggestion = by_code[code] = Suggestion(code, self.displays.get(code, code), 0.0)
                first_seen[code] = mention.start
            suggestion.confidence = 1 - (1 - suggestion.confidence) * (1 - confidence)
            suggestion.words |= mention.match.covered
            suggestion.evidence.append(Evidence(mention.start, mention.end, "", mention.section))
        for suggestion in by_code.values():
            suggestion.confidence = min(0.99, suggestion.confidence)
            suggestion.proposed = suggestion.confidence >= PROPOSE_AT
            suggestion.evidence.sort(key=lambda e: (-SECTION_WEIGHT[e.section], e.start))
            del suggestion.evidence[5:]
        ranked = sorted(by_code.values(), key=lambda s: (-s.confidence, first_seen[s.code]))
        return ranked[:limit]

    def _resolve(self, diagnoses: list[Suggestion], kept: list[tuple[_Mention, float]]
                 ) -> None:
        """Of two proposed codes that say the same thing (a code of the same category whose
        words the other's include: "CKD" beside "CKD stage 2") or that an Excludes1 note keeps
        apart, the weaker is offered, not proposed; so is a code of an unspecified site beside
        one of a documented site (``_site_documented``, ``_site_named_beside``)."""
        clauses: dict[str, set[int]] = defaultdict(set)
        for mention, _ in kept:
            clauses[mention.match.term.code].add(mention.clause_start)
        proposed = sorted((s for s in diagnoses if s.proposed), key=lambda s: -s.confidence)
        for index, weaker in enumerate(proposed):
            if _site_named_beside(weaker, proposed, clauses) or \
                    self._gives_way(weaker, proposed[:index], proposed):
                weaker.proposed = False
                weaker.confidence = min(weaker.confidence, PROPOSE_AT - 0.01)
        diagnoses.sort(key=lambda s: -s.confidence)

    def _gives_way(self, weaker: Suggestion, stronger: list[Suggestion],
                   proposed: list[Suggestion]) -> bool:
        same_category = [other for other in proposed
                         if other.code[:3] == weaker.code[:3] and other.code != weaker.code]
        # An "unspecified" code beside a specific one of its category ("Malignant neoplasm of
        # colon, unspecified" beside "... of cecum"): unspecified codes are for records that
        # say no more (guideline I.A.9, I.B.18).
        if _site_documented(weaker.code, {s.code for s in proposed}) or (
                _UNSPECIFIED.search(weaker.display) and any(
                    not _UNSPECIFIED.search(other.display) for other in same_category)):
            return True
        for other in stronger:
            if not other.proposed:
                continue
            if other.code[:3] == weaker.code[:3] and weaker.words and \
                    weaker.words <= other.words:
                return True
            if self.excludes1 and self.excludes1(other.code, weaker.code):
                return True
        # A less specific code of the same category, whatever its confidence: "left breast
        # cancer" beside "left breast, overlapping sites: carcinoma".
        return any(other.proposed and weaker.words and weaker.words < other.words
                   for other in same_category)

    def _obstetric_outcome(self, doc: Doc, text: str,
                           diagnoses: list[Suggestion]) -> list[Suggestion]:
        """A delivery adds its outcome (Z37, guideline I.C.15.b.5); one with no complication
        coded is O80; the pregnant state code Z33.1 is for pregnancies incidental to the visit
        and goes when a chapter 15 code is there."""
        supervision = next((s for s in diagnoses if s.code.startswith("Z34")), None)
        incidental = next((s for s in diagnoses if s.code == "Z33.1"), None)
        if supervision is not None and incidental is not None:
            # A visit for prenatal care is the pregnancy's supervision (I.C.15.b.1), never a
            # pregnancy incidental to the visit.
            supervision.confidence = max(supervision.confidence, incidental.confidence)
            supervision.proposed = supervision.confidence >= PROPOSE_AT
            supervision.evidence.extend(incidental.evidence)
            diagnoses = [s for s in diagnoses if s is not incidental]
        # A delivery of this stay: in its procedures, course or plan, not a past history's.
        found = next((hit for section in doc._.sections
                      if section.category in _THIS_STAY
                      for hit in [_DELIVERED.search(text, doc[section.body_start].idx,
                                                    _end_char(doc, section.body_end))]
                      if hit), None)
        if not found:
            return diagnoses
        evidence = [Evidence(found.start(), found.end(), "", "procedures")]
        complications = [s for s in diagnoses
                         if s.proposed and s.code.startswith("O") and s.code != "O80"]
        kept = [s for s in diagnoses if s.code not in ("Z33.1", "Z33.2")]
        if not complications and "O80" in self.displays:
            kept = [s for s in kept if s.code != "O80"]
            kept.insert(0, Suggestion("O80", self.displays["O80"], 0.9, evidence, True))
        outcome = "Z37.2" if re.search(r"\btwins?\b", text, re.I) else "Z37.0"
        if outcome in self.displays and all(s.code != outcome for s in kept):
            kept.append(Suggestion(outcome, self.displays[outcome], 0.85, evidence, True))
        return kept

    def _principal(self, diagnoses: list[Suggestion], kept: list[tuple[_Mention, float]],
                   setting: str) -> str | None:
        # External causes and birth outcomes are never first-listed (I.C.20.a, I.C.15.b.5);
        # a stay with a delivery is principally the pregnancy's (I.C.15.b.4).
        proposed = {s.code for s in diagnoses if s.proposed and _may_be_principal(s.code)}
        obstetric = [s.code for s in diagnoses if s.code in proposed and s.code[0] == "O"]
        if setting == "inpatient" and obstetric and any(s.code == "O80" for s in diagnoses):
            return obstetric[0]
        if not proposed:
            return diagnoses[0].code if diagnoses else None
        if setting == "inpatient":
            labelled = [m for m, _ in kept if m.principal_label and m.match.term.code in proposed]
            if labelled:
                return max(labelled, key=lambda m: m.match.score).match.term.code
            listed = [m for m, _ in kept
                      if m.section == "diagnoses" and m.match.term.code in proposed]
            if listed:
                return min(listed, key=lambda m: (m.clause_start, -m.match.score)).match.term.code
        # First-listed: the condition chiefly responsible for the visit, which the assessment
        # (or diagnosis list) names first (Section IV.G).
        listed = [m for m, _ in kept if m.section in _LISTED and not m.bullet
                  and m.match.term.code in proposed]
        if listed:
            return min(listed, key=lambda m: (m.clause_start, -m.match.score)).match.term.code
        return next((s.code for s in diagnoses if s.code in proposed), diagnoses[0].code)
