"""The clinical note writer: headed sections per kind, the visit's own values, clinical
language instead of code titles, and byte-identical text for the same random state."""

from __future__ import annotations

import dataclasses
import random
import re
from datetime import date

import pytest

from chartkeeper.synth.assemble import build_course
from chartkeeper.synth.course import (
    EMERGENCY,
    INPATIENT,
    NOTE_TYPES,
    Allergy,
    Course,
    Diagnosis,
    Disease,
    Measure,
    Note,
    Procedure,
    ProcedureCode,
    Visit,
)
from chartkeeper.synth.modules import (
    BP_PANEL,
    DIABETES,
    GLUCOSE,
    HBA1C,
    HEART_RATE,
    HYPERTENSION,
    LISINOPRIL,
    METFORMIN,
    WEIGHT,
)
from chartkeeper.synth.note_phrasing import PHRASINGS
from chartkeeper.synth.notes import (
    DISPOSITIONS,
    SECTIONS,
    UnknownNoteKind,
    note_loinc,
    note_title,
    write_note,
)
from chartkeeper.synth.people import Person, make_person

AS_OF = date(2026, 1, 1)
AUTHOR = "Jane Okafor, MD"
TEMPERATURE = Measure("8310-5", "Body temperature", "Cel", "vital-signs")

# Every known key with a code and title shaped like the April 2026 ICD-10-CM release.
KNOWN = {
    "hypertension": HYPERTENSION,
    "type-2-diabetes": DIABETES,
    "asthma": Disease("asthma", "J45.41", "Moderate persistent asthma with (acute) "
                      "exacerbation", "708038006", "Acute exacerbation of asthma (disorder)"),
    "copd": Disease("copd", "J44.1", "Chronic obstructive pulmonary disease with (acute) "
                    "exacerbation", "195951007", "Acute exacerbation of COPD (disorder)"),
    "heart-failure": Disease("heart-failure", "I50.23", "Acute on chronic systolic "
                             "(congestive) heart failure", "84114007", "Heart failure (disorder)"),
    "pneumonia": Disease("pneumonia", "J18.9", "Pneumonia, unspecified organism",
                         "233604007", "Pneumonia (disorder)", chronic=False),
    "uti": Disease("uti", "N39.0", "Urinary tract infection, site not specified", "68566005",
                   "Urinary tract infectious disease (disorder)", chronic=False),
    "ckd": Disease("ckd", "N18.31", "Chronic kidney disease, stage 3a", "700378005",
                   "Chronic kidney disease stage 3a (disorder)"),
    "depression": Disease("depression", "F32.1", "Major depressive disorder, single episode, "
                          "moderate", "832007", "Moderate major depression (disorder)"),
    "hip-fracture": Disease("hip-fracture", "S72.001A", "Fracture of unspecified part of neck "
                            "of right femur, initial encounter for closed fracture", "5913000",
                            "Fracture of neck of femur (disorder)", chronic=False),
    "pregnancy": Disease("pregnancy", "Z34.01", "Encounter for supervision of normal first "
                         "pregnancy, first trimester", "72892002", "Normal pregnancy (finding)",
                         chronic=False),
    "breast-cancer": Disease("breast-cancer", "C50.412", "Malignant neoplasm of upper-outer "
                             "quadrant of left female breast", "254837009",
                             "Malignant neoplasm of breast (disorder)"),
    "lung-cancer": Disease("lung-cancer", "C34.11", "Malignant neoplasm of upper lobe, right "
                           "bronchus or lung", "93880001", "Primary malignant neoplasm of lung "
                           "(disorder)"),
    "colorectal-cancer": Disease("colorectal-cancer", "C18.7", "Malignant neoplasm of sigmoid "
                                 "colon", "363406005", "Malignant neoplasm of colon (disorder)"),
    "prostate-cancer": Disease("prostate-cancer", "C61", "Malignant neoplasm of prostate",
                               "399068003", "Malignant tumor of prostate (disorder)"),
    "melanoma": Disease("melanoma", "C43.62", "Malignant melanoma of left upper limb, "
                        "including shoulder", "372244006", "Malignant melanoma (disorder)"),
}
GOUT = Disease("gout", "M10.9", "Gout, unspecified", "90560007", "Gout (disorder)")
HIP_REPLACEMENT = ProcedureCode("hip-arthroplasty", "52734007",
                                "Total replacement of hip (procedure)")
