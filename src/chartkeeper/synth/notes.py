"""The clinical note writer: the plain-text documents a clinician would have written for a
visit of a synthetic course (H&P, ED note, progress note, discharge summary, operative,
pathology and radiology reports).

Diagnoses are written in clinical language, never as ICD-10-CM titles; qualifiers a coder
needs (laterality, stage, acuity, control) are read from the code so that the text supports
the code the course carries, and nothing is documented that would add a diagnosis the course
does not have (no organisms, no "poorly controlled" unless the code says hyperglycemia).
Every choice of wording comes from the caller's ``random.Random``: same state, same bytes.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from datetime import date, timedelta

from chartkeeper.synth.course import (
    AMBULATORY,
    EMERGENCY,
    INPATIENT,
    NOTE_TYPES,
    OBSERVATION,
    Course,
    Disease,
    Drug,
    Note,
    Procedure,
    Visit,
)
from chartkeeper.synth.note_phrasing import (
    ALIASES,
    GENERIC_OPERATION,
    ON_TREATMENT,
    OPERATIONS,
    PHRASINGS,
    Operation,
    Phrasing,
)
from chartkeeper.synth.people import FAMILY_NAMES, FEMALE_NAMES, MALE_NAMES, Person

__all__ = ["DISPOSITIONS", "SECTIONS", "UnknownNoteKind", "note_loinc", "note_title",
           "write_note"]


class UnknownNoteKind(ValueError):
    """A note kind that is not a key of ``NOTE_TYPES``."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"unknown note kind {kind!r}; expected one of {sorted(NOTE_TYPES)}")
        self.kind = kind


# The section headings each kind of document carries, in order.
SECTIONS: dict[str, tuple[str, ...]] = {
    "history-and-physical": (
        "CHIEF COMPLAINT", "HISTORY OF PRESENT ILLNESS", "PAST MEDICAL HISTORY",
        "PAST SURGICAL HISTORY", "MEDICATIONS", "ALLERGIES", "FAMILY HISTORY",
        "SOCIAL HISTORY", "REVIEW OF SYSTEMS", "PHYSICAL EXAM", "LABS AND DATA",
        "ASSESSMENT AND PLAN"),
    "progress-note": ("SUBJECTIVE", "OBJECTIVE", "ASSESSMENT", "PLAN"),
    "discharge-summary": (
        "ADMISSION DATE", "DISCHARGE DATE", "ADMITTING DIAGNOSIS", "DISCHARGE DIAGNOSES",
        "PROCEDURES", "HISTORY OF PRESENT ILLNESS", "HOSPITAL COURSE", "CONDITION AT DISCHARGE",
        "DISPOSITION", "DISCHARGE MEDICATIONS", "FOLLOW-UP"),
    "operative-report": (
        "DATE OF OPERATION", "PREOPERATIVE DIAGNOSIS", "POSTOPERATIVE DIAGNOSIS", "PROCEDURE",
        "SURGEON", "ASSISTANT", "ANESTHESIA", "INDICATIONS", "FINDINGS",
        "ESTIMATED BLOOD LOSS", "SPECIMENS", "COMPLICATIONS", "DESCRIPTION OF PROCEDURE"),
    "pathology-report": (
        "SPECIMEN", "CLINICAL HISTORY", "GROSS DESCRIPTION", "MICROSCOPIC DESCRIPTION",
        "FINAL DIAGNOSIS"),
    "radiology-report": ("EXAM", "INDICATION", "COMPARISON", "TECHNIQUE", "FINDINGS",
                         "IMPRESSION"),
}
SECTIONS["emergency-note"] = SECTIONS["history-and-physical"][:-1] + (
    "ED COURSE", "ASSESSMENT AND PLAN", "DISPOSITION")

# How a discharge disposition (Visit.discharge) is written.
DISPOSITIONS = {
    "home": "Home", "home-health": "Home with home health services",
    "snf": "Skilled nursing facility", "rehab": "Acute inpatient rehabilitation facility",
    "expired": "Expired",
}
_ENCOUNTER_CLASSES = {AMBULATORY: "Outpatient", EMERGENCY: "Emergency department",
                      INPATIENT: "Inpatient", OBSERVATION: "Observation"}


def note_title(note: Note) -> str:
    """The document's title, e.g. "Discharge summary"."""
    return note_loinc(note)[1]


def note_loinc(note: Note) -> tuple[str, str]:
    """The LOINC document type (code, display) of ``note``."""
    if note.kind not in NOTE_TYPES:
        raise UnknownNoteKind(note.kind)
    return NOTE_TYPES[note.kind]


# --- how each known condition is talked about ---------------------------------------------
def _key(disease: Disease) -> str:
    """The phrasing a condition takes: its own, an alias's, or a stable chronic variant."""
    key, code = ALIASES.get(disease.key, disease.key), disease.icd10cm
    stable = ((key == "asthma" and code.endswith("0")) or (key == "copd" and code == "J44.9")
              or (key == "heart-failure" and (code[5:6] == "2" or code == "I50.9")))
    return f"{key}-stable" if stable else key


# --- ROS, exam, family and social history pools ---------------------------------------------
_ROS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Constitutional", ("fevers", "chills", "night sweats", "weight loss")),
    ("Eyes", ("blurry vision", "eye pain")),
    ("Cardiovascular", ("chest pain", "palpitations", "leg swelling")),
    ("Respiratory", ("shortness of breath", "cough", "wheezing")),
    ("GI", ("nausea", "vomiting", "abdominal pain", "diarrhea", "hematochezia")),
    ("GU", ("dysuria", "hematuria", "frequency")),
    ("MSK", ("joint pain", "back pain")),
    ("Neuro", ("headache", "focal weakness", "numbness")),
    ("Psych", ("depressed mood", "anxiety")),
    ("Skin", ("rash", "new skin lesions")),
)
_NORMAL_EXAM: dict[str, tuple[str, ...]] = {
    "General": ("NAD, well-appearing", "alert, pleasant, in no acute distress", "A&Ox3, NAD"),
    "HEENT": ("NCAT, MMM, PERRL", "normocephalic, atraumatic; oropharynx clear"),
    "Neck": ("supple, no JVD, no LAD", "no thyromegaly or JVD"),
    "CV": ("RRR, no m/r/g", "regular rate and rhythm, normal S1/S2, no murmurs"),
    "Lungs": ("CTAB, no wheezes, rales or rhonchi", "clear to auscultation b/l",
              "good air movement, no crackles"),
    "Abdomen": ("soft, NT/ND, +BS", "soft, nontender, nondistended, normal bowel sounds"),
    "Extremities": ("no edema, pulses 2+ b/l", "warm and well perfused, no c/c/e"),
    "Neuro": ("CN II-XII grossly intact, strength 5/5 throughout", "nonfocal"),
    "Skin": ("warm, dry, no rashes", "no suspicious lesions"),
    "Psych": ("normal mood and affect", "appropriate mood, good insight"),
}
_RELATIVES = ("Mother", "Father", "Sister", "Brother", "Maternal grandmother",
              "Paternal grandfather", "Maternal uncle", "Paternal aunt")
_FAMILY_CONDITIONS = ("HTN", "T2DM", "CAD", "stroke", "hyperlipidemia", "breast cancer",
                      "colon cancer", "prostate cancer", "Alzheimer's dementia", "hypothyroidism",
                      "asthma", "COPD")
_FAMILY_NEGATIVES = ("colon cancer", "sudden cardiac death", "breast or ovarian cancer",
                     "early CAD", "bleeding disorders")
_JOBS = ("teacher", "truck driver", "nurse", "accountant", "construction worker", "cashier",
         "mechanic", "office manager", "electrician", "postal worker", "chef", "engineer")
_LOBES = ("RLL", "RUL", "RML", "LLL", "LUL", "lingula")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _day(day: date) -> str:
    return day.strftime("%m/%d/%Y")


