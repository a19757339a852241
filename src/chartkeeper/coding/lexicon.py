"""The clinical words the code titles do not use: abbreviations, word forms, default terms.

ICD-10-CM titles are written in classification language ("Essential (primary) hypertension")
and clinicians write "HTN"; this is the bridge, kept as plain data so a site can read and
extend it. It holds general medical vocabulary only (standard abbreviations and the
classification's own default rules), never phrases taken from any test corpus.
"""

from __future__ import annotations

# Abbreviations and short forms as clinicians write them, expanded to the words the code
# titles use. Keys are lower case; a key may be several words.
ABBREVIATIONS: dict[str, str] = {
    "htn": "hypertension",
    "dm": "diabetes mellitus",
    "dm1": "type 1 diabetes mellitus",
    "dm2": "type 2 diabetes mellitus",
    "t1dm": "type 1 diabetes mellitus",
    "t2dm": "type 2 diabetes mellitus",
    "iddm": "type 1 diabetes mellitus",
    "niddm": "type 2 diabetes mellitus",
    "chf": "congestive heart failure",
    "hf": "heart failure",
    "hfref": "systolic heart failure",
    "hfpef": "diastolic heart failure",
    "hfmref": "combined systolic diastolic heart failure",
    "cad": "coronary artery disease",
    "ashd": "atherosclerotic heart disease",
    "mi": "myocardial infarction",
    "nstemi": "non st elevation myocardial infarction",
    "stemi": "st elevation myocardial infarction",
    "afib": "atrial fibrillation",
    "a-fib": "atrial fibrillation",
    "af": "atrial fibrillation",
    "dvt": "deep vein thrombosis",
    "pe": "pulmonary embolism",
    "cva": "cerebral infarction",
    "tia": "transient cerebral ischemic attack",
    "pvd": "peripheral vascular disease",
    "pad": "peripheral arterial disease",
    "copd": "chronic obstructive pulmonary disease",
    "aecopd": "acute exacerbation chronic obstructive pulmonary disease",
    "osa": "obstructive sleep apnea",
    "uri": "upper respiratory infection",
    "cap": "pneumonia",
    # Where a pneumonia was acquired has no ICD-10-CM axis: it says nothing about the code.
    "community acquired": "",
    "community-acquired": "",
    "ards": "acute respiratory distress syndrome",
    "ckd": "chronic kidney disease",
    "esrd": "end stage renal disease",
    "aki": "acute kidney failure",
    "uti": "urinary tract infection",
    "bph": "benign prostatic hyperplasia",
    "pyelo": "pyelonephritis",
    "gerd": "gastro-esophageal reflux disease",
    "gi": "gastrointestinal",
    "ibs": "irritable bowel syndrome",
    "mdd": "major depressive disorder",
    "gad": "generalized anxiety disorder",
    "ptsd": "post-traumatic stress disorder",
    "adhd": "attention-deficit hyperactivity disorder",
    "oud": "opioid dependence",
    "aud": "alcohol dependence",
    "ra": "rheumatoid arthritis",
    "oa": "osteoarthritis",
    "sle": "systemic lupus erythematosus",
    "ms": "multiple sclerosis",
    "hld": "hyperlipidemia",
    "hypothyroid": "hypothyroidism",
    "ida": "iron deficiency anemia",
    "fx": "fracture",
    "fxs": "fracture",
    "iup": "intrauterine pregnancy",
    "rll": "right lower lobe",
    "rul": "right upper lobe",
    "rml": "right middle lobe",
    "lll": "left lower lobe",
    "lul": "left upper lobe",
    "uoq": "upper outer quadrant",  # of the breast
    "uiq": "upper inner quadrant",
    "loq": "lower outer quadrant",
    "liq": "lower inner quadrant",
    "hx": "history",
    "h/o": "history",
    "s/p": "status post",
    "f/u": "follow up",
    "r/o": "rule out",
    "cp": "chest pain",
    "sob": "shortness of breath",
    "doe": "dyspnea on exertion",
    "n/v": "nausea vomiting",
    "loc": "loss of consciousness",
    "ca": "cancer",
    "bcc": "basal cell carcinoma",
    "scc": "squamous cell carcinoma",
    "lbp": "low back pain",
    "uc": "ulcerative colitis",
    "std": "sexually transmitted disease",
    "hiv": "human immunodeficiency virus disease",
    "covid": "covid-19",
    "rsv": "respiratory syncytial virus",
    "ed": "emergency",
    "nsvd": "normal spontaneous vaginal delivery",
    "svd": "spontaneous vaginal delivery",
    "c-section": "cesarean section",
    "lscs": "low transverse cesarean section",
    "hip fracture": "fracture femur neck",
    "fracture of hip": "fracture femur neck",
    "hip fx": "fracture femur neck",
}