LUMPECTOMY = ProcedureCode("lumpectomy", "392021009", "Lumpectomy of breast (procedure)")
PATHOLOGY = ("Invasive ductal carcinoma, Nottingham grade 2, 1.6 cm; margins negative; "
             "0/2 sentinel lymph nodes (pT1c pN0).")


@pytest.fixture
def person() -> Person:
    adult = make_person(random.Random(11), AS_OF)
    return dataclasses.replace(adult, given="Maria", gender="female",
                               birth_date=date(1958, 4, 9))


def follow_up() -> Visit:
    return Visit(date(2024, 3, 1), "follow-up", reasons=[HYPERTENSION, DIABETES],
                 principal=HYPERTENSION, secondary=[DIABETES],
                 results=[(BP_PANEL, (152.0, 94.0)), (HEART_RATE, 78.0), (WEIGHT, 88.2),
                          (HBA1C, 9.1), (GLUCOSE, 185.0)],
                 orders=[(LISINOPRIL, HYPERTENSION), (METFORMIN, DIABETES)])


def emergency(disease: Disease) -> Visit:
    return Visit(date(2025, 2, 3), "emergency", EMERGENCY, reasons=[disease],
                 principal=disease, secondary=[HYPERTENSION],
                 results=[(BP_PANEL, (128.0, 76.0)), (HEART_RATE, 104.0),
                          (TEMPERATURE, 38.4)])


def admission(discharge: str = "snf") -> Visit:
    hip = KNOWN["hip-fracture"]
    return Visit(date(2025, 6, 3), "admission", INPATIENT, days=4, principal=hip,
                 secondary=[HYPERTENSION, DIABETES], discharge=discharge,
                 results=[(BP_PANEL, (138.0, 80.0)), (HEART_RATE, 88.0)],
                 procedures=[Procedure(HIP_REPLACEMENT, date(2025, 6, 4), hip, "right hip")])


def surgery() -> Visit:
    cancer = KNOWN["breast-cancer"]
    return Visit(date(2025, 9, 9), "surgery", principal=cancer,
                 procedures=[Procedure(LUMPECTOMY, date(2025, 9, 9), cancer, "left breast")])


def course_of(*visits: Visit, diagnoses: list[Diagnosis] | None = None) -> Course:
    allergy = Allergy("penicillin", "764146007", "Penicillin", "medication", "247472004",
                      "Hives")
    return Course(diagnoses if diagnoses is not None else [
        Diagnosis(HYPERTENSION, date(2019, 5, 1)), Diagnosis(DIABETES, date(2024, 3, 1))],
        list(visits), [allergy])


def write(person: Person, course: Course, visit: Visit, note: Note, seed: int = 1) -> str:
    return write_note(random.Random(seed), person, course, visit, note, AUTHOR)


def section(text: str, heading: str) -> str:
    """The body of one section: from its heading to the next heading line."""
    match = re.search(rf"^{re.escape(heading)}:(.*?)(?=^[A-Z][A-Z /&()-]+:|\Z)", text,
                      re.M | re.S)
    assert match, f"no {heading} section in:\n{text}"
    return match.group(1).strip()


