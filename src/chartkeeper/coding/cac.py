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
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from spacy.language import Language
from spacy.tokens import Doc, Span

from chartkeeper.coding.cac_procedures import (
    OBSTETRIC_WORDS,
    REGIMEN_CYCLE,
    DrugCoder,
    ProcedureCoder,
    context_words,
)
from chartkeeper.coding.terms import Match, Term, TermIndex, Word, words

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

# Section headings clinical notes use that medspaCy's default rules lack ("Assessment and Plan"
# is a section, not two words of text).
_SECTION_RULES: tuple[tuple[str, str], ...] = (
    ("ASSESSMENT AND PLAN:", "observation_and_plan"),
    ("ASSESSMENT & PLAN:", "observation_and_plan"),
    ("A/P:", "observation_and_plan"),
    ("IMPRESSION:", "impression"),
    ("IMPRESSION AND PLAN:", "observation_and_plan"),
    ("DISCHARGE DIAGNOSES:", "diagnoses"),
    ("DISCHARGE DIAGNOSIS:", "diagnoses"),
    ("FINAL DIAGNOSES:", "diagnoses"),
    ("FINAL DIAGNOSIS:", "diagnoses"),
    ("ADMITTING DIAGNOSIS:", "diagnoses"),
    ("ADMISSION DIAGNOSIS:", "diagnoses"),
    ("PREOPERATIVE DIAGNOSIS:", "diagnoses"),
    ("POSTOPERATIVE DIAGNOSIS:", "diagnoses"),
    ("DIAGNOSIS:", "diagnoses"),
    ("DIAGNOSES:", "diagnoses"),
    ("SUBJECTIVE:", "history_of_present_illness"),
    ("PLAN:", "plan"),
    ("OBJECTIVE:", "physical_exam"),
    ("PROCEDURES:", "procedures"),
    ("PROCEDURE:", "procedures"),
    ("PROCEDURE PERFORMED:", "procedures"),
    ("PROCEDURES PERFORMED:", "procedures"),
    ("DESCRIPTION OF PROCEDURE:", "procedures"),
    ("OPERATION:", "procedures"),
    ("OPERATIONS:", "procedures"),
    ("FINDINGS:", "imaging"),
    ("HOSPITAL COURSE:", "hospital_course"),
    ("DISCHARGE MEDICATIONS:", "medications"),
    ("FOLLOW-UP:", "patient_instructions"),
    ("DISPOSITION:", "patient_instructions"),
    ("CONDITION AT DISCHARGE:", "patient_instructions"),
    ("LABS AND DATA:", "labs_and_studies"),
    ("REVIEW OF SYSTEMS:", "review_of_systems"),
    ("PHYSICAL EXAM:", "physical_exam"),
    ("PAST SURGICAL HISTORY:", "past_surgical_history"),
    ("ESTIMATED BLOOD LOSS:", "other"),
    ("SURGEON:", "other"),
    ("ANESTHESIA:", "other"),
    ("INDICATIONS:", "reason_for_examination"),
    ("INDICATION:", "reason_for_examination"),
    ("TECHNIQUE:", "other"),
    ("COMPARISON:", "other"),
    ("CLINICAL HISTORY:", "reason_for_examination"),
)

