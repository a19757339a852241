"""Cancer modules: who is diagnosed with breast, lung, colorectal or prostate cancer or melanoma
in the record window, and the screening, biopsy, staging, treatment and follow-up that follow."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from chartkeeper.synth.course import (
    AMBULATORY,
    INPATIENT,
    Diagnosis,
    Disease,
    Drug,
    Measure,
    Module,
    ModuleOutput,
    Note,
    Procedure,
    ProcedureCode,
    Visit,
    Window,
)
from chartkeeper.synth.people import Person

# --- incidence ----------------------------------------------------------------------------
# Annual age-specific incidence per 100,000, by sex: (lowest age, age after the band, women,
# men). Source: SEER*Explorer, SEER 22 registries (excluding Illinois and Massachusetts),
# 2017-2021, all races and ethnicities, invasive cases, age-specific rates by 5-year age group
# (National Cancer Institute), rounded to about two significant figures. The figures were
# transcribed without a copy of the table at hand and are all unverified: a search of stored
# copies of SEER*Explorer and the SEER Cancer Stat Facts pages (breast, lung, colorectal,
# prostate, melanoma) did not turn up the age-specific tables, so not one band has been
# re-read. Check them against SEER*Explorer before using the generator for epidemiology.
# Ages below the first band get no cancer of that kind.
IncidenceBands = tuple[tuple[int, int, float, float], ...]

# Female breast; male breast cancer is about 1% of breast cancers (SEER 2017-2021 age-adjusted
# 1.3 per 100,000 men against 129 per 100,000 women; unverified), modelled as that share of
# each band.
BREAST_BY_AGE: IncidenceBands = (
    (20, 25, 1.5, 0.0), (25, 30, 7.5, 0.0), (30, 35, 24.0, 0.2), (35, 40, 52.0, 0.4),
    (40, 45, 114.0, 0.9), (45, 50, 184.0, 1.4), (50, 55, 203.0, 1.9), (55, 60, 235.0, 2.5),
    (60, 65, 300.0, 3.4), (65, 70, 383.0, 4.3), (70, 75, 438.0, 5.3), (75, 80, 432.0, 6.0),
    (80, 85, 389.0, 6.5), (85, 200, 326.0, 6.5))
# Lung and bronchus.
LUNG_BY_AGE: IncidenceBands = (
    (20, 30, 0.5, 0.5), (30, 35, 1.0, 1.0), (35, 40, 2.5, 2.3), (40, 45, 7.0, 6.0),
    (45, 50, 17.0, 15.0), (50, 55, 38.0, 38.0), (55, 60, 74.0, 85.0), (60, 65, 125.0, 150.0),
    (65, 70, 195.0, 240.0), (70, 75, 265.0, 330.0), (75, 80, 300.0, 390.0),
    (80, 85, 290.0, 400.0), (85, 200, 220.0, 340.0))
# Colon and rectum.
COLORECTAL_BY_AGE: IncidenceBands = (
    (20, 25, 1.3, 1.3), (25, 30, 2.8, 2.8), (30, 35, 5.5, 5.5), (35, 40, 10.0, 10.0),
    (40, 45, 17.0, 19.0), (45, 50, 30.0, 36.0), (50, 55, 46.0, 62.0), (55, 60, 53.0, 78.0),
    (60, 65, 63.0, 94.0), (65, 70, 80.0, 115.0), (70, 75, 110.0, 150.0),
    (75, 80, 150.0, 195.0), (80, 85, 190.0, 240.0), (85, 200, 230.0, 265.0))
# Prostate (men only).
PROSTATE_BY_AGE: IncidenceBands = (
    (40, 45, 0.0, 8.0), (45, 50, 0.0, 35.0), (50, 55, 0.0, 120.0), (55, 60, 0.0, 290.0),
    (60, 65, 0.0, 520.0), (65, 70, 0.0, 780.0), (70, 75, 0.0, 830.0), (75, 80, 0.0, 680.0),
    (80, 85, 0.0, 520.0), (85, 200, 0.0, 420.0))
# Melanoma of the skin.
MELANOMA_BY_AGE: IncidenceBands = (
    (15, 20, 1.5, 1.5), (20, 25, 6.0, 3.0), (25, 30, 11.0, 6.0), (30, 35, 15.0, 9.0),
    (35, 40, 19.0, 13.0), (40, 45, 23.0, 18.0), (45, 50, 27.0, 26.0), (50, 55, 31.0, 36.0),
    (55, 60, 34.0, 50.0), (60, 65, 38.0, 68.0), (65, 70, 44.0, 92.0), (70, 75, 52.0, 120.0),
    (75, 80, 57.0, 150.0), (80, 85, 60.0, 170.0), (85, 200, 60.0, 180.0))


def _annual_incidence(bands: IncidenceBands, age: int, gender: str) -> float:
    for low, high, women, men in bands:
        if low <= age < high:
            return (men if gender == "male" else women) / 100_000
    return 0.0


def breast_cancer_incidence(age: int, gender: str) -> float:
    """Annual probability of a first diagnosis of invasive breast cancer at ``age``."""
    return _annual_incidence(BREAST_BY_AGE, age, gender)


def lung_cancer_incidence(age: int, gender: str) -> float:
    return _annual_incidence(LUNG_BY_AGE, age, gender)


def colorectal_cancer_incidence(age: int, gender: str) -> float:
    return _annual_incidence(COLORECTAL_BY_AGE, age, gender)


def prostate_cancer_incidence(age: int, gender: str) -> float:
    return _annual_incidence(PROSTATE_BY_AGE, age, gender)


def melanoma_incidence(age: int, gender: str) -> float:
    return _annual_incidence(MELANOMA_BY_AGE, age, gender)


Incidence = Callable[[int, str], float]


def window_years(person: Person, window: Window) -> float:
    """Years of the window the person was alive for (a window may start before birth)."""
    start = max(window.start, person.birth_date)
    return max(0, (window.as_of - start).days) / 365.25


def diagnosis_probability(incidence: Incidence, person: Person, window: Window) -> float:
    """Chance of a diagnosis in the window: the annual incidence at the person's age in the
    middle of the window times the window's years."""
    years = window_years(person, window)
    start = max(window.start, person.birth_date)
    middle = start + timedelta(days=round(years * 365.25 / 2))
    return min(1.0, incidence(person.age_on(middle), person.gender) * years)


# --- stage at diagnosis -------------------------------------------------------------------
# SEER summary stage at diagnosis (localized, regional, distant), SEER Cancer Stat Facts,
# SEER 22, 2014-2020 (percent of cases): breast (female) 66/27/6, lung and bronchus 27/22/45,
# colon and rectum 36/36/22, prostate 70/13/8, melanoma of the skin 77/9/4. Cases of
# unknown stage (1-10%) are not modelled: the three shares are used as weights.
# (unverified: typed from memory; the Stat Facts pages' stage tables were not found in a
# search of stored copies.) Other sources found are only roughly consistent and use other
# data: CDC U.S. Cancer Statistics Stat Bites (USCS, not SEER 22) give breast 2015-2019 about
# 2 in 3 localized, 1 in 4 regional, 6% distant
# (https://www.cdc.gov/cancer/uscs/about/stat-bites/stat-bite-breast.htm) and colorectal
# 2016-2020 about 1 in 3 / almost 4 in 10 / about 2 in 10
# (https://www.cdc.gov/cancer/uscs/about/stat-bites/stat-bite-colorectal.htm); USCS Data
# Brief No. 34 gives 70% of 2019 prostate cancers localized
# (https://www.cdc.gov/cancer/uscs/about/data-briefs/no34-prostate-cancer-incidence-2001-2019.htm).
STAGE_SHARES: dict[str, tuple[float, float, float]] = {
    "breast-cancer": (66.0, 27.0, 6.0),
    "lung-cancer": (27.0, 22.0, 45.0),
    "colorectal-cancer": (36.0, 36.0, 22.0),
    "prostate-cancer": (70.0, 13.0, 8.0),
    "melanoma": (77.0, 9.0, 4.0),
}
EXTENTS = ("localized", "regional", "distant")
# Five-year relative survival of distant-stage cases (SEER Cancer Stat Facts, SEER 22,
# 2014-2020): lung 9% (re-read only at second hand: Statista, "Five-year survival rates for
# lung and bronchus cancer in the United States from 2014 to 2020, by stage at diagnosis",
# SEER 22 2014-2020, distant 9%, https://statista.com/statistics/465780/; and 8.9% distant in
# https://www.gilmorehealth.com/lung-and-bronchus-cancer-stats-comprehensive-data-on-incidence-mortality-5-year-survival-rates-by-stage-at-diagnosis-prevalence-trends-and-racial-gender-disparities-across-the-u-s/).
# Breast 32%, colorectal 15%, prostate 34%, melanoma 35% (unverified: typed from memory; the
# Stat Facts pages were not found). Nearby figures from other data, for orientation only:
# melanoma distant about 37% for cases diagnosed 2014 and later (Tonorezos E et al., JNCI
# Stat Bite, J Natl Cancer Inst 117(1):203, https://academic.oup.com/jnci/article/117/1/203/7950706,
# from SEER*Explorer); prostate distant 32.3% for 2011-2016 (Siegel DA et al., MMWR
# 2020;69(41):1473-80, https://www.cdc.gov/mmwr/volumes/69/wr/mm6941a1.htm, USCS data).
# Survival is drawn from the exponential with that five-year survival; only distant-stage
# cases die here.
DISTANT_FIVE_YEAR_SURVIVAL: dict[str, float] = {
    "breast-cancer": 0.32, "lung-cancer": 0.09, "colorectal-cancer": 0.15,
    "prostate-cancer": 0.34, "melanoma": 0.35,
}