# --- the note's context --------------------------------------------------------------------
class _Ctx:
    """One note being written: the patient, the visit and the wording chosen so far."""

    def __init__(self, rng: random.Random, person: Person, course: Course, visit: Visit,
                 note: Note, author: str) -> None:
        self.rng, self.person, self.course, self.visit = rng, person, course, visit
        self.note, self.author = note, author
        self.age = person.age_on(visit.day)
        self.male = person.gender == "male"
        self.focus = _focus(visit)
        self.prior = [d for d in course.diagnoses
                      if d.onset < visit.day and not _is_visit_reason(d.disease)]
        self._slots: dict[str, dict[str, str]] = {}
        he, his = ("he", "his") if self.male else ("she", "her")
        title = "Mr." if self.male else "Ms."
        self.base = {
            "he": he, "his": his, "He": he.capitalize(), "His": his.capitalize(),
            "pt": self.pick(("pt", "the patient", f"{title} {person.family}")),
            "dur": self.pick(("2 days", "3 days", "4-5 days", "1 week", "several days",
                              "2 weeks")),
            "puffs": self.pick(("several times a day", "4-5 times daily", "nightly")),
            "home_bp": self.pick(("130s/80s", "140s/90s", "120s-130s systolic")),
            "fs_when": self.pick(("daily", "a few times a week", "twice daily")),
            "fs_range": self.pick(("130s-150s", "140s-180s", "110s-130s")),
            "rescue": self.pick(("twice a week", "once a week", "a few times a month")),
            "phq": str(rng.randint(11, 19)), "psa": _num(round(rng.uniform(4.5, 14.0), 1)),
            "proc": "surgery",
        }

    def _evidence(self, disease: Disease | None) -> tuple[list[str], list[str]]:
        """Body sites of the procedures done for ``disease`` and what notes said about it,
        across the course: a lobe or a side the record already states."""
        sites: list[str] = []
        said: list[str] = []
        if disease is None:
            return sites, said
        for visit in self.course.visits:
            sites += [p.body_site for p in visit.procedures
                      if p.body_site and p.reason and p.reason.key == disease.key]
            if any(d.key == disease.key for d in [visit.principal, *visit.reasons] if d):
                said += [n.findings for n in visit.notes if n.findings]
        return sites, said

    def phrasing(self, disease: Disease) -> Phrasing:
        """How ``disease`` is talked about at this visit: a cancer under treatment (a
        chemotherapy or radiation visit, or after its operation) is no longer a new mass."""
        if disease.key in _CANCERS:
            treating = any(d and d.icd10cm.startswith("Z51") for d in [
                self.visit.principal, *self.visit.reasons])
            operated = any(v.day < self.visit.day and any(n.kind == "operative-report" for n
                           in v.notes) and any(p.reason and p.reason.key == disease.key
                                               for p in v.procedures)
                           for v in self.course.visits)
            if treating or operated:
                return ON_TREATMENT
        return _phrasing(disease)

    def fixed(self, fact: str) -> random.Random:
        """A stream for facts about the patient that every note must agree on (which lung
        lobe, which relatives): seeded by the patient and the fact, not by the note."""
        return random.Random(f"{self.person.mrn}|{self.person.birth_date}|{fact}")

    def pick(self, options: Sequence[str]) -> str:
        return options[self.rng.randrange(len(options))]

    def sample(self, options: Sequence[str], low: int, high: int) -> list[str]:
        count = min(len(options), self.rng.randint(low, high))
        chosen = sorted(self.rng.sample(range(len(options)), count))
        return [options[i] for i in chosen]

    def slots(self, disease: Disease | None) -> dict[str, str]:
        """Template slots for ``disease``, chosen once per note so that a side or lobe stays
        the same wherever it is written."""
        key = disease.key if disease else ""
        if key not in self._slots:
            slots = dict(self.base)
            words = _qualifiers(disease) if disease else ""
            sites, said = self._evidence(disease)
            evidence = " ".join(sites + said).lower()
            side = next((s for s in ("left", "right") if s in words), "") or next(
                (s for s in ("left", "right") if re.search(rf"\b{s}\b", evidence)), "")
            named = [_procedure_name(p) for p in self.visit.procedures
                     if disease is None or p.reason == disease]
            slots["proc"] = named[0] if named else "surgery"
            fixed = self.fixed(key)
            side = side or fixed.choice(("left", "right"))
            slots["side"] = side
            lobe = fixed.choice(_LOBES)
            stated = re.search(r"(right|left) (upper|middle|lower) lobe", evidence)
            if "lobe" in words or "bronchus" in words:
                part = next((p for p in ("upper", "middle", "lower") if p in words), "upper")
                lobe = f"{side[0].upper()}{part[0].upper()}L"
            elif stated:
                lobe = f"{stated.group(1)[0]}{stated.group(2)[0]}l".upper()
            slots["lobe"] = lobe
            slots["site"] = (sites[0].lower().removeprefix("skin of ") if sites
                             else _body_site(fixed, words, side))
            slots["clock"] = str(fixed.randint(1, 12))
            onset = next((d.onset for d in self.course.diagnoses if d.disease.key == key), None)
            weeks = ((self.visit.day - onset).days // 7 + 6 if onset and key == "pregnancy"
                     else fixed.randint(37, 40) if key == "delivery" else fixed.randint(8, 39))
            gravida = 1 if "first pregnancy" in words else fixed.randint(2, 4)
            slots["ga"] = str(max(4, min(41, weeks)))
            slots["gp"] = f"G{gravida}P{gravida - 1}"
            slots["name"] = _clinical_name(self, disease, slots) if disease else ""
            self._slots[key] = slots
        return self._slots[key]

    def fill(self, template: str, disease: Disease | None = None) -> str:
        return template.format_map(self.slots(disease if disease else self.focus))


def _is_visit_reason(disease: Disease) -> bool:
    """A code for why one came (a check-up, chemotherapy, a screening), not a problem."""
    if _key(disease) in PHRASINGS:
        return False
    return (disease.icd10cm[:3] in ("Z00", "Z01", "Z37", "Z3A") or disease.icd10cm_display
            .startswith("Encounter for"))


def _focus(visit: Visit) -> Disease | None:
    """The condition the document is mostly about."""
    candidates = ([visit.principal] + visit.reasons + [d.disease for d in visit.diagnosed]
                  + visit.secondary + [p.reason for p in visit.procedures])
    return next((d for d in candidates if d and not _is_visit_reason(d)), None)


def _qualifiers(disease: Disease) -> str:
    """The code's titles, read (never printed) for laterality, site and acuity."""
    return f"{disease.icd10cm_display} {disease.snomed_display}".lower()


def _body_site(fixed: random.Random, words: str, side: str) -> str:
    for part, names in (("upper limb", ("upper arm", "forearm")), ("lower limb", (
            "calf", "thigh")), ("trunk", ("upper back", "chest wall")), ("face", ("cheek",
            "temple")), ("scalp", ("scalp",)), ("sigmoid", ("sigmoid colon",)), ("cecum", (
            "cecum",)), ("ascending", ("ascending colon",)), ("transverse", (
            "transverse colon",)), ("descending", ("descending colon",)), ("rectum", (
            "rectum",)), ("rectosigmoid", ("rectosigmoid junction",))):
        if part in words:
            name = fixed.choice(names)
            return f"{side} {name}" if part in ("upper limb", "lower limb", "face") else name
    return fixed.choice(("upper back", f"{side} forearm", "sigmoid colon", "skin"))


def _display_name(text: str) -> str:
    """A SNOMED CT display as running text: no semantic tag, lower case unless an acronym."""
    text = re.sub(r"\s*\((disorder|finding|procedure|morphologic abnormality|situation|"
                  r"regime/therapy|observable entity)\)$", "", text).strip()
    text = text.removesuffix(" procedure")
    if len(text) > 1 and not text[1].isupper():
        text = text[0].lower() + text[1:]
    return text