def all_kinds(person: Person) -> dict[str, str]:
    visit, stay, operation = follow_up(), admission(), surgery()
    course = course_of(visit, emergency(KNOWN["pneumonia"]), stay, operation)
    ed = course.visits[1]
    return {
        "history-and-physical": write(person, course, stay, Note("history-and-physical")),
        "emergency-note": write(person, course, ed, Note("emergency-note")),
        "progress-note": write(person, course, visit, Note("progress-note")),
        "discharge-summary": write(person, course, stay, Note("discharge-summary")),
        "operative-report": write(person, course, stay, Note("operative-report")),
        "pathology-report": write(person, course, operation,
                                  Note("pathology-report", "lumpectomy", PATHOLOGY)),
        "radiology-report": write(person, course, ed, Note("radiology-report")),
    }


def test_each_kind_has_its_headed_sections_in_order(person: Person) -> None:
    notes = all_kinds(person)
    assert set(notes) == set(NOTE_TYPES) == set(SECTIONS)
    for kind, text in notes.items():
        positions = [text.find(f"\n{heading}:") for heading in SECTIONS[kind]]
        assert -1 not in positions, (kind, text)
        assert positions == sorted(positions), kind
        assert text.startswith(note_title(Note(kind)).upper())


def test_header_names_the_synthetic_patient_dates_and_author(person: Person) -> None:
    text = all_kinds(person)["progress-note"]
    assert f"Patient: {person.family}, {person.given}" in text
    assert "DOB: 04/09/1958" in text and f"MRN: {person.mrn}" in text
    assert "Date of service: 03/01/2024" in text and f"Author: {AUTHOR}" in text
    assert AUTHOR in text.rstrip().splitlines()[-1] or AUTHOR in text.rstrip().splitlines()[-2]


def test_vital_signs_and_labs_appear_with_their_values_and_units(person: Person) -> None:
    visit = follow_up()
    for kind in ("progress-note", "history-and-physical"):
        text = write(person, course_of(visit), visit, Note(kind))
        assert "BP 152/94 mmHg" in text and "78/min" in text and "88.2 kg" in text
        assert "9.1%" in text and "185 mg/dL" in text
    ed = emergency(KNOWN["pneumonia"])
    assert "Temp 38.4 C" in write(person, course_of(ed), ed, Note("emergency-note"))


def test_history_and_emergency_notes_deny_symptoms_explicitly(person: Person) -> None:
    for seed in range(5):
        notes = all_kinds(person)
        for kind in ("history-and-physical", "emergency-note"):
            ros = section(notes[kind], "REVIEW OF SYSTEMS")
            assert re.search(r"\b(Denies|No|Negative for)\b", ros), ros
        ed_ros = section(write(person, course_of(emergency(KNOWN["pneumonia"])),
                               emergency(KNOWN["pneumonia"]), Note("emergency-note"), seed),
                         "REVIEW OF SYSTEMS")
        # Pneumonia brings fever and cough: they are positives, never denied.
        assert "Positive for fevers" in ed_ros
        assert not re.search(r"(Denies|No|Negative for) [^.]*\bcough\b", ed_ros)


def test_emergency_impression_carries_uncertainty(person: Person) -> None:
    found = set()
    for seed in range(30):
        ed = emergency(KNOWN["pneumonia"])
        text = write(person, course_of(ed), ed, Note("emergency-note"), seed)
        plan = section(text, "ASSESSMENT AND PLAN")
        found |= {w for w in ("vs", "cannot exclude", "r/o") if w in plan}
    assert {"vs", "cannot exclude", "r/o"} <= found


@pytest.mark.parametrize("discharge", sorted(DISPOSITIONS))
def test_discharge_summary_states_both_dates_and_the_disposition(
        person: Person, discharge: str) -> None:
    stay = admission(discharge)
    text = write(person, course_of(stay), stay, Note("discharge-summary"))
    assert section(text, "ADMISSION DATE") == "06/03/2025"
    assert section(text, "DISCHARGE DATE").startswith("06/07/2025")
    assert section(text, "DISPOSITION") == DISPOSITIONS[discharge]
    assert "Principal: right femoral neck fx" in section(text, "DISCHARGE DIAGNOSES")
    assert "Total replacement of right hip (06/04/2025)" in section(text, "PROCEDURES")
    if discharge == "expired":
        assert section(text, "CONDITION AT DISCHARGE") == "Expired"
        assert "expired on 06/07/2025" in section(text, "HOSPITAL COURSE")