@dataclass(frozen=True)
class Stage:
    """AJCC 8th edition T, N, M and stage group with the SEER Summary Stage 2018 code
    (1 localized, 2 regional by direct extension, 3 regional nodes, 4 both, 7 distant)."""

    t: str
    n: str
    m: str
    group: str
    summary: str


def _weighted(rng: random.Random, options: Sequence[tuple[float, Stage]]) -> Stage:
    return rng.choices([stage for _, stage in options], weights=[w for w, _ in options])[0]


# --- shared codes -------------------------------------------------------------------------
CHEMO_ENCOUNTER = Disease("chemotherapy-encounter", "Z51.11",
                          "Encounter for antineoplastic chemotherapy",
                          "367336001", "Chemotherapy (procedure)", chronic=False)
IMMUNO_ENCOUNTER = Disease("immunotherapy-encounter", "Z51.12",
                           "Encounter for antineoplastic immunotherapy",
                           "76334006", "Immunotherapy (procedure)", chronic=False)
RADIATION_ENCOUNTER = Disease("radiation-encounter", "Z51.0",
                              "Encounter for antineoplastic radiation therapy", "33195004",
                              "External beam radiation therapy procedure (procedure)",
                              chronic=False)
PALLIATIVE_CARE = Disease("palliative-care", "Z51.5", "Encounter for palliative care",
                          "103735009", "Palliative care (regime/therapy)", chronic=False)
SMOKER = Disease("tobacco-use", "F17.210", "Nicotine dependence, cigarettes, uncomplicated",
                 "449868002", "Smokes tobacco daily (finding)")
FORMER_SMOKER = Disease("former-smoker", "Z87.891", "Personal history of nicotine dependence",
                        "8517006", "Ex-smoker (finding)")
ER_POSITIVE = Disease("estrogen-receptor-positive", "Z17.0",
                      "Estrogen receptor positive status [ER+]", "416053008",
                      "Estrogen receptor positive tumor (disorder)")
HISTORY_SNOMED = ("266987004", "History of malignant neoplasm (situation)")
# Secondary (metastatic) sites take the general SNOMED CT concept; ICD-10-CM names the site.
SECONDARY_SNOMED = ("128462008", "Secondary malignant neoplastic disease (disorder)")


def _history(key: str, icd10cm: str, display: str) -> Disease:
    return Disease(f"history-of-{key}", icd10cm, display, *HISTORY_SNOMED)


def _secondary(site: str, icd10cm: str, display: str) -> Disease:
    return Disease(f"secondary-{site}", icd10cm, display, *SECONDARY_SNOMED)


LIVER_METASTASIS = _secondary("liver", "C78.7",
                              "Secondary malignant neoplasm of liver and intrahepatic bile duct")
BONE_METASTASIS = _secondary("bone", "C79.51", "Secondary malignant neoplasm of bone")
BRAIN_METASTASIS = _secondary("brain", "C79.31", "Secondary malignant neoplasm of brain")
LUNG_METASTASIS = _secondary("lung", "C78.00", "Secondary malignant neoplasm of unspecified lung")
PERITONEAL_METASTASIS = _secondary("peritoneum", "C78.6",
                                   "Secondary malignant neoplasm of retroperitoneum and "
                                   "peritoneum")
ADRENAL_METASTASIS = _secondary("adrenal", "C79.70",
                                "Secondary malignant neoplasm of unspecified adrenal gland")
AXILLARY_NODES = _secondary("axillary-nodes", "C77.3", "Secondary and unspecified malignant "
                            "neoplasm of axilla and upper limb lymph nodes")
THORACIC_NODES = _secondary("intrathoracic-nodes", "C77.1", "Secondary and unspecified "
                            "malignant neoplasm of intrathoracic lymph nodes")
ABDOMINAL_NODES = _secondary("intra-abdominal-nodes", "C77.2", "Secondary and unspecified "
                             "malignant neoplasm of intra-abdominal lymph nodes")
PELVIC_NODES = _secondary("intrapelvic-nodes", "C77.5", "Secondary and unspecified malignant "
                          "neoplasm of intrapelvic lymph nodes")
INGUINAL_NODES = _secondary("inguinal-nodes", "C77.4", "Secondary and unspecified malignant "
                            "neoplasm of inguinal and lower limb lymph nodes")
NECK_NODES = _secondary("neck-nodes", "C77.0", "Secondary and unspecified malignant neoplasm "
                        "of lymph nodes of head, face and neck")

CT_SCAN = ProcedureCode("ct-scan", "77477000", "Computerized axial tomography (procedure)")
RADIATION = ProcedureCode(
    "external-beam-radiation", "33195004", "External beam radiation therapy procedure (procedure)",
    hcpcs="G6015", hcpcs_display="Intensity modulated treatment delivery, single or multiple "
    "fields/arcs,via narrow spatially and temporally modulated beams, binary, dynamic mlc, per "
    "treatment session")
SENTINEL_NODE_BIOPSY = ProcedureCode("sentinel-node-biopsy", "396487001",
                                     "Sentinel lymph node biopsy (procedure)")
EXCISION = ProcedureCode("excision", "65801008", "Excision (procedure)")


def _chemo(drug: str, hcpcs: str, hcpcs_display: str, immunotherapy: bool = False
           ) -> ProcedureCode:
    """An infused antineoplastic drug: billed by its HCPCS J-code (CMS 2020 file)."""
    snomed = (("76334006", "Immunotherapy (procedure)") if immunotherapy
              else ("367336001", "Chemotherapy (procedure)"))
    return ProcedureCode(f"infusion-{drug}", *snomed, hcpcs=hcpcs, hcpcs_display=hcpcs_display)


CARBOPLATIN = _chemo("carboplatin", "J9045", "Injection, carboplatin, 50 mg")
PACLITAXEL = _chemo("paclitaxel", "J9267", "Injection, paclitaxel, 1 mg")
FLUOROURACIL = _chemo("fluorouracil", "J9190", "Injection, fluorouracil, 500 mg")
OXALIPLATIN = _chemo("oxaliplatin", "J9263", "Injection, oxaliplatin, 0.5 mg")
LEUCOVORIN = _chemo("leucovorin", "J0640", "Injection, leucovorin calcium, per 50 mg")
BEVACIZUMAB = _chemo("bevacizumab", "J9035", "Injection, bevacizumab, 10 mg")
DOXORUBICIN = _chemo("doxorubicin", "J9000", "Injection, doxorubicin hydrochloride, 10 mg")
CYCLOPHOSPHAMIDE = _chemo("cyclophosphamide", "J9070", "Cyclophosphamide, 100 mg")
DOCETAXEL = _chemo("docetaxel", "J9171", "Injection, docetaxel, 1 mg")
TRASTUZUMAB = _chemo("trastuzumab", "J9355",
                     "Injection, trastuzumab, excludes biosimilar, 10 mg")
PEMETREXED = _chemo("pemetrexed", "J9305", "Injection, pemetrexed, 10 mg")
ETOPOSIDE = _chemo("etoposide", "J9181", "Injection, etoposide, 10 mg")
PEMBROLIZUMAB = _chemo("pembrolizumab", "J9271", "Injection, pembrolizumab, 1 mg", True)
NIVOLUMAB = _chemo("nivolumab", "J9299", "Injection, nivolumab, 1 mg", True)
IPILIMUMAB = _chemo("ipilimumab", "J9228", "Injection, ipilimumab, 1 mg", True)
ATEZOLIZUMAB = _chemo("atezolizumab", "J9022", "Injection, atezolizumab, 10 mg", True)
DURVALUMAB = _chemo("durvalumab", "J9173", "Injection, durvalumab, 10 mg", True)
LEUPROLIDE = ProcedureCode("androgen-deprivation", "169413002", "Hormone therapy (procedure)",
                           hcpcs="J9217",
                           hcpcs_display="Leuprolide acetate (for depot suspension), 7.5 mg")

ANASTROZOLE = Drug("199224", "anastrozole 1 MG Oral Tablet", "1 tablet by mouth once daily")
LETROZOLE = Drug("200064", "letrozole 2.5 MG Oral Tablet", "1 tablet by mouth once daily")
TAMOXIFEN = Drug("198240", "tamoxifen 20 MG Oral Tablet", "1 tablet by mouth once daily")

PSA = Measure("2857-1", "Prostate specific Ag [Mass/volume] in Serum or Plasma", "ng/mL",
              "laboratory")


@dataclass(frozen=True)
class Regimen:
    """A systemic therapy: the drugs given at each visit, how many visits, how far apart."""

    name: str
    drugs: tuple[ProcedureCode, ...]
    visits: int
    every_days: int


# --- the tumour and its plan --------------------------------------------------------------
@dataclass
class Tumor:
    """What the pathologist and the staging work-up establish about one primary cancer."""

    cancer: str  # the module key, e.g. "breast-cancer"
    primary: Disease
    history: Disease  # the Z85 code once treatment is over
    topography: str  # ICD-O-3, e.g. "C504"
    laterality: str  # NAACCR laterality: 0 not paired, 1 right, 2 left, 9 unknown
    site_words: str  # e.g. "right breast, upper outer quadrant"
    histology: str  # ICD-O-3 morphology, e.g. "8500"
    histology_words: str
    grade: str  # NAACCR grade code
    grade_words: str
    extent: str  # "localized", "regional" or "distant"
    stage: Stage
    nodes: Disease | None  # the regional node code when nodes are involved
    metastases: list[Disease] = field(default_factory=list)
    markers: str = ""  # receptors, Gleason score, Breslow depth: what the report adds
    statuses: list[Disease] = field(default_factory=list)  # e.g. Z17.0, coded alongside


