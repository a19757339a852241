"""The medspaCy pipeline computer-assisted coding reads notes with: the sectionizer and ConText,
with the section headings and context rules clinical notes need."""

from __future__ import annotations

from typing import Any

from spacy.language import Language

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