def test_operative_report_names_procedure_surgeon_and_specimen(person: Person) -> None:
    operation = surgery()
    text = write(person, course_of(operation), operation, Note("operative-report"))
    assert section(text, "PROCEDURE") == "Lumpectomy of left breast"
    assert section(text, "SURGEON") == AUTHOR
    assert section(text, "COMPLICATIONS").startswith("None")
    assert "left breast" in section(text, "PREOPERATIVE DIAGNOSIS")
    assert "to pathology" in section(text, "SPECIMENS")
    assert re.fullmatch(r"\d+ mL", section(text, "ESTIMATED BLOOD LOSS"))


def test_pathology_report_contains_the_findings_and_agrees_with_them(person: Person) -> None:
    operation = surgery()
    note = Note("pathology-report", "lumpectomy", PATHOLOGY)
    for seed in range(5):
        text = write(person, course_of(operation), operation, note, seed)
        assert PATHOLOGY in section(text, "FINAL DIAGNOSIS")
        assert "1.6 cm" in section(text, "GROSS DESCRIPTION")
        assert "Tumor size: 1.6 cm" in text
    unguided = write(person, course_of(operation), operation, Note("pathology-report"))
    assert "Margins:" in unguided and "grade" in section(unguided, "FINAL DIAGNOSIS")


def test_radiology_report_uses_given_findings_and_agrees_on_the_lobe(person: Person) -> None:
    ed = emergency(KNOWN["pneumonia"])
    course = course_of(ed)
    note = write(person, course, ed, Note("emergency-note"))
    report = write(person, course, ed, Note("radiology-report"), seed=2)
    lobe = re.search(r"\b(RLL|RUL|RML|LLL|LUL|lingula)\b", section(report, "FINDINGS"))
    assert lobe and lobe.group(1) in note
    given = Note("radiology-report", "Plain chest X-ray", "Consolidation in the right lower "
                 "lobe.")
    text = write(person, course, ed, given)
    assert section(text, "EXAM") == "Plain chest X-ray"
    assert "Consolidation in the right lower lobe." in section(text, "FINDINGS")
    assert "radiographs" in section(text, "TECHNIQUE")


def test_same_random_state_gives_identical_text_and_others_differ(person: Person) -> None:
    stay = admission()
    course = course_of(follow_up(), stay)
    for kind in NOTE_TYPES:
        first = write(person, course, stay, Note(kind), seed=42)
        assert write(person, course, stay, Note(kind), seed=42) == first
        assert len({write(person, course, stay, Note(kind), seed) for seed in range(8)}) > 1


def test_writing_never_touches_the_global_random_stream(person: Person) -> None:
    random.seed(5)
    state = random.getstate()
    all_kinds(person)
    assert random.getstate() == state


@pytest.mark.parametrize("key", sorted(KNOWN))
def test_known_conditions_are_written_in_clinical_language_not_code_titles(
        person: Person, key: str) -> None:
    disease = KNOWN[key]
    assert key in PHRASINGS
    onset = date(2024, 1, 10)
    visits = [Visit(date(2025, 1, 5), "admission", INPATIENT, days=3, principal=disease,
                    reasons=[disease], secondary=[HYPERTENSION], discharge="home"),
              Visit(date(2025, 2, 5), "follow-up", reasons=[disease], principal=disease)]
    course = course_of(*visits, diagnoses=[Diagnosis(disease, onset),
                                           Diagnosis(HYPERTENSION, date(2018, 1, 1))])
    for visit in visits:
        for kind in NOTE_TYPES:
            for seed in range(3):
                text = write(person, course, visit, Note(kind), seed)
                lowered = text.lower()
                assert disease.icd10cm_display.lower() not in lowered, (key, kind, text)
                assert HYPERTENSION.icd10cm_display.lower() not in lowered
                assert disease.icd10cm not in text
                assert not re.search(r"[{}]|\bNone\w", text), text