@dataclass
class Surgery:
    codes: tuple[ProcedureCode, ...]
    inpatient: bool
    stay: tuple[int, int]  # length of stay, days (low, high)
    body_site: str
    operation_words: str


@dataclass
class Plan:
    """First-course treatment in order: neoadjuvant therapy, surgery, adjuvant therapy,
    radiation (alone, or concurrent with the neoadjuvant or adjuvant regimen), maintenance,
    then endocrine therapy."""

    surgery: Surgery | None = None
    neoadjuvant: Regimen | None = None
    adjuvant: Regimen | None = None
    radiation_weeks: int = 0
    radiation_with: str | None = None  # "neoadjuvant" or "adjuvant" when concurrent
    maintenance: Regimen | None = None
    hormone: Drug | None = None  # an oral endocrine therapy ordered after local treatment
    injections: int = 0  # depot leuprolide every 12 weeks (prostate)


@dataclass
class Presentation:
    """The visits that lead to the biopsy, already coded, and the diagnostic procedure."""

    visits: list[Visit]
    biopsy: ProcedureCode
    biopsy_words: str
    imaging: str | None = None  # what a radiology report at the biopsy visit says
    # A visit that is itself the diagnostic one (a screening colonoscopy that finds and
    # biopsies the mass); the pathology report is added to it.
    diagnostic: Visit | None = None


# --- the course ---------------------------------------------------------------------------
class _Chart:
    """Collects visits and drops any that would end on or after the chart's end (the as-of
    date, or the terminal admission)."""

    def __init__(self, window: Window, end: date) -> None:
        self.window = window
        self.end = end
        self.visits: list[Visit] = []

    def add(self, visit: Visit) -> bool:
        if not (self.window.start <= visit.day and visit.day + timedelta(days=visit.days)
                < self.end):
            return False
        self.visits.append(visit)
        return True


def _days(low: int, high: int, rng: random.Random) -> timedelta:
    return timedelta(days=rng.randint(low, high))


def _survival_days(rng: random.Random, cancer: str) -> int:
    rate = -math.log(DISTANT_FIVE_YEAR_SURVIVAL[cancer]) / 5  # per year
    # At least five weeks, so that the staging work-up precedes any terminal admission.
    return max(35, round(rng.expovariate(rate) * 365.25))


class _Course:
    """Lays out one cancer's visits in time and keeps what the abstract needs."""

    def __init__(self, rng: random.Random, window: Window, tumor: Tumor, end: date) -> None:
        self.rng = rng
        self.chart = _Chart(window, end)
        self.tumor = tumor
        self.coded: list[Disease] = []  # secondary codes known so far (nodes, metastases)
        self.treatment: dict[str, list[str]] = {
            "surgery": [], "chemotherapy": [], "immunotherapy": [], "radiation": [],
            "hormone": []}
        self.surgical_path: dict[str, str] = {}

    @property
    def secondary(self) -> list[Disease]:
        return [*self.coded, *self.tumor.statuses]

    def regimen(self, regimen: Regimen, start: date) -> date:
        """Give every cycle of ``regimen`` from ``start``; return the day after the last."""
        primary = self.tumor.primary
        immuno = [d for d in regimen.drugs if d.snomed == IMMUNO_ENCOUNTER.snomed]
        cytotoxic = [d for d in regimen.drugs if d.snomed != IMMUNO_ENCOUNTER.snomed]
        # A cytotoxic drug makes it a chemotherapy encounter (Z51.11 first); a checkpoint
        # inhibitor given alone is immunotherapy (Z51.12); both are coded when both are given.
        principal = CHEMO_ENCOUNTER if cytotoxic else IMMUNO_ENCOUNTER
        extra = [IMMUNO_ENCOUNTER] if cytotoxic and immuno else []
        day = start
        for cycle in range(1, regimen.visits + 1):
            visit = Visit(day, "chemotherapy", reasons=[primary], principal=principal,
                          secondary=[primary, *self.secondary, *extra],
                          procedures=[Procedure(d, day, primary) for d in regimen.drugs],
                          notes=[Note("progress-note", findings=f"{regimen.name}, cycle "
                                      f"{cycle} of {regimen.visits}.")])
            if self.chart.add(visit):
                if cytotoxic:
                    self.treatment["chemotherapy"].append(day.isoformat())
                if immuno:
                    self.treatment["immunotherapy"].append(day.isoformat())
            day += timedelta(days=regimen.every_days)
        return day

    def radiation(self, weeks: int, start: date) -> date:
        """One visit per treatment week stands for that week's daily fractions."""
        primary = self.tumor.primary
        for week in range(weeks):
            day = start + timedelta(weeks=week)
            visit = Visit(day, "radiation", reasons=[primary], principal=RADIATION_ENCOUNTER,
                          secondary=[primary, *self.secondary],
                          procedures=[Procedure(RADIATION, day, primary,
                                                self.tumor.site_words)],
                          notes=[Note("progress-note", findings=f"Radiation therapy, week "
                                      f"{week + 1} of {weeks}.")])
            if self.chart.add(visit):
                self.treatment["radiation"].append(day.isoformat())
        return start + timedelta(weeks=weeks)

    def systemic(self, regimen: Regimen, start: date, radiation_weeks: int) -> date:
        """A regimen, with radiation running alongside when ``radiation_weeks``."""
        done = self.regimen(regimen, start)
        if radiation_weeks:
            done = max(done, self.radiation(radiation_weeks, start))
        return done

    def surgery(self, surgery: Surgery, day: date) -> date:
        tumor, rng = self.tumor, self.rng
        stay = rng.randint(*surgery.stay) if surgery.inpatient else 0
        margin_clear = rng.random() < 0.92
        margins = (f"Margins negative for tumor; closest margin {rng.randint(2, 9)} mm."
                   if margin_clear else "Tumor present at the inked margin.")
        report = (f"{surgery.operation_words}: {tumor.histology_words}, {tumor.grade_words}. "
                  f"{margins} Pathologic stage p{tumor.stage.t} p{tumor.stage.n}.")
        procedure_words = surgery.codes[0].snomed_display
        visit = Visit(day, "surgery", encounter_class=INPATIENT if surgery.inpatient
                      else AMBULATORY, days=stay, reasons=[tumor.primary],
                      principal=tumor.primary, secondary=self.secondary,
                      procedures=[Procedure(code, day, tumor.primary, surgery.body_site)
                                  for code in surgery.codes],
                      notes=[Note("history-and-physical"),
                             Note("operative-report", procedure_words,
                                  f"{surgery.operation_words}, {surgery.body_site}."),
                             Note("pathology-report", procedure_words, report)],
                      discharge="home" if surgery.inpatient else None)
        if surgery.inpatient:
            visit.notes.append(Note("discharge-summary"))
        if self.chart.add(visit):
            self.treatment["surgery"].append(day.isoformat())
            self.surgical_path = {"t": tumor.stage.t, "n": tumor.stage.n}
        return day + timedelta(days=stay)