def _clinical_name(ctx: _Ctx, disease: Disease, slots: dict[str, str]) -> str:
    """What a clinician calls ``disease``, with the qualifiers its code carries."""
    code, words, key = disease.icd10cm, _qualifiers(disease), _key(disease)
    key = key.removesuffix("-stable")
    side, lobe, site = slots["side"], slots["lobe"], slots["site"]
    if key == "hypertension":
        return ctx.pick(("HTN", "hypertension", "essential HTN"))
    if key == "type-2-diabetes":
        name = ctx.pick(("DM2", "type 2 diabetes", "T2DM", "type 2 DM"))
        extra = {"E11.65": "poorly controlled {}", "E11.2": "{} with diabetic CKD",
                 "E11.4": "{} with peripheral neuropathy", "E11.3": "{} with retinopathy",
                 "E11.64": "{} with hypoglycemia"}
        return next((form.format(name) for prefix, form in extra.items()
                     if code.startswith(prefix)), name)
    if key == "asthma":
        severity = {"J45.2": "mild intermittent ", "J45.3": "mild persistent ",
                    "J45.4": "moderate persistent ", "J45.5": "severe persistent "}
        name = severity.get(code[:5], "") + "asthma"
        if code.endswith("1"):
            return ctx.pick((f"{name} with acute exacerbation", f"{name} exacerbation"))
        return f"{name} in status asthmaticus" if code.endswith("2") else name
    if key == "copd":
        if code.startswith("J44.1"):
            return ctx.pick(("AECOPD", "acute exacerbation of COPD", "COPD exacerbation"))
        return "COPD with superimposed LRTI" if code.startswith("J44.0") else "COPD"
    if key == "heart-failure":
        kind = {"I50.2": "systolic CHF (HFrEF)", "I50.3": "diastolic CHF (HFpEF)",
                "I50.4": "combined systolic and diastolic CHF"}.get(code[:5])
        if kind is None:
            return ctx.pick(("CHF", "congestive heart failure"))
        acuity = {"1": "acute ", "2": "chronic ", "3": "acute on chronic "}.get(code[5:6], "")
        return acuity + kind
    if key == "pneumonia":
        if code.startswith("J69"):
            return f"aspiration pneumonia of the {lobe}"
        if code.startswith("J18.1"):
            return f"lobar pneumonia of the {lobe}"
        if code.startswith("J12"):
            return "viral pneumonia"
        return ctx.pick((f"community-acquired pneumonia of the {lobe}", f"{lobe} CAP",
                         f"{lobe} pneumonia"))
    if key == "uti":
        if code.startswith("N30.01"):
            return "acute cystitis with hematuria"
        if code.startswith("N30.0"):
            return "acute cystitis"
        return "acute pyelonephritis" if code.startswith("N10") else ctx.pick(("UTI",
                                                                               "acute UTI"))
    if key == "pyelonephritis":
        # N10 is acute pyelonephritis: the note says "acute", or a coder could not assign it
        # (the Index sends plain "pyelonephritis" to N12, not specified as acute or chronic).
        return ctx.pick(("acute pyelonephritis", "acute pyelo",
                         "upper UTI (acute pyelonephritis)"))
    if key == "ckd":
        stage = {"N18.1": "1", "N18.2": "2", "N18.30": "3", "N18.31": "3a", "N18.32": "3b",
                 "N18.3": "3", "N18.4": "4", "N18.5": "5"}
        found = next((s for c, s in stage.items() if code.startswith(c)), None)
        return "ESRD" if code.startswith("N18.6") else f"CKD stage {found}" if found else "CKD"
    if key == "depression":
        level = next((w for w in ("mild", "moderate", "severe") if w in words), "")
        base = "recurrent MDD" if code.startswith("F33") else ctx.pick(("MDD",
                                                                         "major depression"))
        return f"{base}, {level}" if level else base
    if key == "hip-fracture":
        kind = ("intertrochanteric fx" if "trochant" in words else "femoral neck fx"
                if "neck" in words else "hip fracture")
        return f"{side} {kind}" + (", s/p repair, aftercare" if code.endswith("D") else "")
    if key == "delivery":
        return "breech presentation at term" if code.startswith("O32.1") else ctx.pick((
            "term IUP in spontaneous labor", "term pregnancy in labor"))
    if key == "pregnancy":
        return f"IUP at {slots['ga']} weeks" if ctx.rng.random() < 0.5 else "pregnancy"
    if key == "breast-cancer":
        quadrant = next((q for w, q in (("upper-outer", "UOQ"), ("upper-inner", "UIQ"),
                         ("lower-outer", "LOQ"), ("lower-inner", "LIQ")) if w in words), "")
        name = ctx.pick((f"{side} breast cancer", f"carcinoma of the {side} breast"))
        return f"{name} ({quadrant})" if quadrant else name
    if key == "lung-cancer":
        return ctx.pick((f"{lobe} lung cancer", f"carcinoma of the {lobe}",
                         f"{lobe} lung carcinoma"))
    if key == "colorectal-cancer":
        if code.startswith("C20"):
            return ctx.pick(("rectal cancer", "adenocarcinoma of the rectum"))
        return ctx.pick((f"{site} adenocarcinoma", f"colon cancer ({site})"))
    if key == "prostate-cancer":
        return ctx.pick(("prostate cancer", "prostate adenocarcinoma",
                         "adenocarcinoma of the prostate"))
    if key == "melanoma":
        return ctx.pick((f"melanoma of the {site}", f"{site} melanoma"))
    if key.startswith("secondary-"):
        return f"metastatic disease to the {key[10:].replace('-', ' ')}".replace(
            "intra abdominal", "intra-abdominal")
    if key == "history-of-colorectal-cancer":  # the history code names the part
        return "hx of rectal cancer" if code.startswith("Z85.04") else "hx of colon cancer"
    if key.startswith("history-of-"):
        return f"hx of {key[11:].replace('-', ' ')}"
    name = _display_name(disease.snomed_display)
    return f"{side} {name}" if re.search(r"\b(left|right)\b", disease.icd10cm_display,
                                          re.I) and side not in name else name


def _phrasing(disease: Disease) -> Phrasing:
    """The known phrasing, or one built from the condition's name."""
    if _key(disease) in PHRASINGS:
        return PHRASINGS[_key(disease)]
    if disease.chronic:
        return Phrasing(
            complaint=("f/u {name}",), hpi=("No new symptoms related to {name}.",
                                            "Reports symptoms are stable."),
            assess=("{name}, stable", "{name}"),
            plan=("Continue current management", "Monitor symptoms"),
            course=("Pt was admitted for management of {name} and improved.",))
    return Phrasing(
        complaint=("{name}",), hpi=("Symptoms began {dur} ago.", "No similar prior "
                                                                  "episodes."),
        uncertain=("presentation c/w {name}; cannot exclude other causes",),
        plan=("Supportive care", "Return precautions reviewed"),
        course=("Pt was admitted for management of {name}, treated and improved.",))


# --- shared pieces ----------------------------------------------------------------------------
_VITAL_LABELS = {"8867-4": "HR", "8302-2": "Ht", "29463-7": "Wt", "39156-5": "BMI",
                 "8310-5": "Temp", "9279-1": "RR", "59408-5": "SpO2", "2708-6": "SpO2",
                 "8287-5": "Head circ", "19935-6": "PEF"}
_LAB_LABELS = {"4548-4": "A1c", "2345-7": "glucose", "2339-0": "glucose", "2160-0": "Cr",
               "33914-3": "eGFR", "62238-1": "eGFR", "98979-8": "eGFR", "6690-2": "WBC",
               "718-7": "Hgb", "777-3": "Plt", "2951-2": "Na", "2823-3": "K",
               "30934-4": "BNP", "33762-6": "NT-proBNP", "2857-1": "PSA", "2524-7": "lactate",
               "1988-5": "CRP", "2093-3": "total cholesterol", "13457-7": "LDL",
               "3094-0": "BUN", "2028-9": "CO2", "6598-7": "troponin T", "10839-9":
               "troponin I", "2039-6": "CEA",
               "10230-1": "LVEF", "19926-5": "FEV1/FVC", "20150-9": "FEV1", "19935-6": "PEF",
               "44261-6": "PHQ-9", "5821-4": "UA WBC", "1504-0": "1-h glucose challenge",
               "9318-7": "urine albumin/Cr"}
_UNITS = {"mm[Hg]": "mmHg", "Cel": "C", "[degF]": "F", "10*3/uL": "K/uL", "10*6/uL": "M/uL"}


def _quantity(value: float, unit: str) -> str:
    """ "94 mmHg", "9.1%", "78/min"."""
    unit = re.sub(r"\{[^}]*score[^}]*\}", "", _UNITS.get(unit, unit))
    unit = re.sub(r"\{([^}]*)\}", lambda m: m.group(1).replace("_", ""), unit)
    unit = unit.replace("[", "").replace("]", "")
    return f"{_num(value)}{'' if unit[:1] in ('%', '/', '') else ' '}{unit}"