def test_code_qualifiers_reach_the_text(person: Person) -> None:
    cases = {"heart-failure": "acute on chronic systolic CHF", "ckd": "CKD stage 3a",
             "breast-cancer": "left breast", "lung-cancer": "RUL", "hip-fracture": "right",
             "colorectal-cancer": "sigmoid colon", "melanoma": "left"}
    for key, words in cases.items():
        visit = Visit(date(2025, 1, 5), "follow-up", reasons=[KNOWN[key]], principal=KNOWN[key])
        assert words in write(person, course_of(visit), visit, Note("progress-note")), key


def test_poorly_controlled_only_when_the_code_says_hyperglycemia(person: Person) -> None:
    visit = follow_up()
    texts = [write(person, course_of(visit), visit, Note("progress-note"), s) for s in range(10)]
    assert not any("poorly controlled" in t for t in texts)
    assert any("A1c 9.1, well above goal" in t for t in texts)
    hyperglycemia = dataclasses.replace(DIABETES, icd10cm="E11.65")
    visit.reasons = [hyperglycemia]
    visit.principal = hyperglycemia
    text = write(person, course_of(visit), visit, Note("progress-note"))
    assert "poorly controlled" in text and "A1c 9.1" in text


def test_unknown_condition_still_gives_a_readable_note(person: Person) -> None:
    visit = Visit(date(2025, 5, 5), "emergency", EMERGENCY, reasons=[GOUT], principal=GOUT)
    course = course_of(visit, diagnoses=[Diagnosis(GOUT, date(2025, 5, 5))])
    for kind in NOTE_TYPES:
        text = write(person, course, visit, Note(kind))
        assert "gout" in text.lower()
        assert not re.search(r"[{}]|\bNone\w|\w None\b", text), text
        for heading in SECTIONS[kind]:
            assert f"{heading}:" in text


def test_no_allergies_is_written_nkda(person: Person) -> None:
    visit = follow_up()
    course = course_of(visit)
    assert "Penicillin (hives)" in write(person, course, visit, Note("history-and-physical"))
    course.allergies = []
    allergies = section(write(person, course, visit, Note("history-and-physical")),
                        "ALLERGIES")
    assert allergies in ("NKDA", "No known drug allergies")


def test_title_and_loinc_come_from_note_types() -> None:
    assert note_title(Note("discharge-summary")) == "Discharge summary"
    assert note_loinc(Note("radiology-report")) == ("18748-4", "Diagnostic imaging study")
    with pytest.raises(UnknownNoteKind, match="'consult'"):
        note_loinc(Note("consult"))
    with pytest.raises(UnknownNoteKind):
        write_note(random.Random(1), make_person(random.Random(1), AS_OF),
                   course_of(), follow_up(), Note("consult"), AUTHOR)


def test_every_note_of_generated_patients_is_complete(person: Person) -> None:
    written = 0
    for index in range(40):
        rng = random.Random(index)
        patient = make_person(rng, AS_OF)
        course = build_course(rng, patient, AS_OF)
        for visit in course.visits:
            for note in visit.notes:
                text = write_note(random.Random(index), patient, course, visit, note, AUTHOR)
                written += 1
                assert all(f"{heading}:" in text for heading in SECTIONS[note.kind])
                assert not re.search(r"[{}]|\bNone\w|\w None\b", text), text
                if note.findings:
                    assert note.findings in text
                for diagnosis in course.diagnoses:
                    if diagnosis.disease.key in PHRASINGS:
                        assert diagnosis.disease.icd10cm_display.lower() not in text.lower()
    assert written > 100