# Adjectives and variants written in notes, mapped to the noun or form the titles use.
WORD_FORMS: dict[str, str] = {
    "femoral": "femur",
    "intertrochanteric": "intertrochanteric femur",
    "subtrochanteric": "subtrochanteric femur",
    "pertrochanteric": "pertrochanteric femur",
    "humeral": "humerus",
    "tibial": "tibia",
    "fibular": "fibula",
    "radial": "radius",
    "ulnar": "ulna",
    "pelvic": "pelvis",
    "renal": "kidney",
    "axillary": "axilla",
    "rectal": "rectum",
    "adrenal": "adrenal gland",
    "hepatic": "liver",
    "cardiac": "heart",
    "gastric": "stomach",
    "colonic": "colon",
    "vertebral": "vertebra",
    "lumbar": "lumbar",
    "diabetic": "diabetes",
    "depression": "depressive",
    "asthmatic": "asthma",
    "obese": "obesity",
    "anemic": "anemia",
    "septic": "sepsis",
    "pneumonic": "pneumonia",
    # The titles' "malignant neoplasm" is what notes call cancer, carcinoma or malignancy;
    # metastatic disease is the titles' secondary malignant neoplasm (of lymph nodes...).
    "malignancy": "malignant neoplasm",
    "carcinoma": "malignant neoplasm",
    "adenocarcinoma": "malignant neoplasm",
    "cancer": "malignant neoplasm",
    "metastatic": "secondary malignant neoplasm",
    "metastasis": "secondary malignant neoplasm",
    "metastases": "secondary malignant neoplasm",
    "mets": "secondary malignant neoplasm",
    "node": "lymph node",
    "tumour": "tumor",
    "haemorrhage": "hemorrhage",
    "oesophagus": "esophagus",
    "exacerbated": "exacerbation",
    "flare": "exacerbation",
    "decompensated": "exacerbation",
    "back": "trunk",
    "laparoscopic": "percutaneous endoscopic",
    "arthroscopic": "percutaneous endoscopic",
    "endoscopic": "endoscopic",
    "chest": "chest",
    "hip": "hip joint",
    "knee": "knee joint",
    "labour": "labor",
    "gravid": "pregnancy",
    "pregnant": "pregnancy",
    "infant": "infant",
    "liveborn": "live birth",
    "ex": "",
}

# Words that say nothing about which code: dropped from titles and notes alike.
STOPWORDS: frozenset[str] = frozenset({
    "a", "an", "the", "of", "and", "or", "in", "on", "to", "for", "by", "as", "at", "is",
    "was", "with", "due", "from", "into", "its", "his", "her", "their", "this", "that",
    "mellitus", "congestive", "disorder", "disease", "condition", "encounter",
    "classified", "elsewhere",
})

# Title segments that name the classification's default (what a coder assigns when the note
# says nothing more): a title may contain them and still match a note that does not.
DEFAULT_SEGMENTS: tuple[str, ...] = (
    "unspecified", "uncomplicated", "not elsewhere classified", "site not specified",
    "not applicable or unspecified", "unspecified organism", "single episode",
    "initial encounter", "initial encounter for closed fracture", "without abnormal findings",
    "not specified as acute or chronic", "unspecified site", "unspecified part",
    "unspecified trimester",
)

# Single title words a note may leave unsaid at a small cost: fractures are closed and
# displaced unless documented otherwise (guideline I.C.19.c), "malignant" is implied by
# melanoma and carcinoma, "primary" by essential, "part" and "site" by a named place, a
# "status" by the finding itself ("ER positive"), "female" by the patient (breast
# neoplasms; a male breast is always documented). "skin" is free for melanoma and skin
# carcinomas only (``terms.term``).
DEFAULT_WORDS: frozenset[str] = frozenset({
    "unspecified", "nos", "closed", "displaced", "initial", "primary", "part", "site",
    "malignant", "personal", "uncomplicated", "without", "essential",
    "complication", "episode", "single", "specified", "not", "applicable", "organism",
    "general", "medical", "routine", "health", "other", "antineoplastic", "status", "female",
})

# Reasons for a visit, in the words the Z-code titles use (Chapter 21 encounters).
ENCOUNTER_REASONS: dict[str, str] = {
    "annual physical": "general medical examination",
    "annual exam": "general medical examination",
    "routine physical": "general medical examination",
    "physical exam": "general medical examination",
    "wellness visit": "general medical examination",
    "annual wellness": "general medical examination",
    "health maintenance": "general medical examination",
    "preventive visit": "general medical examination",
    "well child": "routine child health examination",
    "well-child": "routine child health examination",
    "well visit": "routine health examination",
    "well baby": "routine child health examination",
    "prenatal visit": "supervision normal pregnancy",
    "prenatal care": "supervision normal pregnancy",
    "routine ob": "supervision normal pregnancy",
    "ob visit": "supervision normal pregnancy",
    "antenatal visit": "supervision normal pregnancy",
}