def _build(rng: random.Random, person: Person, window: Window, diagnosed_on: date,
           tumor: Tumor, presentation: Presentation, plan: Plan) -> ModuleOutput:
    death: date | None = None
    end = window.as_of
    if tumor.extent == "distant":
        candidate = diagnosed_on + timedelta(days=_survival_days(rng, tumor.cancer))
        if candidate < window.as_of:
            death = candidate
            end = death - _days(3, 10, rng)  # the terminal admission
    course = _Course(rng, window, tumor, end)
    chart, primary = course.chart, tumor.primary
    for visit in presentation.visits:
        chart.add(visit)

    # Diagnosis: the biopsy, dated as the registrar dates it (the specimen's day).
    pathology = (f"{presentation.biopsy_words}, {tumor.site_words}: {tumor.histology_words}, "
                 f"{tumor.grade_words}. {tumor.markers}").strip()
    pathology_note = Note("pathology-report", presentation.biopsy.snomed_display, pathology)
    if presentation.diagnostic is not None:
        biopsy = presentation.diagnostic
        biopsy.notes.append(pathology_note)
        biopsy.secondary.extend(tumor.statuses)
    else:
        notes = [Note("progress-note"), pathology_note]
        if presentation.imaging:
            notes.insert(1, Note("radiology-report", "image guidance", presentation.imaging))
        biopsy = Visit(diagnosed_on, "procedure", reasons=[primary], principal=primary,
                       secondary=list(tumor.statuses),
                       diagnosed=[Diagnosis(primary, diagnosed_on)],
                       procedures=[Procedure(presentation.biopsy, diagnosed_on, primary,
                                             tumor.site_words)],
                       notes=notes)
    chart.add(biopsy)

    # Staging: CT of chest, abdomen and pelvis and the oncology consultation.
    staged_on = diagnosed_on + _days(5, 14, rng)
    found = [*([tumor.nodes] if tumor.nodes else []), *tumor.metastases]
    findings = ("No evidence of distant metastatic disease." if not tumor.metastases else
                "Findings consistent with metastatic disease: " +
                "; ".join(d.icd10cm_display.lower() for d in tumor.metastases) + ".")
    if tumor.nodes:
        findings = "Enlarged regional lymph nodes, suspicious for nodal involvement. " + findings
    staging = Visit(staged_on, "consultation", reasons=[primary], principal=primary,
                    secondary=[*found, *tumor.statuses],
                    diagnosed=[Diagnosis(d, staged_on) for d in found],
                    procedures=[Procedure(CT_SCAN, staged_on, primary,
                                          "chest, abdomen and pelvis")],
                    notes=[Note("progress-note", findings=f"Clinical stage c{tumor.stage.t} "
                                f"c{tumor.stage.n} c{tumor.stage.m}, AJCC 8th edition stage "
                                f"group {tumor.stage.group}."),
                           Note("radiology-report", "CT chest, abdomen and pelvis with contrast",
                                findings)])
    staged = chart.add(staging)
    if staged:
        course.coded = found

    day = staged_on + _days(14, 35, rng)
    if plan.neoadjuvant:
        weeks = plan.radiation_weeks if plan.radiation_with == "neoadjuvant" else 0
        day = course.systemic(plan.neoadjuvant, day, weeks) + _days(28, 56, rng)
    if plan.surgery:
        day = course.surgery(plan.surgery, day) + _days(28, 42, rng)
    if plan.adjuvant:
        weeks = plan.radiation_weeks if plan.radiation_with == "adjuvant" else 0
        day = course.systemic(plan.adjuvant, day, weeks) + _days(21, 35, rng)
    if plan.radiation_weeks and plan.radiation_with is None:
        day = course.radiation(plan.radiation_weeks, day) + _days(14, 28, rng)
    if plan.maintenance:
        day = course.regimen(plan.maintenance, day) + _days(21, 35, rng)
    if plan.hormone:
        visit = Visit(day, "follow-up", reasons=[primary], principal=primary,
                      secondary=course.secondary, orders=[(plan.hormone, primary)],
                      notes=[Note("progress-note", findings=f"Start {plan.hormone.display}, "
                                  "planned for five years.")])
        if chart.add(visit):
            course.treatment["hormone"].append(day.isoformat())
        day += _days(80, 100, rng)
    for shot in range(plan.injections):
        current = day + timedelta(weeks=12 * shot)
        visit = Visit(current, "hormone-therapy", reasons=[primary], principal=primary,
                      secondary=course.secondary,
                      procedures=[Procedure(LEUPROLIDE, current, primary)],
                      notes=[Note("progress-note")])
        if chart.add(visit):
            course.treatment["hormone"].append(current.isoformat())
    day += timedelta(weeks=12 * plan.injections)

    # Surveillance every three months. Once curative treatment is over (no metastases, no
    # ongoing endocrine therapy) the coder reports the Z85 history code instead.
    finished = tumor.extent != "distant" and not plan.hormone and not plan.injections
    while day < chart.end:
        principal = tumor.history if finished else primary
        chart.add(Visit(day, "follow-up", reasons=[principal], principal=principal,
                        secondary=[] if finished else course.secondary,
                        notes=[Note("progress-note")]))
        day += _days(80, 100, rng)

    if death is not None:
        chart.end = window.as_of
        chart.add(Visit(end, "admission", encounter_class=INPATIENT, days=(death - end).days,
                        reasons=[primary], principal=primary,
                        secondary=[*course.secondary, PALLIATIVE_CARE],
                        notes=[Note("history-and-physical"), Note("progress-note"),
                               Note("discharge-summary",
                                    findings="Progressive metastatic disease; comfort care. "
                                    "The patient died in hospital.")],
                        discharge="expired"))
    visits = sorted(chart.visits, key=lambda v: v.day)
    diagnoses = [diagnosis for visit in visits for diagnosis in visit.diagnosed]
    last = max(v.day + timedelta(days=v.days) for v in visits)
    abstract = _abstract(person, tumor, diagnosed_on, staged, course.surgical_path,
                         course.treatment, death, last)
    return ModuleOutput(diagnoses=diagnoses, visits=visits, death=death, abstracts=[abstract])


def _abstract(person: Person, tumor: Tumor, diagnosed_on: date, staged: bool,
              surgical_path: dict[str, str], treatment: dict[str, list[str]],
              death: date | None, last_contact: date) -> dict[str, object]:
    """The facts a registrar abstracts, under NAACCR item names."""

    def first(kind: str) -> str | None:
        return min(treatment[kind]) if treatment[kind] else None

    stage = tumor.stage
    return {
        "cancer": tumor.cancer,
        "icd10cm": tumor.primary.icd10cm,
        "primarySite": tumor.topography,
        "laterality": tumor.laterality,
        "histologicTypeIcdO3": tumor.histology,
        "behaviorCodeIcdO3": "3",
        "grade": tumor.grade,
        "dateOfDiagnosis": diagnosed_on.isoformat(),
        "ageAtDiagnosis": person.age_on(diagnosed_on),
        "diagnosticConfirmation": "1",  # positive histology
        "tnmEditionNumber": "08",
        "tnmClinT": f"c{stage.t}" if staged else None,
        "tnmClinN": f"c{stage.n}" if staged else None,
        "tnmClinM": f"c{stage.m}" if staged else None,
        "tnmPathT": f"p{surgical_path['t']}" if surgical_path else None,
        "tnmPathN": f"p{surgical_path['n']}" if surgical_path else None,
        "tnmPathM": f"c{stage.m}" if surgical_path else None,
        "stageGroup": stage.group if staged else None,
        "seerSummaryStage2018": stage.summary if staged else None,
        "extent": tumor.extent,
        "metastaticSites": [d.icd10cm for d in tumor.metastases] if staged else [],
        "rxDateSurgery": first("surgery"),
        "rxDateChemo": first("chemotherapy"),
        "rxDateBrm": first("immunotherapy"),
        "rxDateRadiation": first("radiation"),
        "rxDateHormone": first("hormone"),
        "treatments": {kind: days for kind, days in treatment.items() if days},
        "vitalStatus": "0" if death else "1",  # NAACCR: 0 dead, 1 alive
        "dateOfLastContact": (death or last_contact).isoformat(),
        "dateOfDeath": death.isoformat() if death else None,
    }


def _decide(rng: random.Random, incidence: Incidence, person: Person, window: Window
            ) -> date | None:
    """The day of diagnosis in the window, or None when this person is not diagnosed."""
    span = (window.as_of - max(window.start, person.birth_date)).days
    if span < 2 or rng.random() >= diagnosis_probability(incidence, person, window):
        return None
    return window.as_of - timedelta(days=rng.randint(1, span))


def _extent(rng: random.Random, cancer: str) -> str:
    return rng.choices(EXTENTS, weights=STAGE_SHARES[cancer])[0]


def _before(day: date, window: Window, rng: random.Random, low: int, high: int) -> date:
    return max(window.start, day - _days(low, high, rng))


# --- breast -------------------------------------------------------------------------------
# Quadrant shares follow the usual clinical series (upper outer ~50%); laterality is even.
BREAST_QUADRANTS = (("4", "upper outer quadrant", 50), ("2", "upper inner quadrant", 15),
                    ("5", "lower outer quadrant", 10), ("3", "lower inner quadrant", 6),
                    ("1", "central portion", 6), ("8", "overlapping sites", 13))
BREAST_HISTOLOGY = (("8500", "invasive ductal carcinoma (no special type)", 80),
                    ("8520", "invasive lobular carcinoma", 12),
                    ("8522", "invasive carcinoma with ductal and lobular features", 8))
BREAST_STAGES: dict[str, tuple[tuple[float, Stage], ...]] = {
    "localized": ((70, Stage("T1c", "N0", "M0", "IA", "1")),
                  (30, Stage("T2", "N0", "M0", "IIA", "1"))),
    "regional": ((30, Stage("T1c", "N1a", "M0", "IIA", "3")),
                 (35, Stage("T2", "N1a", "M0", "IIB", "3")),
                 (15, Stage("T2", "N2a", "M0", "IIIA", "3")),
                 (12, Stage("T3", "N1a", "M0", "IIIA", "3")),
                 (8, Stage("T4b", "N1a", "M0", "IIIB", "4"))),
    "distant": ((100, Stage("T2", "N1a", "M1", "IV", "7")),),
}
BREAST_SNOMED = ("254837009", "Malignant neoplasm of breast (disorder)")
BREAST_SITES = {"1": "Malignant neoplasm of central portion of {side} {sex} breast",
                "2": "Malignant neoplasm of upper-inner quadrant of {side} {sex} breast",
                "3": "Malignant neoplasm of lower-inner quadrant of {side} {sex} breast",
                "4": "Malignant neoplasm of upper-outer quadrant of {side} {sex} breast",
                "5": "Malignant neoplasm of lower-outer quadrant of {side} {sex} breast",
                "8": "Malignant neoplasm of overlapping sites of {side} {sex} breast",
                "9": "Malignant neoplasm of unspecified site of {side} {sex} breast"}
SCREENING_MAMMOGRAM = ProcedureCode(
    "screening-mammogram", "71651007", "Mammography (procedure)", hcpcs="G0202",
    hcpcs_display="Screening mammography, bilateral (2-view study of each breast), including "
    "computer-aided detection (cad) when performed")
DIAGNOSTIC_MAMMOGRAM = ProcedureCode(
    "diagnostic-mammogram", "71651007", "Mammography (procedure)", hcpcs="G0206",
    hcpcs_display="Diagnostic mammography, including computer-aided detection (cad) when "
    "performed; unilateral")