def _vitals(visit: Visit) -> str:
    parts, split_bp = [], {}
    for measure, value in visit.results:
        if measure.category != "vital-signs":
            continue
        if isinstance(value, tuple):
            parts.append(f"BP {_num(value[0])}/{_quantity(value[1], measure.unit)}")
        elif measure.loinc in ("8480-6", "8462-4"):
            split_bp[measure.loinc] = value
        else:
            label = _VITAL_LABELS.get(measure.loinc, _lab_label(measure.display))
            parts.append(f"{label} {_quantity(value, measure.unit)}")
    if len(split_bp) == 2:
        parts.insert(0, f"BP {_num(split_bp['8480-6'])}/{_num(split_bp['8462-4'])} mmHg")
    return ", ".join(parts)


def _lab_label(display: str) -> str:
    return re.split(r"[\[/]", display)[0].replace(" in Serum or Plasma", "").strip()


def _labs(ctx: _Ctx) -> str:
    parts = [f"{_LAB_LABELS.get(m.loinc, _lab_label(m.display))} {_quantity(v, m.unit)}"
             for m, v in ctx.visit.results
             if m.category != "vital-signs" and not isinstance(v, tuple)]
    if not parts:
        return ctx.pick(("No labs drawn today.", "No new labs.", "Labs not obtained."))
    return ctx.pick(("", "Labs: ", "Notable for ")) + ", ".join(parts)


def _result(visit: Visit, loinc: str) -> float | tuple[float, float] | None:
    return next((v for m, v in visit.results if m.loinc == loinc), None)


def _drug(ctx: _Ctx, drug: Drug) -> str:
    """An RxNorm display and sig as a clinician writes them: "metformin ER 500 mg, 1 tab PO
    daily"."""
    text = re.sub(r"^\d+(\.\d+)? (ML|ACTUAT|HR) ", "", drug.display)
    release = " ER" if "Extended Release" in text else " DR" if "Delayed Release" in text else ""
    for form, short in _DRUG_FORMS:
        text = text.replace(form, short)
    text = re.sub(r"\b(MG|ML|ACTUAT)\b", lambda m: _DRUG_UNITS[m.group()], text)
    words = [w.lower() if w.isalpha() and any(c.islower() for c in w) else w
             for w in text.split()
             if w != "hydrochloride"]
    first = next((i for i, w in enumerate(words) if w[:1].isdigit()), len(words))
    name = " ".join(words[:first]) + release + " " + " ".join(words[first:])
    sig = drug.dosage
    if ctx.rng.random() < 0.7:
        for full, short in _SIG_ABBREVIATIONS:
            sig = sig.replace(full, short)
    return f"{name.strip()}, {sig}"


_DRUG_FORMS = (("Extended Release ", ""), ("Delayed Release ", ""), ("Metered Dose Inhaler",
               "MDI"), ("Dry Powder Inhaler", "inhaler"), ("Inhalation Solution", "neb soln"),
               ("Prefilled Syringe", ""), ("Injection", ""), ("Oral Tablet", ""),
               ("Oral Capsule", ""), ("Oral Solution", "oral soln"), ("Oral Suspension", "susp"))
_DRUG_UNITS = {"MG": "mg", "ML": "mL", "ACTUAT": "actuation"}
_SIG_ABBREVIATIONS = (
    ("by mouth", "PO"), ("once daily", "daily"), ("twice daily", "BID"), ("three times daily",
    "TID"), ("four times daily", "QID"), ("as needed", "PRN"), ("at bedtime", "qHS"),
    ("tablets", "tabs"), ("tablet", "tab"), ("capsules", "caps"), ("capsule", "cap"),
    ("every 4 to 6 hours", "q4-6h"), ("subcutaneously", "subcut"), ("intravenously", "IV"),
    ("every 24 hours", "q24h"), ("every 8 hours", "q8h"), ("every 6 hours", "q6h"),
    ("every 4 hours", "q4h"))


def _medications(course: Course, before: date) -> list[Drug]:
    seen: dict[str, Drug] = {}
    for visit in course.visits:
        if visit.day < before:
            for drug, _ in visit.orders:
                seen.setdefault(drug.rxnorm, drug)
    return list(seen.values())


def _header(ctx: _Ctx) -> list[str]:
    person, visit = ctx.person, ctx.visit
    encounter = _ENCOUNTER_CLASSES.get(visit.encounter_class, visit.encounter_class)
    return [note_title(ctx.note).upper(), "",
            f"Patient: {person.family}, {person.given}",
            f"DOB: {_day(person.birth_date)}    Sex: {'M' if ctx.male else 'F'}",
            f"MRN: {person.mrn}", f"Date of service: {_day(visit.day)}",
            f"Encounter: {encounter} ({visit.kind})", f"Author: {ctx.author}", ""]


def _signature(ctx: _Ctx, day: date) -> str:
    return ctx.pick((f"Electronically signed by {ctx.author} on {_day(day)}.",
                     f"{ctx.author}\nSigned electronically {_day(day)}",
                     f"Dictated and signed by {ctx.author}, {_day(day)}."))


def _section(heading: str, body: str | Sequence[str]) -> str:
    if not isinstance(body, str):
        return f"{heading}:\n" + "\n".join(body) + "\n"
    return f"{heading}:\n{body}\n" if "\n" in body or len(body) > 70 else f"{heading}: {body}\n"