# ConText fixes clinical text needs: "without complications" is part of a diagnosis, not a
# negation; "felt unlikely" and "less likely" look back at what they doubt.
_CONTEXT_RULES: tuple[tuple[str, str, str], ...] = (
    ("without complications", "PSEUDO", "FORWARD"),
    ("without complication", "PSEUDO", "FORWARD"),
    ("without mention of", "PSEUDO", "FORWARD"),
    ("without abnormal findings", "PSEUDO", "FORWARD"),
    ("without hematuria", "PSEUDO", "FORWARD"),
    ("less likely", "POSSIBLE_EXISTENCE", "BACKWARD"),
    ("felt less likely", "POSSIBLE_EXISTENCE", "BACKWARD"),
    ("felt unlikely", "NEGATED_EXISTENCE", "BACKWARD"),
    ("unlikely", "NEGATED_EXISTENCE", "BACKWARD"),
    ("felt low probability", "NEGATED_EXISTENCE", "BACKWARD"),
    # The uncertainty words of guideline Section II.H that medspaCy's rules lack.
    ("probable", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("probably", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("suspected", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("likely", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("questionable", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("presumed", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("compatible with", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("consistent with", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("still to be ruled out", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("r/o", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("rule out", "POSSIBLE_EXISTENCE", "FORWARD"),
    ("ppx", "HYPOTHETICAL", "BACKWARD"),
    ("prophylaxis", "HYPOTHETICAL", "BACKWARD"),
    ("hx of", "HISTORICAL", "FORWARD"),
    ("h/o", "HISTORICAL", "FORWARD"),
    ("history of", "HISTORICAL", "FORWARD"),
)

_CLAUSE_BREAK = re.compile(r"[;:#\n]|(?<!\d)\.(?!\d)|\s-\s|^\s*-\s|\b\d{1,2}\.\s", re.M)
_INFANT_AGE = re.compile(r"\b\d{1,2}[- ]?(?:months?|mos?|weeks?|wks?|days?)[- ]old\b", re.I)
_AGE = re.compile(r"\b(\d{1,3})[- ]?(?:years?[- ]old|year-old|yo|y/o|y\.o\.)", re.I)
_GRAVIDA = re.compile(r"\bG(\d{1,2})\s?P\d", re.I)
_WEEKS = re.compile(r"\b(\d{1,2})\s*(?:weeks|wks|w)\b(?!\s*ago)", re.I)
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


def build_pipeline() -> Language:
    """medspaCy's sectionizer and ConText with our rules, after spaCy's sentencizer."""
    import medspacy  # noqa: F401 - registers the medspacy_* pipeline factories
    import spacy
    from medspacy.context import ConTextRule
    from medspacy.section_detection import SectionRule

    # spaCy's rule-based sentencizer, not PyRuSH: PyRuSH took 0.9 s of a two-page note's
    # second, and logs every token it reads at DEBUG (note text, never to be logged). List
    # items and headings also start sentences (``Coder._sections_doc``).
    nlp: Language = spacy.blank("en")
    nlp.add_pipe("sentencizer")
    sectionizer: Any = nlp.add_pipe("medspacy_sectionizer",
                                    config={"require_start_line": True,
                                            "input_span_type": "group", "rules": None})
    ours = {literal.lower().rstrip(":") for literal, _ in _SECTION_RULES}
    defaults = [rule for rule in SectionRule.from_json(sectionizer.DEFAULT_RULES_FILEPATH)
                if rule.literal.lower().rstrip(":") not in ours]
    sectionizer.add([*defaults,
                     *(SectionRule(literal, category) for literal, category in _SECTION_RULES)])
    context: Any = nlp.add_pipe("medspacy_context", config={"input_span_type": "group"})
    context.add([ConTextRule(literal, category, direction=direction)
                 for literal, category, direction in _CONTEXT_RULES])
    return nlp


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


def _end_char(doc: Doc, token_end: int) -> int:
    return doc[token_end - 1].idx + len(doc[token_end - 1].text) if token_end > 0 else 0


def _site_documented(code: str, codes: set[str]) -> bool:
    """Whether ``code`` is a neoplasm code of unspecified site beside a proposed code of a
    documented site (guideline I.C.2.d: C80.1 only when no primary site can be determined;
    likewise C77.9 beside another node group, C79.9 beside a named secondary site). Codes
    titled "unspecified" give way to a specific code of their category (``_gives_way``)."""
    if code == "C80.1":
        return any("C00" <= other[:3] <= "C75" for other in codes)
    if code == "C77.9":
        return any(other[:3] == "C77" and other != code for other in codes)
    if code == "C79.9":
        return any(other[:3] in ("C77", "C78", "C79") and other != code for other in codes)
    return False


def _site_named_beside(weaker: Suggestion, proposed: list[Suggestion],
                       clauses: Mapping[str, set[int]]) -> bool:
    """Whether ``weaker`` is a "site not specified" code ("Urinary tract infection, site not
    specified") and the same clause of the note names the site with a code of the same
    chapter ("upper UTI (acute pyelonephritis)": N10, not N39.0 beside it)."""
    if not _SITE_NOT_SPECIFIED.search(weaker.display):
        return False
    return any(other is not weaker and other.proposed and other.code[0] == weaker.code[0]
               and not _SITE_NOT_SPECIFIED.search(other.display)
               and clauses.get(other.code, set()) & clauses.get(weaker.code, set())
               for other in proposed)


_UNSPECIFIED = re.compile(r"\bunspecified\b", re.I)
_SITE_NOT_SPECIFIED = re.compile(r"\b(?:site not specified|unspecified site)\b", re.I)


def _may_be_principal(code: str) -> bool:
    return not (code[0] in "VWXY" or code.startswith("Z37"))


def with_evidence_text(suggestions: Suggestions, text: str) -> Suggestions:
    """Fill each evidence span's text from the document it points into."""
    for suggestion in [*suggestions.diagnoses, *suggestions.procedures]:
        suggestion.evidence = [Evidence(e.start, e.end, text[e.start:e.end], e.section)
                               for e in suggestion.evidence]
    return suggestions


def _clauses(text: str, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
    """Clauses of a section body as (start, end, is a "- " bullet), list markers left out."""
    clause_start, bullet = start, False
    for cut in _CLAUSE_BREAK.finditer(text, start, end):
        yield clause_start, cut.start(), bullet
        clause_start = cut.end()
        bullet = cut.group(0).strip() == "-" or (bullet and cut.group(0) not in "\n;")
    yield clause_start, end, bullet


def _distinct(matches: list[Match]) -> Iterator[Match]:
    """The matches that each explain words no better match explained (the most specific)."""
    chosen: list[Match] = []
    for match in matches:
        if any(match.covered <= better.covered for better in chosen):
            continue
        chosen.append(match)
        yield match


def _span_of(found: list[Word], covered: frozenset[str]) -> tuple[int, int] | None:
    positions = [w for w in found if w.text in covered]
    if not positions:
        return None
    return min(w.start for w in positions), max(w.end for w in positions)


def _document_facts(text: str, age: int | None) -> frozenset[str]:
    """Words a title may need that the note states once, not in every clause: the patient's
    age group, the pregnancy's order and trimester, and whether an injury is in follow-up."""
    facts: set[str] = set()
    if age is None:
        found = _AGE.search(text)
        age = int(found.group(1)) if found else (0 if _INFANT_AGE.search(text) else None)
    # The index makes "adult" a nonessential modifier of a medical examination: with no age
    # stated, an examination is an adult's (a child's is written as a well-child visit).
    facts.add("adult" if age is None or age >= 18 else "child")
    gravida = _GRAVIDA.search(text)
    if gravida:
        facts.add("first" if gravida.group(1) == "1" else "other")
    weeks = _WEEKS.search(text)
    if weeks:
        week = int(weeks.group(1))
        facts.update(("trimester", "first" if week < 14 else "second" if week < 28 else "third"))
    if gravida or re.search(r"\b(?:pregnan\w*|labou?r|deliver\w*|cesarean|breech|IUP|prenatal)\b",
                            text, re.I):
        facts.update(("maternal", "care", "obstetric"))
    if re.search(r"\b(?:s/p|status post)\b|\bpost-?op(?:erative)?\s+(?:f/u|follow|visit|check)",
                 text, re.I):
        facts.update(("subsequent", "routine", "healing"))
    return frozenset(facts)


def _facts_for(present: frozenset[str], facts: frozenset[str]) -> frozenset[str]:
    """Document facts join a clause only where they can qualify what it says."""
    if "examination" in present:
        if "child" in present:  # "well child": a child's examination, whatever the age said
            return frozenset()
        return facts & {"adult", "child"}
    if "pregnancy" in present:
        return facts & {"first", "second", "third", "trimester", "other"}
    if present & {"presentation", "labor", "delivery", "breech"}:
        return facts & {"maternal", "care"}
    if "fracture" in present:
        return facts & {"subsequent", "routine", "healing"}
    return frozenset()


def coder_from_titles(entries: Iterable[tuple[str, str, Iterable[str]]],
                      nlp: Language | None = None,
                      excludes1: Callable[[str, str], str | None] | None = None) -> Coder:
    """A Coder over billable codes given as (code, title, inclusion terms)."""
    from chartkeeper.coding.terms import term

    listed = [(code, title, tuple(inclusion)) for code, title, inclusion in entries]
    sites = body_sites(title for _, title, _ in listed)
    terms = []
    displays: dict[str, str] = {}
    for code, title, inclusion in listed:
        displays[code] = title
        if "in diseases classified elsewhere" in title.lower():
            # Manifestation codes are reached from the underlying disease's "use additional
            # code" note, never coded alone (guideline I.A.13).
            continue
        for text in (title, *inclusion, *_colon_forms(title)):
            made = term(code, text)
            if made is not None and not _organ_only(made, sites):
                terms.append(made)
    return Coder(TermIndex(terms), displays, nlp, excludes1)


def _colon_forms(title: str) -> list[str]:
    """The classification's "large intestine" as notes write it: "Personal history of ...
    of large intestine" is a history of colon cancer, "Diverticulosis of large intestine" is
    diverticulosis of the colon. (Not a word form for everything: the procedure tables name
    the large intestine and each part of the colon as body parts of their own.)"""
    found = re.sub(r"\blarge intestine\b", "colon", title, flags=re.I)
    return [found] if found != title else []


_NEOPLASM_SITE = re.compile(r"^(?:malignant|benign) neoplasm of (.+)$")
_GENERIC_HEAD = re.compile(r"\b(?:disorders?|diseases?|conditions?)\b")


def body_sites(titles: Iterable[str]) -> frozenset[str]:
    """The words that name body sites, from the classification's own neoplasm titles
    ("Malignant neoplasm of prostate")."""
    found: set[str] = set()
    for title in titles:
        site = _NEOPLASM_SITE.match(title.lower())
        if site is not None:
            found |= {w.text for w in words(site.group(1))}
    return frozenset(found)


def _organ_only(made: Term, sites: frozenset[str]) -> bool:
    """A title that says only "a disorder of" an organ ("Disorder of prostate, unspecified",
    "Other disorders of lung", "Liver disease, unspecified"): "disorder", "disease" and
    "condition" are no words to match, so the term would be the organ's name alone and be
    proposed for any mention of the organ ("prostate cancer"). Not a term for suggestion."""
    return (len(made.essential) == 1 and not made.choices and made.essential <= sites
            and _GENERIC_HEAD.search(made.text.lower()) is not None)