BREAST_BIOPSY = ProcedureCode("breast-core-biopsy", "122548005", "Biopsy of breast (procedure)")
BREAST_SCREENING = Disease("breast-cancer-screening", "Z12.31",
                           "Encounter for screening mammogram for malignant neoplasm of breast",
                           "268547008", "Screening for malignant neoplasm of breast (procedure)",
                           chronic=False)


def _breast_lump(side: str) -> Disease:
    code = "N63.10" if side == "right" else "N63.20"
    return Disease("breast-lump", code, f"Unspecified lump in the {side} breast, unspecified "
                   "quadrant", "89164003", "Breast lump (finding)", chronic=False)


def breast_cancer(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    diagnosed_on = _decide(rng, breast_cancer_incidence, person, window)
    if diagnosed_on is None:
        return ModuleOutput()
    female = person.gender == "female"
    side = rng.choice(("right", "left"))
    laterality = "1" if side == "right" else "2"
    quadrant, quadrant_words, _ = rng.choices(BREAST_QUADRANTS,
                                              weights=[w for *_, w in BREAST_QUADRANTS])[0]
    if not female:
        quadrant, quadrant_words = "9", "site not specified"
    icd = f"C50.{quadrant}{'1' if female else '2'}{laterality}"
    display = BREAST_SITES[quadrant].format(side=side, sex="female" if female else "male")
    primary = Disease("breast-cancer", icd, display, *BREAST_SNOMED)
    histology, histology_words, _ = rng.choices(BREAST_HISTOLOGY,
                                                weights=[w for *_, w in BREAST_HISTOLOGY])[0]
    grade = rng.choices(("1", "2", "3"), weights=(25, 45, 30))[0]
    # Receptor status: about 80% ER positive, 15% HER2 positive (SEER subtype shares).
    er_positive = rng.random() < 0.80
    her2_positive = rng.random() < 0.15
    extent = _extent(rng, "breast-cancer")
    stage = _weighted(rng, BREAST_STAGES[extent])
    metastases = ([rng.choice((BONE_METASTASIS, LIVER_METASTASIS, LUNG_METASTASIS))]
                  if extent == "distant" else [])
    tumor = Tumor(
        "breast-cancer", primary, _history("breast-cancer", "Z85.3",
                                           "Personal history of malignant neoplasm of breast"),
        f"C50{quadrant}", laterality, f"{side} breast, {quadrant_words}", histology,
        histology_words, grade, f"Nottingham grade {grade}", extent, stage,
        AXILLARY_NODES if stage.n != "N0" else None, metastases,
        f"Estrogen receptor {'positive' if er_positive else 'negative'}, progesterone receptor "
        f"{'positive' if er_positive and rng.random() < 0.85 else 'negative'}, HER2 "
        f"{'positive (IHC 3+)' if her2_positive else 'negative (IHC 1+)'}.",
        [ER_POSITIVE] if er_positive else [])

    screened = female and 40 <= person.age_on(diagnosed_on) < 75 and rng.random() < 0.7
    found_on = _before(diagnosed_on, window, rng, 10, 24)
    if screened:
        first = Visit(found_on, "screening", reasons=[BREAST_SCREENING],
                      principal=BREAST_SCREENING,
                      procedures=[Procedure(SCREENING_MAMMOGRAM, found_on)],
                      notes=[Note("radiology-report", "screening mammogram, bilateral",
                                  f"Irregular spiculated mass in the {side} breast, "
                                  f"{quadrant_words}. BI-RADS 0: incomplete, recall for "
                                  "diagnostic imaging.")])
    else:
        lump = _breast_lump(side)
        first = Visit(found_on, "problem", reasons=[lump], principal=lump,
                      procedures=[Procedure(DIAGNOSTIC_MAMMOGRAM, found_on, lump,
                                            f"{side} breast")],
                      notes=[Note("progress-note", findings=f"Palpable firm mass, {side} breast."),
                             Note("radiology-report", "diagnostic mammogram and ultrasound",
                                  f"Irregular hypoechoic mass, {side} breast. BI-RADS 5.")])
    presentation = Presentation([first], BREAST_BIOPSY, "Ultrasound-guided core needle biopsy",
                                f"Ultrasound-guided core biopsy of a {side} breast mass, "
                                "14-gauge, clip placed.")

    plan = Plan()
    mastectomy = extent == "regional" or rng.random() < 0.3
    right = side == "right"
    if extent != "distant":
        if mastectomy:
            plan.surgery = Surgery(
                (ProcedureCode("mastectomy", "69031006", "Excision of breast tissue (procedure)",
                               "0HTT0ZZ" if right else "0HTU0ZZ",
                               f"Resection of {side.title()} Breast, Open Approach"),
                 ProcedureCode("axillary-dissection" if stage.n != "N0" else
                               "sentinel-node-biopsy",
                               "234262008" if stage.n != "N0" else "396487001",
                               "Excision of axillary lymph node (procedure)" if stage.n != "N0"
                               else "Sentinel lymph node biopsy (procedure)",
                               ("07T50ZZ" if right else "07T60ZZ") if stage.n != "N0" else
                               ("07B50ZX" if right else "07B60ZX"),
                               (f"Resection of {side.title()} Axillary Lymphatic, Open Approach"
                                if stage.n != "N0" else f"Excision of {side.title()} Axillary "
                                "Lymphatic, Open Approach, Diagnostic"))),
                True, (1, 3), f"{side} breast", "Total mastectomy with axillary staging")
        else:
            plan.surgery = Surgery(
                (ProcedureCode("lumpectomy", "392021009", "Lumpectomy of breast (procedure)"),
                 SENTINEL_NODE_BIOPSY), False, (0, 0), f"{side} breast",
                "Partial mastectomy (lumpectomy) with sentinel lymph node biopsy")
        chemo = extent == "regional" or not er_positive or her2_positive or stage.t == "T2"
        if chemo:
            # Dose-dense AC followed by paclitaxel (with trastuzumab when HER2 positive).
            taxane = (PACLITAXEL, TRASTUZUMAB) if her2_positive else (PACLITAXEL,)
            regimen = Regimen("Doxorubicin and cyclophosphamide then paclitaxel",
                              (DOXORUBICIN, CYCLOPHOSPHAMIDE), 4, 14)
            follow = Regimen("Weekly paclitaxel" + (" with trastuzumab" if her2_positive else ""),
                             taxane, 12, 7)
            if extent == "regional":
                plan.neoadjuvant = Regimen(regimen.name, regimen.drugs, 4, 14)
                plan.adjuvant = follow
            else:
                plan.adjuvant = Regimen(follow.name, follow.drugs, 12, 7)
        # Hypofractionated whole-breast or chest-wall radiation, after any chemotherapy.
        plan.radiation_weeks = 4 if (not mastectomy or extent == "regional") else 0
    else:
        plan.adjuvant = (Regimen("Paclitaxel with trastuzumab", (PACLITAXEL, TRASTUZUMAB), 12, 7)
                         if her2_positive or not er_positive else None)
    if er_positive:
        # Aromatase inhibitors after menopause (taken here as 55 and over), else tamoxifen.
        postmenopausal = female and person.age_on(diagnosed_on) >= 55
        plan.hormone = ((ANASTROZOLE if rng.random() < 0.6 else LETROZOLE) if postmenopausal
                        else TAMOXIFEN)
    return _build(rng, person, window, diagnosed_on, tumor, presentation, plan)


# --- lung ---------------------------------------------------------------------------------
# Lobe shares (about 60% upper lobes, right more often than left) from surgical series.
LUNG_LOBES = (
    ("C34.11", "Malignant neoplasm of upper lobe, right bronchus or lung", "C341", "1",
     "right upper lobe", "0BTC4ZZ", "Resection of Right Upper Lung Lobe, Percutaneous "
     "Endoscopic Approach", 35),
    ("C34.12", "Malignant neoplasm of upper lobe, left bronchus or lung", "C341", "2",
     "left upper lobe", "0BTG4ZZ", "Resection of Left Upper Lung Lobe, Percutaneous "
     "Endoscopic Approach", 25),
    ("C34.2", "Malignant neoplasm of middle lobe, bronchus or lung", "C342", "1",
     "right middle lobe", "0BTD4ZZ", "Resection of Right Middle Lung Lobe, Percutaneous "
     "Endoscopic Approach", 5),
    ("C34.31", "Malignant neoplasm of lower lobe, right bronchus or lung", "C343", "1",
     "right lower lobe", "0BTF4ZZ", "Resection of Right Lower Lung Lobe, Percutaneous "
     "Endoscopic Approach", 20),
    ("C34.32", "Malignant neoplasm of lower lobe, left bronchus or lung", "C343", "2",
     "left lower lobe", "0BTJ4ZZ", "Resection of Left Lower Lung Lobe, Percutaneous "
     "Endoscopic Approach", 15),
)
# Histology shares of lung cancer in SEER: adenocarcinoma about half, squamous a quarter,
# small cell 13%, other non-small cell the rest.
LUNG_HISTOLOGY = (("8140", "adenocarcinoma", 50), ("8070", "squamous cell carcinoma", 25),
                  ("8041", "small cell carcinoma", 13),
                  ("8046", "non-small cell carcinoma", 12))
LUNG_STAGES: dict[str, tuple[tuple[float, Stage], ...]] = {
    "localized": ((40, Stage("T1b", "N0", "M0", "IA2", "1")),
                  (30, Stage("T1c", "N0", "M0", "IA3", "1")),
                  (30, Stage("T2a", "N0", "M0", "IB", "1"))),
    "regional": ((30, Stage("T2a", "N1", "M0", "IIB", "3")),
                 (35, Stage("T2a", "N2", "M0", "IIIA", "3")),
                 (20, Stage("T3", "N2", "M0", "IIIB", "4")),
                 (15, Stage("T4", "N2", "M0", "IIIB", "4"))),
    "distant": ((35, Stage("T2a", "N2", "M1b", "IVA", "7")),
                (65, Stage("T3", "N2", "M1c", "IVB", "7"))),
}
LOW_DOSE_CT = ProcedureCode("low-dose-ct-chest", "16334891000119106",
                            "Low dose computed tomography of thorax (procedure)", hcpcs="G0297",
                            hcpcs_display="Low dose ct scan (ldct) for lung cancer screening")
LUNG_SCREENING = Disease("lung-cancer-screening", "Z12.2",
                         "Encounter for screening for malignant neoplasm of respiratory organs",
                         "16334891000119106", "Low dose computed tomography of thorax "
                         "(procedure)", chronic=False)
COUGH = Disease("cough", "R05.9", "Cough, unspecified", "49727002", "Cough (finding)",
                chronic=False)
LUNG_BIOPSY = ProcedureCode("ct-guided-lung-biopsy", "78603008", "Biopsy of lung (procedure)")


def lung_cancer(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    diagnosed_on = _decide(rng, lung_cancer_incidence, person, window)
    if diagnosed_on is None:
        return ModuleOutput()
    icd, display, topography, laterality, lobe, pcs, pcs_display, _ = rng.choices(
        LUNG_LOBES, weights=[row[-1] for row in LUNG_LOBES])[0]
    histology, histology_words, _ = rng.choices(LUNG_HISTOLOGY,
                                                weights=[w for *_, w in LUNG_HISTOLOGY])[0]
    small_cell = histology == "8041"
    snomed = (("254632001", "Small cell carcinoma of lung (disorder)") if small_cell
              else ("254637007", "Non-small cell lung cancer (disorder)"))
    primary = Disease("lung-cancer", icd, display, *snomed)
    grade = "9" if small_cell else rng.choices(("1", "2", "3"), weights=(20, 45, 35))[0]
    grade_words = ("high grade neuroendocrine carcinoma" if small_cell else
                   {"1": "well differentiated", "2": "moderately differentiated",
                    "3": "poorly differentiated"}[grade])
    extent = _extent(rng, "lung-cancer")
    stage = _weighted(rng, LUNG_STAGES[extent])
    metastases: list[Disease] = []
    if extent == "distant":
        metastases = rng.sample([BONE_METASTASIS, BRAIN_METASTASIS, LIVER_METASTASIS,
                                 ADRENAL_METASTASIS], k=1 if stage.m == "M1b" else 2)
    markers = ("TTF-1 positive, napsin A positive; PD-L1 tumor proportion score "
               f"{rng.choice((0, 5, 30, 60, 80))}%." if histology == "8140" else
               "p40 positive, TTF-1 negative." if histology == "8070" else
               "Synaptophysin and chromogranin positive; Ki-67 about 90%." if small_cell else "")
    tumor = Tumor("lung-cancer", primary,
                  _history("lung-cancer", "Z85.118",
                           "Personal history of other malignant neoplasm of bronchus and lung"),
                  topography, laterality, lobe, histology, histology_words, grade, grade_words,
                  extent, stage, THORACIC_NODES if stage.n != "N0" else None, metastases,
                  markers)
    # About 85% of lung cancer patients have smoked; half of those still smoke.
    tobacco = ([SMOKER] if rng.random() < 0.42 else [FORMER_SMOKER] if rng.random() < 0.74
               else [])
    found_on = _before(diagnosed_on, window, rng, 14, 28)
    age = person.age_on(diagnosed_on)
    if tobacco and 50 <= age <= 80 and extent == "localized" and rng.random() < 0.5:
        first = Visit(found_on, "screening", reasons=[LUNG_SCREENING], principal=LUNG_SCREENING,
                      secondary=tobacco, procedures=[Procedure(LOW_DOSE_CT, found_on)],
                      notes=[Note("radiology-report", "low-dose CT chest for lung cancer "
                                  "screening", f"Solid spiculated nodule, {lobe}, 1.8 cm. "
                                  "Lung-RADS 4B.")])
    else:
        first = Visit(found_on, "problem", reasons=[COUGH], principal=COUGH, secondary=tobacco,
                      procedures=[Procedure(CT_SCAN, found_on, COUGH, "chest")],
                      notes=[Note("progress-note", findings="Persistent cough for eight weeks."),
                             Note("radiology-report", "CT chest with contrast",
                                  f"Mass in the {lobe}, suspicious for primary lung "
                                  "malignancy.")])
    presentation = Presentation([first], LUNG_BIOPSY, "CT-guided core needle biopsy",
                                f"CT-guided percutaneous biopsy of the {lobe} mass; no "
                                "pneumothorax.")
    plan = Plan()
    if small_cell:
        plan.adjuvant = Regimen("Carboplatin and etoposide" +
                                (" with atezolizumab" if extent == "distant" else ""),
                                (CARBOPLATIN, ETOPOSIDE) +
                                ((ATEZOLIZUMAB,) if extent == "distant" else ()), 4, 21)
        if extent != "distant":
            plan.radiation_weeks, plan.radiation_with = 6, "adjuvant"
    elif extent == "localized" or stage.group == "IIB":
        plan.surgery = Surgery(
            (ProcedureCode("lobectomy", "173171007", "Lobectomy of lung (procedure)", pcs,
                           pcs_display),
             ProcedureCode("mediastinal-node-sampling", "65801008", "Excision (procedure)",
                           "07B74ZX", "Excision of Thorax Lymphatic, Percutaneous Endoscopic "
                           "Approach, Diagnostic")),
            True, (3, 5), lobe, "Video-assisted thoracoscopic lobectomy with mediastinal lymph "
            "node sampling")
        if stage.group == "IIB":
            plan.adjuvant = Regimen("Carboplatin and paclitaxel", (CARBOPLATIN, PACLITAXEL), 4, 21)
    elif extent == "regional":
        # Concurrent chemoradiation, then a year of durvalumab every four weeks (PACIFIC).
        plan.adjuvant = Regimen("Weekly carboplatin and paclitaxel with radiation",
                                (CARBOPLATIN, PACLITAXEL), 6, 7)
        plan.radiation_weeks, plan.radiation_with = 6, "adjuvant"
        plan.maintenance = Regimen("Consolidation durvalumab", (DURVALUMAB,), 12, 28)
    else:
        plan.adjuvant = (Regimen("Carboplatin, pemetrexed and pembrolizumab",
                                 (CARBOPLATIN, PEMETREXED, PEMBROLIZUMAB), 4, 21)
                         if histology != "8070" else
                         Regimen("Carboplatin, paclitaxel and pembrolizumab",
                                 (CARBOPLATIN, PACLITAXEL, PEMBROLIZUMAB), 4, 21))
    return _build(rng, person, window, diagnosed_on, tumor, presentation, plan)


# --- colorectal ---------------------------------------------------------------------------
# Subsite shares of colorectal adenocarcinoma (right colon ~40%, rectum ~25%), approximate.
COLORECTAL_SITES = (
    ("C18.0", "Malignant neoplasm of cecum", "C180", "cecum", "0DTF4ZZ",
     "Resection of Right Large Intestine, Percutaneous Endoscopic Approach",
     "right hemicolectomy", 18),
    ("C18.2", "Malignant neoplasm of ascending colon", "C182", "ascending colon", "0DTF4ZZ",
     "Resection of Right Large Intestine, Percutaneous Endoscopic Approach",
     "right hemicolectomy", 14),
    ("C18.4", "Malignant neoplasm of transverse colon", "C184", "transverse colon", "0DTL4ZZ",
     "Resection of Transverse Colon, Percutaneous Endoscopic Approach", "transverse colectomy", 9),
    ("C18.6", "Malignant neoplasm of descending colon", "C186", "descending colon", "0DTG4ZZ",
     "Resection of Left Large Intestine, Percutaneous Endoscopic Approach",
     "left hemicolectomy", 5),
    ("C18.7", "Malignant neoplasm of sigmoid colon", "C187", "sigmoid colon", "0DTN4ZZ",
     "Resection of Sigmoid Colon, Percutaneous Endoscopic Approach", "sigmoid colectomy", 22),
    ("C19", "Malignant neoplasm of rectosigmoid junction", "C199", "rectosigmoid junction",
     "0DTN4ZZ", "Resection of Sigmoid Colon, Percutaneous Endoscopic Approach",
     "sigmoid colectomy", 7),
    ("C20", "Malignant neoplasm of rectum", "C209", "rectum", "0DTP0ZZ",
     "Resection of Rectum, Open Approach", "low anterior resection", 25),
)
COLORECTAL_HISTOLOGY = (("8140", "adenocarcinoma", 90), ("8480", "mucinous adenocarcinoma", 10))
COLORECTAL_STAGES: dict[str, tuple[tuple[float, Stage], ...]] = {
    # SEER Summary Stage 2018 counts invasion into pericolorectal tissue (T3) as localized.
    "localized": ((20, Stage("T1", "N0", "M0", "I", "1")),
                  (30, Stage("T2", "N0", "M0", "I", "1")),
                  (50, Stage("T3", "N0", "M0", "IIA", "1"))),
    "regional": ((15, Stage("T4a", "N0", "M0", "IIB", "2")),
                 (15, Stage("T2", "N1a", "M0", "IIIA", "3")),
                 (45, Stage("T3", "N1b", "M0", "IIIB", "3")),
                 (25, Stage("T4a", "N2a", "M0", "IIIC", "4"))),
    "distant": ((70, Stage("T3", "N1b", "M1a", "IVA", "7")),
                (30, Stage("T4a", "N2a", "M1c", "IVC", "7"))),
}
COLONOSCOPY = ProcedureCode(
    "screening-colonoscopy", "73761001", "Colonoscopy (procedure)", hcpcs="G0121",
    hcpcs_display="Colorectal cancer screening; colonoscopy on individual not meeting criteria "
    "for high risk")
COLON_DIAGNOSTIC = ProcedureCode("colonoscopy", "73761001", "Colonoscopy (procedure)")
COLON_BIOPSY = ProcedureCode("colon-biopsy", "76164006", "Biopsy of colon (procedure)")
COLON_SCREENING = Disease("colon-cancer-screening", "Z12.11",
                          "Encounter for screening for malignant neoplasm of colon", "275978004",
                          "Screening for malignant neoplasm of colon (procedure)", chronic=False)
RECTAL_BLEEDING = Disease("rectal-bleeding", "K62.5", "Hemorrhage of anus and rectum",
                          "12063002", "Rectal hemorrhage (disorder)", chronic=False)
IRON_DEFICIENCY = Disease("iron-deficiency-anemia", "D50.9", "Iron deficiency anemia, "
                          "unspecified", "87522002", "Iron deficiency anemia (disorder)",
                          chronic=False)


def colorectal_cancer(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    diagnosed_on = _decide(rng, colorectal_cancer_incidence, person, window)
    if diagnosed_on is None:
        return ModuleOutput()
    icd, display, topography, part, pcs, pcs_display, operation, _ = rng.choices(
        COLORECTAL_SITES, weights=[row[-1] for row in COLORECTAL_SITES])[0]
    rectal = icd in ("C19", "C20")
    snomed = (("363351006", "Malignant neoplasm of rectum (disorder)") if icd == "C20"
              else ("363406005", "Malignant neoplasm of colon (disorder)"))
    primary = Disease("colorectal-cancer", icd, display, *snomed)
    histology, histology_words, _ = rng.choices(COLORECTAL_HISTOLOGY,
                                                weights=[w for *_, w in COLORECTAL_HISTOLOGY])[0]
    grade = rng.choices(("1", "2", "3"), weights=(10, 70, 20))[0]
    extent = _extent(rng, "colorectal-cancer")
    stage = _weighted(rng, COLORECTAL_STAGES[extent])
    metastases = ([LIVER_METASTASIS] + ([LUNG_METASTASIS] if rng.random() < 0.3 else [])
                  if stage.m == "M1a" else [PERITONEAL_METASTASIS] if stage.m == "M1c" else [])
    history = (_history("colorectal-cancer", "Z85.048", "Personal history of other malignant "
                        "neoplasm of rectum, rectosigmoid junction, and anus") if rectal else
               _history("colorectal-cancer", "Z85.038",
                        "Personal history of other malignant neoplasm of large intestine"))
    tumor = Tumor("colorectal-cancer", primary, history, topography, "0", part, histology,
                  histology_words, grade,
                  {"1": "well differentiated", "2": "moderately differentiated",
                   "3": "poorly differentiated"}[grade], extent, stage,
                  (PELVIC_NODES if icd == "C20" else ABDOMINAL_NODES) if stage.n != "N0"
                  else None, metastases,
                  "Mismatch repair proteins (MLH1, PMS2, MSH2, MSH6) intact.")
    age = person.age_on(diagnosed_on)
    found_on = _before(diagnosed_on, window, rng, 10, 30)
    biopsy_words = "Colonoscopy with cold forceps biopsy"
    screened = 45 <= age < 76 and rng.random() < 0.45
    colonoscopy_report = (f"Fungating, friable, partially obstructing mass in the {part}, "
                          "biopsied and tattooed.")
    if screened:
        # The screening colonoscopy finds the mass: Z12.11 stays first-listed, the
        # pathology-confirmed cancer is coded after it.
        diagnosed = Visit(diagnosed_on, "procedure", reasons=[COLON_SCREENING],
                          principal=COLON_SCREENING, secondary=[primary],
                          diagnosed=[Diagnosis(primary, diagnosed_on)],
                          procedures=[Procedure(COLONOSCOPY, diagnosed_on, COLON_SCREENING),
                                      Procedure(COLON_BIOPSY, diagnosed_on, primary, part)],
                          notes=[Note("operative-report", "colonoscopy", colonoscopy_report)])
        presentation = Presentation([], COLON_BIOPSY, biopsy_words, diagnostic=diagnosed)
        return _build(rng, person, window, diagnosed_on, tumor, presentation,
                      _colorectal_plan(rng, tumor, pcs, pcs_display, operation))
    symptom = RECTAL_BLEEDING if rectal or rng.random() < 0.5 else IRON_DEFICIENCY
    first = Visit(found_on, "problem", reasons=[symptom], principal=symptom,
                  notes=[Note("progress-note", findings="Referred for diagnostic colonoscopy.")])
    # A diagnostic colonoscopy: with the pathology back, the cancer is coded first.
    diagnostic = Visit(diagnosed_on, "procedure", reasons=[symptom], principal=primary,
                       diagnosed=[Diagnosis(primary, diagnosed_on)],
                       procedures=[Procedure(COLON_DIAGNOSTIC, diagnosed_on, symptom),
                                   Procedure(COLON_BIOPSY, diagnosed_on, primary, part)],
                       notes=[Note("operative-report", "colonoscopy", colonoscopy_report)])
    presentation = Presentation([first], COLON_BIOPSY, biopsy_words, diagnostic=diagnostic)
    return _build(rng, person, window, diagnosed_on, tumor, presentation,
                  _colorectal_plan(rng, tumor, pcs, pcs_display, operation))


def _colorectal_plan(rng: random.Random, tumor: Tumor, pcs: str, pcs_display: str,
                     operation: str) -> Plan:
    plan = Plan()
    folfox = Regimen("FOLFOX (oxaliplatin, leucovorin, fluorouracil)",
                     (OXALIPLATIN, LEUCOVORIN, FLUOROURACIL), 12, 14)
    if tumor.extent == "distant":
        plan.adjuvant = Regimen("FOLFOX with bevacizumab",
                                (OXALIPLATIN, LEUCOVORIN, FLUOROURACIL, BEVACIZUMAB), 12, 14)
        return plan
    surgery_code = (ProcedureCode("colectomy", "43075005", "Partial resection of colon "
                                  "(procedure)", pcs, pcs_display) if tumor.primary.icd10cm != "C20"
                    else ProcedureCode("rectal-resection", "65801008", "Excision (procedure)",
                                       pcs, pcs_display))
    plan.surgery = Surgery((surgery_code,), True, (3, 6), tumor.site_words,
                           operation.capitalize() + " with regional lymphadenectomy")
    if tumor.extent == "regional":
        if tumor.primary.icd10cm == "C20":
            # Locally advanced rectal cancer: fluorouracil with radiation before surgery.
            plan.neoadjuvant = Regimen("Fluorouracil with concurrent radiation", (FLUOROURACIL,),
                                       5, 7)
            plan.radiation_weeks, plan.radiation_with = 5, "neoadjuvant"
        # Adjuvant FOLFOX: six months, or three for lower-risk stage III (IDEA).
        plan.adjuvant = Regimen(folfox.name, folfox.drugs, 12 if rng.random() < 0.5 else 6, 14)
    return plan


# --- prostate -----------------------------------------------------------------------------
PROSTATE_STAGES: dict[str, tuple[tuple[float, Stage], ...]] = {
    "localized": ((35, Stage("T1c", "N0", "M0", "I", "1")),
                  (35, Stage("T1c", "N0", "M0", "IIB", "1")),
                  (20, Stage("T2a", "N0", "M0", "IIC", "1")),
                  (10, Stage("T2b", "N0", "M0", "IIIC", "1"))),
    "regional": ((65, Stage("T3a", "N0", "M0", "IIIB", "2")),
                 (35, Stage("T3a", "N1", "M0", "IVA", "4"))),
    "distant": ((100, Stage("T3b", "N1", "M1b", "IVB", "7")),),
}
# Grade Group by AJCC stage group: I is Grade Group 1, IIB 2, IIC 3, IIIC 4-5.
PROSTATE_GRADE = {"I": ("1", "3+3=6"), "IIB": ("2", "3+4=7"), "IIC": ("3", "4+3=7"),
                  "IIIC": ("4", "4+4=8"), "IIIB": ("3", "4+3=7"), "IVA": ("4", "4+4=8"),
                  "IVB": ("5", "4+5=9")}
PSA_SCREENING = ProcedureCode(
    "psa-screening", "444822002", "Screening for malignant neoplasm of prostate (procedure)",
    hcpcs="G0103", hcpcs_display="Prostate cancer screening; prostate specific antigen test "
    "(psa)")
PROSTATE_SCREENING = Disease("prostate-cancer-screening", "Z12.5",
                             "Encounter for screening for malignant neoplasm of prostate",
                             "444822002", "Screening for malignant neoplasm of prostate "
                             "(procedure)", chronic=False)
PROSTATE_BIOPSY = ProcedureCode("prostate-biopsy", "65575008", "Biopsy of prostate (procedure)")


def prostate_cancer(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    diagnosed_on = _decide(rng, prostate_cancer_incidence, person, window)
    if diagnosed_on is None:
        return ModuleOutput()
    primary = Disease("prostate-cancer", "C61", "Malignant neoplasm of prostate",
                      "399068003", "Malignant neoplasm of prostate (disorder)")
    extent = _extent(rng, "prostate-cancer")
    stage = _weighted(rng, PROSTATE_STAGES[extent])
    grade_group, gleason = PROSTATE_GRADE[stage.group]
    cores = rng.randint(2, 8)
    psa = round(rng.uniform(4.5, 9.5) if extent == "localized" else
                rng.uniform(10, 40) if extent == "regional" else rng.uniform(40, 400), 1)
    tumor = Tumor("prostate-cancer", primary,
                  _history("prostate-cancer", "Z85.46",
                           "Personal history of malignant neoplasm of prostate"),
                  "C619", "0", "prostate", "8140", "acinar adenocarcinoma", grade_group,
                  f"Gleason score {gleason} (Grade Group {grade_group})", extent, stage,
                  PELVIC_NODES if stage.n != "N0" else None,
                  [BONE_METASTASIS] if extent == "distant" else [],
                  f"Carcinoma involves {cores} of 12 cores. Serum PSA {psa} ng/mL.")
    found_on = _before(diagnosed_on, window, rng, 21, 45)
    first = Visit(found_on, "screening", reasons=[PROSTATE_SCREENING],
                  principal=PROSTATE_SCREENING, results=[(PSA, psa)],
                  procedures=[Procedure(PSA_SCREENING, found_on)],
                  notes=[Note("progress-note", findings=f"PSA {psa} ng/mL; referred to "
                              "urology.")])
    presentation = Presentation([first], PROSTATE_BIOPSY,
                                "Transrectal ultrasound-guided 12-core needle biopsy")
    plan = Plan()
    if extent == "localized":
        choice = rng.random()
        if grade_group == "1" and choice < 0.6:
            pass  # active surveillance: PSA and follow-up visits only
        elif choice < 0.6:
            plan.surgery = _prostatectomy()
        else:
            plan.radiation_weeks = 6
            plan.injections = 2 if grade_group in ("3", "4") else 0
    elif extent == "regional":
        plan.radiation_weeks = 8
        plan.injections = 4
    else:
        plan.injections = 8
        if rng.random() < 0.5:
            plan.adjuvant = Regimen("Docetaxel with androgen deprivation", (DOCETAXEL,), 6, 21)
    return _build(rng, person, window, diagnosed_on, tumor, presentation, plan)


def _prostatectomy() -> Surgery:
    return Surgery(
        (ProcedureCode("radical-prostatectomy", "26294005", "Radical prostatectomy (procedure)",
                       "0VT04ZZ", "Resection of Prostate, Percutaneous Endoscopic Approach"),
         ProcedureCode("robotic-assistance", "65801008", "Excision (procedure)", "8E0W4CZ",
                       "Robotic Assisted Procedure of Trunk Region, Percutaneous Endoscopic "
                       "Approach"),
         ProcedureCode("pelvic-lymph-node-dissection", "65801008", "Excision (procedure)",
                       "07BC4ZX", "Excision of Pelvis Lymphatic, Percutaneous Endoscopic "
                       "Approach, Diagnostic")),
        True, (1, 2), "prostate", "Robotic-assisted laparoscopic radical prostatectomy with "
        "bilateral pelvic lymph node dissection")


# --- melanoma -----------------------------------------------------------------------------
# Body-site shares of cutaneous melanoma (trunk most common in men, legs in women), approximate.
# C43.4 (scalp and neck) is left out: the imsweb ICD-10-CM to ICD-O-3 table maps it to C443.
MELANOMA_SITES = (
    ("C43.59", "Malignant melanoma of other part of trunk", "C445", "back", "trunk", 35, 22),
    ("C43.61", "Malignant melanoma of right upper limb, including shoulder", "C446",
     "right upper arm", "right", 10, 10),
    ("C43.62", "Malignant melanoma of left upper limb, including shoulder", "C446",
     "left upper arm", "left", 10, 10),
    ("C43.71", "Malignant melanoma of right lower limb, including hip", "C447", "right calf",
     "right", 8, 20),
    ("C43.72", "Malignant melanoma of left lower limb, including hip", "C447", "left calf",
     "left", 8, 20),
    ("C43.39", "Malignant melanoma of other parts of face", "C443", "cheek", "face", 14, 10),
)
MELANOMA_HISTOLOGY = (("8743", "superficial spreading melanoma", 60),
                      ("8721", "nodular melanoma", 15), ("8720", "malignant melanoma", 25))
MELANOMA_STAGES: dict[str, tuple[tuple[float, Stage], ...]] = {
    "localized": ((55, Stage("T1a", "N0", "M0", "IA", "1")),
                  (15, Stage("T1b", "N0", "M0", "IA", "1")),
                  (15, Stage("T2a", "N0", "M0", "IB", "1")),
                  (10, Stage("T3a", "N0", "M0", "IIA", "1")),
                  (5, Stage("T4b", "N0", "M0", "IIC", "1"))),
    "regional": ((50, Stage("T2a", "N1a", "M0", "IIIA", "3")),
                 (35, Stage("T3b", "N1a", "M0", "IIIC", "3")),
                 (15, Stage("T4b", "N2b", "M0", "IIIC", "3"))),
    "distant": ((50, Stage("T3b", "N1b", "M1c", "IV", "7")),
                (50, Stage("T4b", "N2b", "M1d", "IV", "7"))),
}
BRESLOW = {"T1a": 0.5, "T1b": 0.9, "T2a": 1.5, "T3a": 3.0, "T3b": 3.2, "T4b": 5.0}
SKIN_LESION = Disease("skin-lesion", "D49.2",
                      "Neoplasm of unspecified behavior of bone, soft tissue, and skin",
                      "95324001", "Skin lesion (disorder)", chronic=False)
SKIN_BIOPSY = ProcedureCode("excisional-skin-biopsy", "240977001", "Biopsy of skin (procedure)")


def melanoma(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    diagnosed_on = _decide(rng, melanoma_incidence, person, window)
    if diagnosed_on is None:
        return ModuleOutput()
    male = person.gender == "male"
    icd, display, topography, body, side, *_ = rng.choices(
        MELANOMA_SITES, weights=[row[5] if male else row[6] for row in MELANOMA_SITES])[0]
    if side in ("trunk", "face"):
        side = rng.choice(("right", "left"))
        body = f"{side} {body}"
    laterality = "1" if side == "right" else "2"
    primary = Disease("melanoma", icd, display, "372244006", "Malignant melanoma (disorder)")
    histology, histology_words, _ = rng.choices(MELANOMA_HISTOLOGY,
                                                weights=[w for *_, w in MELANOMA_HISTOLOGY])[0]
    extent = _extent(rng, "melanoma")
    stage = _weighted(rng, MELANOMA_STAGES[extent])
    ulcerated = stage.t.endswith("b")
    nodes = None
    if stage.n != "N0":
        nodes = (INGUINAL_NODES if icd in ("C43.71", "C43.72") else
                 NECK_NODES if icd == "C43.39" else AXILLARY_NODES)
    metastases = ([LUNG_METASTASIS] if stage.m == "M1c" else [BRAIN_METASTASIS, LUNG_METASTASIS]
                  if stage.m == "M1d" else [])
    if stage.m == "M1c":
        metastases.append(LIVER_METASTASIS)
    tumor = Tumor("melanoma", primary,
                  _history("melanoma", "Z85.820",
                           "Personal history of malignant melanoma of skin"),
                  topography, laterality, f"skin of {body}", histology, histology_words,
                  "9", "grade not applicable", extent, stage, nodes, metastases,
                  f"Breslow thickness {BRESLOW[stage.t]} mm; ulceration "
                  f"{'present' if ulcerated else 'absent'}; mitotic rate "
                  f"{rng.randint(1, 6)}/mm2; peripheral and deep margins clear.")
    found_on = _before(diagnosed_on, window, rng, 7, 21)
    first = Visit(found_on, "problem", reasons=[SKIN_LESION], principal=SKIN_LESION,
                  notes=[Note("progress-note", findings=f"Irregular, asymmetric pigmented "
                              f"lesion of the {body}, 9 mm, changing over months.")])
    presentation = Presentation([first], SKIN_BIOPSY, "Excisional biopsy with 2 mm margins")
    plan = Plan()
    if extent != "distant":
        codes: tuple[ProcedureCode, ...] = (EXCISION,)
        if stage.t not in ("T1a",):
            codes = (EXCISION, SENTINEL_NODE_BIOPSY)
        plan.surgery = Surgery(codes, False, (0, 0), f"skin of {body}",
                               "Wide local excision" +
                               (" with sentinel lymph node biopsy" if len(codes) > 1 else ""))
        if extent == "regional":
            plan.adjuvant = Regimen("Adjuvant nivolumab", (NIVOLUMAB,), 12, 28)
    else:
        plan.adjuvant = Regimen("Ipilimumab and nivolumab", (IPILIMUMAB, NIVOLUMAB), 4, 21)
    return _build(rng, person, window, diagnosed_on, tumor, presentation, plan)


MODULES: tuple[Module, ...] = (breast_cancer, lung_cancer, colorectal_cancer, prostate_cancer,
                               melanoma)
INCIDENCE: dict[str, Incidence] = {
    "breast-cancer": breast_cancer_incidence,
    "lung-cancer": lung_cancer_incidence,
    "colorectal-cancer": colorectal_cancer_incidence,
    "prostate-cancer": prostate_cancer_incidence,
    "melanoma": melanoma_incidence,
}