def _who(ctx: _Ctx) -> str:
    """ "62 y/o M", "62-year-old woman", "3-month-old girl"."""
    if ctx.age < 1:
        months = max(1, (ctx.visit.day - ctx.person.birth_date).days // 30)
        return f"{months}-month-old {'boy' if ctx.male else 'girl'}"
    if ctx.age < 18:
        return f"{ctx.age}-year-old {'boy' if ctx.male else 'girl'}"
    return ctx.pick((f"{ctx.age} y/o {'M' if ctx.male else 'F'}",
                     f"{ctx.age}-year-old {'man' if ctx.male else 'woman'}",
                     f"{ctx.age}yo {'male' if ctx.male else 'female'}"))


def _problems(ctx: _Ctx) -> list[Disease]:
    """The conditions addressed at this visit, the focus first."""
    visit, found = ctx.visit, list[Disease]()
    for disease in ([ctx.focus, visit.principal] + visit.secondary + visit.reasons
                    + [d.disease for d in visit.diagnosed] + [d for _, d in visit.orders]):
        family = disease and ALIASES.get(disease.key, disease.key)
        if disease and not _is_visit_reason(disease) and all(
                family != ALIASES.get(f.key, f.key) for f in found):
            found.append(disease)
    return found


def _purpose(ctx: _Ctx) -> str | None:
    """Why the patient came when it is not a problem: "an annual physical", "chemotherapy"."""
    visit = ctx.visit
    reason = next((d for d in [visit.principal, *visit.reasons] if d and _is_visit_reason(d)),
                  None)
    if reason is None and visit.kind != "check-up":
        return None
    if reason is None or reason.icd10cm.startswith("Z00"):
        return ("well child check" if ctx.age < 18 else ctx.pick((
            "annual physical", "routine health maintenance", "well visit")))
    return _display_name(reason.snomed_display)


def _name(ctx: _Ctx, disease: Disease) -> str:
    return ctx.slots(disease)["name"]


def _hpi(ctx: _Ctx, problems: list[Disease]) -> str:
    history = [_name(ctx, d.disease) for d in ctx.prior
               if all(d.disease.key != p.key for p in problems[:1])]
    lead = f"{_who(ctx)} " + (f"with hx of {', '.join(history)} " if history else "")
    purpose = _purpose(ctx)
    if purpose or not problems:
        text = [lead + ctx.pick(("presents for ", "here for ")) + (purpose or "a visit") + "."]
        text += [ctx.fill(ctx.phrasing(d).hpi[0], d) for d in problems[:3]]
        return " ".join(text + [ctx.pick(("Feels well, no new concerns.",
                                          "No complaints today."))])
    first = ctx.phrasing(problems[0])
    text = [lead + ctx.pick(("presents with ", "who presents with ", "here for ")) +
            ctx.fill(ctx.pick(first.complaint), problems[0]) + "."]
    text += [ctx.fill(s, problems[0]) for s in [first.hpi[0], *ctx.sample(first.hpi[1:], 1, 2)]]
    for other in problems[1:3] if ctx.note.kind == "progress-note" else []:
        text.append(ctx.fill(ctx.pick(ctx.phrasing(other).hpi[:1]), other))
    return " ".join(text)


def _ros(ctx: _Ctx, problems: list[Disease]) -> str:
    positives = {p for d in problems for p in ctx.phrasing(d).positives}
    temperature = _result(ctx.visit, "8310-5")
    if isinstance(temperature, float | int) and temperature >= 38:
        positives |= {"fevers", "chills"}
    lines, shown = [], []
    for system, symptoms in _ROS:
        denied = [s for s in symptoms if s not in positives]
        found = [s for s in symptoms if s in positives]
        shown += found
        if not denied:
            continue
        denied = denied[:ctx.rng.randint(min(2, len(denied)), len(denied))]
        joined = (", ".join(denied[:-1]) + " or " + denied[-1]) if len(denied) > 1 else denied[0]
        lines.append(f"{system}: " + ctx.pick(("Denies {}.", "No {}.", "Negative for {}."))
                     .format(joined))
    if shown:
        lines.insert(0, "Positive for " + ", ".join(shown) + " as per HPI.")
    lines.append(ctx.pick(("All other systems reviewed and negative.",
                           "10-point ROS otherwise negative.", "")))
    return "\n".join(line for line in lines if line)


def _exam(ctx: _Ctx, problems: list[Disease], brief: bool = False) -> list[str]:
    overrides: dict[str, str] = {}
    for disease in problems:
        for system, finding in ctx.phrasing(disease).exam:
            overrides.setdefault(system, ctx.fill(finding, disease))
    systems = list(_NORMAL_EXAM) + [s for s in overrides if s not in _NORMAL_EXAM]
    if brief:
        systems = ["General", "CV", "Lungs"] + [s for s in overrides if s not in (
            "General", "CV", "Lungs")]
    vitals = _vitals(ctx.visit)
    lines = [f"Vitals: {vitals}" if vitals else "Vitals: reviewed in flowsheet"]
    if ctx.age < 12:
        overrides.setdefault("General", "active, well-appearing child in NAD")
    lines += [f"{s}: {overrides.get(s) or ctx.pick(_NORMAL_EXAM[s])}" for s in systems]
    return lines


def _status(ctx: _Ctx, disease: Disease, settled: bool) -> str:
    """The assessment of one problem: values for HTN and DM2, uncertainty where fitting."""
    name, phrasing = _name(ctx, disease), ctx.phrasing(disease)
    if disease.key == "hypertension":
        bp = _result(ctx.visit, "85354-9")
        if isinstance(bp, tuple):
            reading = f"{_num(bp[0])}/{_num(bp[1])}"
            if bp[0] >= 140 or bp[1] >= 90:
                return ctx.pick((f"{name}, above goal today at {reading}",
                                 f"{name}, BP {reading}, not at goal"))
            if bp[0] < 130 and bp[1] < 80:
                return f"{name}, well controlled ({reading})"
            return f"{name}, near goal at {reading}"
    if disease.key == "type-2-diabetes":
        a1c = _result(ctx.visit, "4548-4")
        if isinstance(a1c, float | int):
            if a1c >= 9:
                return f"{name}, A1c {_num(a1c)}, well above goal"
            if a1c >= 7:
                return f"{name}, A1c {_num(a1c)} (goal <7)"
            return f"{name}, A1c {_num(a1c)}, at goal"
    if not settled and phrasing.uncertain:
        return ctx.fill(ctx.pick(phrasing.uncertain), disease)
    return ctx.fill(ctx.pick(phrasing.assess), disease)


def _plan(ctx: _Ctx, disease: Disease) -> list[str]:
    items = [ctx.fill(p, disease) for p in ctx.sample(ctx.phrasing(disease).plan, 1, 3)]
    prior = {d.rxnorm for d in _medications(ctx.course, ctx.visit.day)}
    for drug, reason in ctx.visit.orders:
        if reason.key == disease.key:
            verb = "Continue" if drug.rxnorm in prior else ctx.pick(("Start", "Begin", "Rx"))
            items.insert(0, f"{verb} {_drug(ctx, drug)}")
    for procedure in ctx.visit.procedures:
        if procedure.reason and procedure.reason.key == disease.key:
            when = ("today" if procedure.day <= ctx.visit.day else
                    f"planned for {_day(procedure.day)}")
            items.append(f"{_cap(_procedure_name(procedure))} {when}")
    return items


def _assessment_and_plan(ctx: _Ctx, problems: list[Disease], settled: bool) -> list[str]:
    lines = []
    purpose = _purpose(ctx)
    if ctx.note.findings:
        lines.append(ctx.note.findings)
    if purpose or not problems:
        lines.append(_cap(purpose or "visit") + ".")
        if ctx.visit.kind == "check-up":
            lines += ["- Age-appropriate screening reviewed", "- Diet and exercise counseling"]
    if problems:
        lines.append(f"{_who(ctx)} " + ctx.pick(("with ", "presenting with ", "here for ")) +
                     _name(ctx, problems[0]) + ".")
        numbered = ctx.rng.random() < 0.6
        for number, disease in enumerate(problems, 1):
            marker = f"{number}." if numbered else "#"
            lines.append(f"{marker} {_status(ctx, disease, settled or number > 1)}")
            lines += [f"   - {item}" for item in _plan(ctx, disease)]
    for vaccine in ctx.visit.immunizations:
        lines.append(f"- {vaccine.display} given today; VIS provided")
    return lines


def _family(ctx: _Ctx) -> str:
    """Family history: the facts are the patient's own (the same in every note), the wording
    is the note's."""
    fixed, items = ctx.fixed("family"), []
    for diagnosis in ctx.course.diagnoses:
        family = _phrasing(diagnosis.disease).family
        if family and fixed.random() < 0.5:
            items.append(fixed.choice(family))
    for _ in range(fixed.randint(1, 3)):
        roll = fixed.random()
        if roll < 0.55:
            items.append(f"{fixed.choice(_RELATIVES)} with {fixed.choice(_FAMILY_CONDITIONS)}")
        elif roll < 0.8:
            items.append(f"{fixed.choice(('Father', 'Mother', 'Brother'))} deceased at "
                         f"{fixed.randint(48, 88)} of "
                         f"{fixed.choice(('MI', 'stroke', 'cancer', 'COPD', 'pneumonia'))}")
        else:
            items.append(f"No family history of {fixed.choice(_FAMILY_NEGATIVES)}")
    if fixed.random() < 0.04:
        return ctx.pick(("Unknown; pt was adopted.", "Adopted, family hx unknown."))
    items = list(dict.fromkeys(items))
    if ctx.rng.random() < 0.5:
        return "; ".join(items) + "."
    return "\n".join(f"- {item}" for item in items)


def _social(ctx: _Ctx) -> str:
    fixed = ctx.fixed("social")
    if ctx.age < 13:
        return (f"Lives with {fixed.choice(('parents', 'mother', 'parents and siblings'))}. "
                f"{'In daycare.' if ctx.age < 5 else 'In school, doing well.'} "
                + ctx.pick(("No smoke exposure.", "No smokers in the home.")))
    smoker = any(d.disease.key in ("copd", "lung-cancer") for d in ctx.course.diagnoses)
    roll = fixed.random() * (0.5 if smoker else 1.0) + (0.5 if smoker else 0.0)
    coded = {d.disease.key for d in ctx.course.diagnoses if d.onset <= ctx.visit.day}
    if "tobacco-use" in coded or "former-smoker" in coded:  # what the record codes wins
        roll = 0.9 if "tobacco-use" in coded else 0.7
    packs, quit = fixed.randint(10, 50), min(fixed.randint(1990, 2022), ctx.visit.day.year)
    if roll < 0.55 or ctx.age < 18:
        tobacco = ctx.pick(("Never smoker.", "Denies tobacco use.", "No tobacco."))
    elif roll < 0.85:
        tobacco = ctx.pick((f"Former smoker, {packs} pack-years, quit in {quit}.",
                            f"Ex-smoker ({packs} pk-yr), quit {quit}."))
    else:
        tobacco = ctx.pick((f"Current smoker, {packs} pack-years.",
                            f"Smokes about a pack a day, {packs} pack-year hx."))
    alcohol = ctx.pick((("Denies EtOH.", "No alcohol use."), ("Drinks socially.",
                        "Occasional glass of wine."), ("2-3 beers on weekends.",
                        "Drinks 3-4 drinks per week."))[fixed.randrange(3)])
    living = fixed.choice(("spouse", "alone", "daughter", "partner and two children",
                           "son and daughter-in-law"))
    living = "Lives alone." if living == "alone" else f"Lives with {living}."
    job = fixed.choice(_JOBS)
    work = (f"Retired {job}." if ctx.age >= 66 else f"Works as {_a(job)}." if ctx.age >= 22
            else "College student." if ctx.age >= 18 else "High school student.")
    return " ".join((tobacco, alcohol, ctx.pick(("Denies illicit drug use.", "No IVDU.")),
                     living, work))


# --- the documents ----------------------------------------------------------------------------
def _history_and_physical(ctx: _Ctx) -> list[str]:
    problems = _problems(ctx)
    emergency = ctx.note.kind == "emergency-note"
    # Current acute problems belong to the HPI; past ones are history.
    past = [f"- {_name(ctx, d.disease)}" + (f" ({d.onset.year}, resolved)" if d.abated else "")
            for d in ctx.prior if d.disease.chronic or (d.abated and d.abated < ctx.visit.day)]
    surgical = [f"s/p {_procedure_name(p)} ({p.day.year})" for v in ctx.course.visits
                if any(n.kind == "operative-report" for n in v.notes)
                for p in v.procedures[:1] if p.day < ctx.visit.day]
    meds = [f"- {_drug(ctx, d)}" for d in _medications(ctx.course, ctx.visit.day)]
    allergies = [f"{a.display} ({_display_name(a.reaction_display)})"
                 for a in ctx.course.allergies]
    complaint = (ctx.fill(ctx.pick(ctx.phrasing(problems[0]).complaint), problems[0])
                 if problems else _purpose(ctx) or "routine exam")
    if ctx.visit.kind == "surgery" and problems and ctx.visit.procedures:
        complaint = f"Planned {_procedure_name(ctx.visit.procedures[0])}"
    sections = [
        ("CHIEF COMPLAINT", _cap(complaint)),
        ("HISTORY OF PRESENT ILLNESS", _hpi(ctx, problems)),
        ("PAST MEDICAL HISTORY", past or [ctx.pick(("None", "No significant PMH"))]),
        ("PAST SURGICAL HISTORY", "; ".join(surgical) or ctx.pick(("None", "No prior "
                                                                     "surgeries"))),
        ("MEDICATIONS", meds or [ctx.pick(("None", "No regular medications"))]),
        ("ALLERGIES", "; ".join(allergies) or ctx.pick(("NKDA", "No known drug allergies"))),
        ("FAMILY HISTORY", _family(ctx)), ("SOCIAL HISTORY", _social(ctx)),
        ("REVIEW OF SYSTEMS", _ros(ctx, problems)),
        ("PHYSICAL EXAM", _exam(ctx, problems)), ("LABS AND DATA", _labs(ctx)),
    ]
    if emergency:
        ed = (ctx.fill(ctx.pick(ctx.phrasing(problems[0]).ed), problems[0]) if problems
              else "Pt evaluated; no acute findings.")
        sections.append(("ED COURSE", ed + " " + ctx.pick(("Reassessed, resting comfortably.",
                                                           "On reassessment, improved."))))
    sections.append(("ASSESSMENT AND PLAN", _assessment_and_plan(ctx, problems, False)))
    if emergency:
        admitted = ctx.visit.encounter_class in (INPATIENT, OBSERVATION) or ctx.visit.days > 0
        sections.append(("DISPOSITION", ctx.pick((
            "Admit to medicine for further management.", "Admitted to the hospitalist "
            "service; pt and family agree with plan.")) if admitted else ctx.pick((
                "Discharged home in stable condition with return precautions.",
                "Home; strict return precautions reviewed, pt verbalized understanding."))))
    return [_section(h, b) for h, b in sections]


def _progress_note(ctx: _Ctx) -> list[str]:
    problems = _problems(ctx)
    inpatient = ctx.visit.encounter_class in (INPATIENT, OBSERVATION)
    subjective = _hpi(ctx, problems)
    if inpatient:
        day = ctx.rng.randint(1, max(1, ctx.visit.days))
        subjective = f"HD #{day + 1}. " + ctx.pick(("No acute events overnight. ",
                                                     "Slept well, pain controlled. ")) \
            + subjective
    positives = {p for d in problems for p in ctx.phrasing(d).positives}
    negations = [text for text, symptoms in (
        ("Denies CP, SOB.", ("chest pain", "shortness of breath")),
        ("No fevers or chills.", ("fevers", "chills")),
        ("Denies CP, SOB, n/v.", ("chest pain", "shortness of breath", "nausea")),
        ("Denies headache or dizziness.", ("headache",))) if not positives & set(symptoms)]
    subjective += " " + ctx.pick(negations)
    purpose = _purpose(ctx)
    assessment = ([ctx.note.findings] if ctx.note.findings else []) + (
        [_cap(purpose) + "."] if purpose else []) + [
        f"{i}. {_status(ctx, d, True)}" for i, d in enumerate(problems, 1)]
    assessment = assessment or [ctx.pick(("No active issues.", "No acute issues."))]
    plan = list(dict.fromkeys(f"- {item}" for d in problems for item in _plan(ctx, d))) or [
        "- Follow-up as above" if ctx.note.findings else "- Routine health maintenance"]
    plan.append("- " + ctx.pick(ctx.phrasing(problems[0]).follow if problems
                                else ("RTC in 1 year",)))
    return [_section("SUBJECTIVE", subjective),
            _section("OBJECTIVE", _exam(ctx, problems, brief=True) + [_labs(ctx)]),
            _section("ASSESSMENT", assessment), _section("PLAN", plan)]


def _discharge_summary(ctx: _Ctx) -> list[str]:
    visit, problems = ctx.visit, _problems(ctx)
    discharged = visit.day + timedelta(days=visit.days)
    principal = problems[0] if problems else None
    secondary = problems[1:]
    # The discharge diagnoses are everything coded for the stay, each once.
    coded = [d for d in dict.fromkeys(visit.secondary + secondary)
             if not _is_visit_reason(d) and (principal is None or d != principal)]
    expired = visit.discharge == "expired"
    procedures = [f"{_cap(_procedure_name(p))} ({_day(p.day)})" for p in
                  visit.procedures] or ["None"]
    course = []
    if principal:
        phrasing = ctx.phrasing(principal)
        course.append(f"{_who(ctx)} admitted with {_name(ctx, principal)}. " +
                      " ".join(ctx.fill(s, principal) for s in phrasing.course[:1]))
    for disease in secondary:
        course.append(f"- {_name(ctx, disease)}: " + ctx.pick((
            "home regimen continued.", "stable during admission.",
            "monitored, no changes made.")))
    if ctx.note.findings:
        course.append(ctx.note.findings)
    if expired:
        course.append(ctx.pick(("Despite maximal therapy the pt's condition declined. After "
                                "goals-of-care discussion with family, pt was transitioned to "
                                "comfort care", "Pt's condition deteriorated; code status was "
                                "changed to DNR/comfort measures after family meeting")) +
                      f" and expired on {_day(discharged)}.")
    home = _medications(ctx.course, visit.day)
    new = [d for d, _ in visit.orders if all(d.rxnorm != h.rxnorm for h in home)]
    meds = ([f"- {_drug(ctx, d)}" for d in home] + [f"- {_drug(ctx, d)} (NEW)" for d in new]
            or ["None"])
    disposition = DISPOSITIONS.get(visit.discharge or "home", visit.discharge or "Home")
    follow = (["None"] if expired else [f"- {f}" for f in (
        ctx.phrasing(principal).follow if principal else ("PCP in 1-2 weeks",))])
    condition = "Expired" if expired else ctx.pick(("Stable", "Improved, stable",
                                                     "Good; ambulating, tolerating diet"))
    return [
        _section("ADMISSION DATE", _day(visit.day)),
        _section("DISCHARGE DATE", f"{_day(discharged)} (LOS {visit.days} "
                 f"{'day' if visit.days == 1 else 'days'})"),
        _section("ADMITTING DIAGNOSIS", _name(ctx, principal) if principal else "See below"),
        _section("DISCHARGE DIAGNOSES", [f"Principal: {_name(ctx, principal)}" if principal
                                         else "Principal: none documented"] +
                 [f"Secondary: {_name(ctx, d)}" for d in coded]),
        _section("PROCEDURES", procedures),
        _section("HISTORY OF PRESENT ILLNESS", _hpi(ctx, problems[:1])),
        _section("HOSPITAL COURSE", "\n\n".join(course) or "Uncomplicated."),
        _section("CONDITION AT DISCHARGE", condition),
        _section("DISPOSITION", disposition), _section("DISCHARGE MEDICATIONS", meds),
        _section("FOLLOW-UP", follow)]


# --- procedures ------------------------------------------------------------------------------
def _procedure_name(procedure: Procedure) -> str:
    name, site = _display_name(procedure.code.snomed_display), procedure.body_site
    if not site or site.lower() in name.lower():
        return name
    for word in re.findall(r"[a-z]{3,}", site.lower()):
        if word in ("and", "the", "skin"):
            continue
        if re.search(rf"\b{word}\b", name, re.I):
            return re.sub(rf"\b{word}\b", lambda _: site, name, count=1, flags=re.I)
    return f"{name}, {site}"


def _tumor_size(ctx: _Ctx, disease: Disease | None, findings: str) -> str | None:
    """The size the diagnosis states, or one within its pT category; None when unknown."""
    stated = re.search(r"(\d+(?:\.\d+)?) ?cm", findings)
    if stated:
        return stated.group(1)
    category = re.search(r"pT(\d)", findings)
    ranges = {"breast-cancer": ((0.6, 2.0), (2.1, 4.9), (5.1, 7.5), (2.5, 8.0)),
              "lung-cancer": ((0.8, 3.0), (3.1, 5.0), (5.1, 7.0), (7.1, 9.0))}
    if category and disease and disease.key in ranges and 1 <= int(category.group(1)) <= 4:
        low, high = ranges[disease.key][int(category.group(1)) - 1]
        return _num(round(ctx.rng.uniform(low, high), 1))
    return None


def _margin(findings: str, distance: str) -> str:
    if "at the inked margin" in findings or "margin positive" in findings.lower():
        return "grossly abutting the inked margin"
    stated = re.search(r"closest margin (\d+) mm", findings)
    return f"{_num(int(stated.group(1)) / 10) if stated else distance} cm from the closest margin"


def _operation(text: str) -> Operation:
    lowered = text.lower()
    return next((op for op in OPERATIONS if any(w in lowered for w in op.words)),
                GENERIC_OPERATION)


def _subject(ctx: _Ctx) -> tuple[str, Procedure | None]:
    """What an operative or pathology report is about: note.about or the visit's procedure."""
    about = ctx.note.about
    for procedure in ctx.visit.procedures:
        code = procedure.code
        if about in (None, code.key, code.snomed, code.snomed_display, code.icd10pcs_display,
                     code.hcpcs_display):
            return _procedure_name(procedure), procedure
    if about and " " not in about and "-" in about:
        about = about.replace("-", " ")
    return (about or "procedure"), None


def _measures(ctx: _Ctx) -> dict[str, str]:
    size = sorted((round(ctx.rng.uniform(1.5, 12.0), 1) for _ in range(3)), reverse=True)
    return {"a": _num(size[0]), "b": _num(size[1]), "c": _num(size[2]),
            "t": _num(round(ctx.rng.uniform(0.8, 4.5), 1)),
            "m": _num(round(ctx.rng.uniform(0.2, 2.5), 1)), "w": str(ctx.rng.randint(30, 180)),
            "n": str(ctx.rng.randint(3, 6))}


def _specimen_slots(ctx: _Ctx, disease: Disease | None, procedure: Procedure | None
                    ) -> dict[str, str]:
    slots = {**ctx.slots(disease), **_measures(ctx)}
    findings = ctx.note.findings or ""
    slots["t"] = _tumor_size(ctx, disease, findings) or slots["t"]
    slots["margin"] = _margin(findings, slots["m"])
    organs = {"breast-cancer": f"{slots['side']} breast", "lung-cancer": f"lung, {slots['lobe']}",
              "prostate-cancer": "prostate", "colorectal-cancer": slots["site"],
              "melanoma": f"skin, {slots['site']}"}
    slots["where"] = (procedure.body_site if procedure and procedure.body_site else
                      organs.get(disease.key, "tissue") if disease else "tissue")
    return slots


def _operative_report(ctx: _Ctx) -> list[str]:
    name, procedure = _subject(ctx)
    disease = (procedure.reason if procedure and procedure.reason else ctx.focus)
    op = _operation(name)
    slots = _specimen_slots(ctx, disease, procedure)
    diagnosis = _name(ctx, disease) if disease else ctx.pick(("See H&P", "As above"))
    first = ctx.pick(FEMALE_NAMES + MALE_NAMES)
    assistant = ctx.pick((f"{first} {ctx.pick(FAMILY_NAMES)}, PA-C",
                          f"Dr. {first[0]}. {ctx.pick(FAMILY_NAMES)} (resident)", "None"))
    specimen = op.specimen.format_map(slots)
    if any(w in name.lower() for w in ("fixation", "nail", "pinning")):
        specimen = ""
    opening = ctx.pick(("The patient was identified in the preoperative area and consent "
                        "confirmed.", "Informed consent was verified."))
    if op.open:
        steps = ("The pt was brought to the OR and placed supine; anesthesia was induced. A "
                 "time-out was performed confirming pt, procedure and site. The operative "
                 "field was prepped and draped in the usual sterile fashion. "
                 f"{op.steps.format_map(slots)} Hemostasis was confirmed. The wounds were "
                 "closed and dressed. " + ctx.pick((
                     "Sponge, needle and instrument counts were correct x2.",
                     "All counts correct at the end of the case.")))
    else:
        steps = ("A time-out was performed. Sedation was administered and monitored "
                 f"throughout. {op.steps.format_map(slots)}")
    closing = ctx.pick(("The pt tolerated the procedure well and was taken to PACU in stable "
                        "condition.", "Pt was transferred to recovery in stable condition."))
    return [
        _section("DATE OF OPERATION", _day(procedure.day if procedure else ctx.visit.day)),
        _section("PREOPERATIVE DIAGNOSIS", diagnosis),
        _section("POSTOPERATIVE DIAGNOSIS", ctx.pick(("Same", diagnosis))),
        _section("PROCEDURE", _cap(name)), _section("SURGEON", ctx.author),
        _section("ASSISTANT", assistant), _section("ANESTHESIA", ctx.pick(op.anesthesia)),
        _section("INDICATIONS", f"{_who(ctx)} with {diagnosis}; risks, benefits and "
                 "alternatives discussed and consent obtained."),
        _section("FINDINGS", ctx.note.findings or op.findings.format_map(slots)),
        _section("ESTIMATED BLOOD LOSS", "Minimal" if not op.open else
                 f"{ctx.rng.choice((10, 25, 50, 100, 150, 200))} mL"),
        _section("SPECIMENS", f"{_cap(specimen)} to pathology" if specimen else "None"),
        _section("COMPLICATIONS", ctx.pick(("None", "None apparent"))),
        _section("DESCRIPTION OF PROCEDURE", f"{opening} {steps} {closing}")]


_CANCERS = ("breast-cancer", "lung-cancer", "colorectal-cancer", "prostate-cancer", "melanoma")
_HISTOLOGY = {"breast-cancer": "Invasive ductal carcinoma (no special type)",
              "lung-cancer": "Adenocarcinoma, acinar predominant",
              "colorectal-cancer": "Adenocarcinoma", "prostate-cancer": "Acinar adenocarcinoma",
              "melanoma": "Invasive melanoma, superficial spreading type"}


def _pathology_report(ctx: _Ctx) -> list[str]:
    name, procedure = _subject(ctx)
    disease = procedure.reason if procedure and procedure.reason else ctx.focus
    op = _operation(name)
    slots = _specimen_slots(ctx, disease, procedure)
    specimen = op.specimen.format_map(slots) or "tissue as labeled"
    cancer = disease is not None and disease.key in _CANCERS
    history = (f"{_who(ctx)} with {_name(ctx, disease)}" if disease
               else f"{_who(ctx)}; {name}")
    gross = (f"Received {ctx.pick(('fresh', 'in formalin'))}, labeled with the patient's name "
             f"and MRN and \"{specimen}\", is {op.gross.format_map(slots)}. "
             f"Representative sections are submitted in cassettes A1-A{ctx.rng.randint(4, 14)}.")
    if ctx.note.findings:
        microscopic = ("Sections show the lesion described in the final diagnosis. "
                       "Immunohistochemical stains with appropriate controls support "
                       "the diagnosis." if cancer else
                       "Sections show findings as summarized in the final diagnosis.")
        final = ctx.note.findings
    elif cancer and disease:
        histology = _HISTOLOGY[disease.key]
        grade = ctx.rng.randint(1, 3)
        microscopic = (f"Sections show {histology.lower()}, grade {grade}, infiltrating "
                       "the surrounding tissue. No lymphovascular invasion identified.")
        final = f"{histology}, grade {grade}; margins negative."
    else:
        microscopic = ctx.pick(("Sections show benign tissue with reactive changes. No "
                                "dysplasia or malignancy.", "No evidence of malignancy."))
        final = "Benign tissue; no evidence of malignancy."
    lines = [_section("SPECIMEN", f"A. {_cap(specimen)} ({name})"),
             _section("CLINICAL HISTORY", history),
             _section("GROSS DESCRIPTION", gross),
             _section("MICROSCOPIC DESCRIPTION", microscopic),
             _section("FINAL DIAGNOSIS", f"A. {name.upper()}:\n   - {final}")]
    if cancer and op.open:  # a resection, not a biopsy
        size = _tumor_size(ctx, disease, ctx.note.findings or "") or (
            None if ctx.note.findings else slots["t"])
        synoptic = [f"Procedure: {name}", f"Specimen laterality: {slots['side']}"
                    if disease and disease.key in ("breast-cancer", "lung-cancer") else
                    "Specimen laterality: not applicable"]
        synoptic += [f"Tumor size: {size} cm"] if size else []
        if not ctx.note.findings:
            synoptic += ["Margins: uninvolved by invasive carcinoma; closest margin "
                         f"{slots['m']} cm", "Lymphovascular invasion: not identified"]
        lines.append(_section("SYNOPTIC REPORT (CAP protocol)", [f"  {s}" for s in synoptic]))
    return lines


# --- radiology -------------------------------------------------------------------------------
_MODALITY_TECHNIQUE = (
    (("ct",), "Axial CT images were obtained{contrast}. Coronal and sagittal reformats were "
     "reviewed. Dose reduction techniques were used."),
    (("mri", "mr "), "Multiplanar multisequence MR images were obtained{contrast}."),
    (("mammo",), "Full-field digital mammography with tomosynthesis; CC and MLO views and "
     "spot compression."),
    (("ultrasound", "us "), "Grayscale and color Doppler ultrasound images were obtained."),
    (("pet",), "FDG PET/CT from skull base to mid-thigh after 60 min uptake."),
    (("echo",), "Transthoracic 2D, M-mode, color and spectral Doppler echocardiography."),
    (("x-ray", "xr", "radiograph"), "Frontal and lateral radiographs were obtained."),
)
_REGION_NORMAL = {
    "chest": ("Lungs are clear. No effusion or pneumothorax. Cardiomediastinal silhouette "
              "within normal limits.", "No acute cardiopulmonary process."),
    "hip": ("No acute fracture or dislocation. Joint spaces preserved.",
            "No acute osseous abnormality."),
    "abdomen": ("Liver, spleen, pancreas and kidneys unremarkable. No free fluid or "
                "lymphadenopathy. Bowel nondilated.", "No acute abdominopelvic process."),
    "breast": ("Scattered fibroglandular density. No suspicious mass or calcifications.",
               "BI-RADS 1: negative."),
    "head": ("No hemorrhage, mass effect or acute territorial infarct.",
             "No acute intracranial abnormality."),
}


def _region(text: str) -> str:
    lowered = text.lower()
    for region, words in (("chest", ("chest", "lung", "thorax", "cxr")),
                          ("hip", ("hip", "femur", "pelvis x")),
                          ("breast", ("breast", "mammo")), ("head", ("head", "brain")),
                          ("abdomen", ("abdomen", "pelvis", "colon"))):
        if any(w in lowered for w in words):
            return region
    return "other"


def _radiology_report(ctx: _Ctx) -> list[str]:
    disease, findings_given = ctx.focus, ctx.note.findings
    imaging = ctx.phrasing(disease).imaging if disease else None
    study = ctx.note.about or (ctx.fill(imaging[0], disease) if imaging
                               else "Chest X-ray, 2 views")
    matches = imaging is not None and _region(study) == _region(ctx.fill(imaging[0], disease))
    lowered = f" {study} {findings_given or ''}".lower()
    technique = "Images were obtained per departmental protocol."
    for words, text in _MODALITY_TECHNIQUE:
        if any(f" {w}" in lowered or f"{w}-" in lowered for w in words):
            technique = text.format(contrast=" after IV contrast" if "with contrast" in lowered
                                    else " without IV contrast")
            break
    if findings_given:
        findings = findings_given
        impression = ctx.pick((findings_given, findings_given.split(". ")[0].rstrip(".") + "."))
    elif imaging and matches:
        findings, impression = ctx.fill(imaging[1], disease), ctx.fill(imaging[2], disease)
    else:
        findings, impression = _REGION_NORMAL.get(_region(study), (
            "No acute abnormality identified.", "No acute findings."))
    extra = [f"{_LAB_LABELS.get(m.loinc, _lab_label(m.display))} {_quantity(v, m.unit)}."
             for m, v in ctx.visit.results if m.category == "imaging" and not isinstance(
                 v, tuple)]
    indication = (ctx.pick(("Eval for ", "r/o ", "Hx of ", "Assess ")) + _name(ctx, disease)
                  if disease else _purpose(ctx) or "Screening")
    earlier = [v.day for v in ctx.course.visits if v.day < ctx.visit.day and any(
        n.kind == "radiology-report" for n in v.notes)]
    comparison = (f"Prior study dated {_day(earlier[-1])}." if earlier
                  else ctx.pick(("None.", "None available.")))
    return [_section("EXAM", _cap(study)), _section("INDICATION", _cap(indication)),
            _section("COMPARISON", comparison), _section("TECHNIQUE", technique),
            _section("FINDINGS", " ".join([findings] + extra)),
            _section("IMPRESSION", f"1. {impression}")]


_WRITERS = {"history-and-physical": _history_and_physical, "emergency-note":
            _history_and_physical, "progress-note": _progress_note,
            "discharge-summary": _discharge_summary, "operative-report": _operative_report,
            "pathology-report": _pathology_report, "radiology-report": _radiology_report}


def write_note(rng: random.Random, person: Person, course: Course, visit: Visit, note: Note,
               author: str, *, signed: bool = True) -> str:
    """The plain-text document ``note`` for ``visit``, in the voice of ``author``; an
    unsigned one (a chart deficiency) ends awaiting the author's signature."""
    note_loinc(note)  # raises UnknownNoteKind before any random draw
    ctx = _Ctx(rng, person, course, visit, note, author)
    body = _WRITERS[note.kind](ctx)
    day = (visit.day + timedelta(days=visit.days) if note.kind == "discharge-summary"
           else visit.day)
    closing = _signature(ctx, day) if signed else _unsigned(ctx, day)
    return "\n".join(_header(ctx) + body + [closing]) + "\n"


def _unsigned(ctx: _Ctx, day: date) -> str:
    return ctx.pick((f"Dictated by {ctx.author} on {_day(day)}. Not yet signed.",
                     f"{ctx.author}\nPending signature (dictated {_day(day)})",
                     f"Preliminary - awaiting authentication by {ctx.author}."))
