"""The wording the note writer draws on: how each condition is complained of, examined,
assessed, planned and followed, and how each operation is described (data, no logic)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Phrasing:
    complaint: tuple[str, ...]  # chief complaints
    hpi: tuple[str, ...]  # what the patient reports (sentences; the first is always used)
    positives: tuple[str, ...] = ()  # ROS symptoms not to be denied
    exam: tuple[tuple[str, str], ...] = ()  # (system, finding) replacing the normal finding
    assess: tuple[str, ...] = ("{name}",)  # assessment when the diagnosis is settled
    uncertain: tuple[str, ...] = ()  # first impression in an ED note or H&P
    plan: tuple[str, ...] = ()
    course: tuple[str, ...] = ()  # hospital course sentences
    ed: tuple[str, ...] = ("Pt was evaluated and treated symptomatically.",)
    imaging: tuple[str, str, str] | None = None  # (study, findings, impression)
    follow: tuple[str, ...] = ("PCP in 1-2 weeks",)
    family: tuple[str, ...] = ()


CHRONIC_EXAM_LUNG = ("Lungs", "diffuse expiratory wheezes, prolonged expiratory phase")
PHRASINGS: dict[str, Phrasing] = {
    "hypertension": Phrasing(
        complaint=("f/u HTN", "BP check", "follow-up of blood pressure"),
        hpi=("{He} is taking {his} BP meds as prescribed; home readings mostly {home_bp}.",
             "Denies HA, vision changes, CP or SOB.", "Tries to limit salt; walks a few times "
             "a week."),
        assess=("{name}",), plan=(
            "Low-sodium (DASH) diet and regular aerobic exercise reviewed",
            "Home BP log, goal <130/80", "BMP in 3 months to check K and Cr",
            "Consider titration at next visit if home readings remain above goal"),
        family=("Mother with HTN", "Father with HTN and CAD")),
    "type-2-diabetes": Phrasing(
        complaint=("f/u DM2", "diabetes follow-up", "f/u diabetes, review labs"),
        hpi=("{He} checks fingersticks {fs_when}, fasting values in the {fs_range}.",
             "No hypoglycemic episodes. Denies polyuria, polydipsia or blurry vision.",
             "Reports adherence to diet about half the time."),
        assess=("{name}",), plan=(
            "Diabetic diet and weight loss counseling", "Repeat A1c in 3 months",
            "Annual dilated eye exam and monofilament foot exam", "Urine microalbumin/Cr ratio",
            "Statin for primary prevention discussed"),
        follow=("PCP in 3 months with A1c",), family=("Mother with T2DM", "Brother with DM2")),
    "asthma": Phrasing(
        complaint=("wheezing", "SOB and wheezing", "asthma flare"),
        hpi=("{He} reports wheezing and chest tightness for {dur}, using albuterol {puffs}.",
             "Symptoms worse at night and with cold air.", "No recent OCS bursts."),
        positives=("wheezing", "shortness of breath", "cough"),
        exam=(CHRONIC_EXAM_LUNG,), plan=(
            "Albuterol MDI 2 puffs q4-6h PRN", "Inhaler technique reviewed with spacer",
            "Asthma action plan updated", "Avoid triggers; flu vaccine up to date"),
        uncertain=("{name}; viral trigger likely, pneumonia less likely",),
        course=("Pt was treated with scheduled nebulized albuterol/ipratropium and a 5-day "
                "course of oral prednisone, with steady improvement in air movement.",),
        ed=("Given albuterol/ipratropium nebs x3 and prednisone 40 mg PO with improvement.",),
        family=("Sister with asthma", "Mother with allergic rhinitis and asthma")),
    "copd": Phrasing(
        complaint=("SOB", "worsening SOB and cough", "COPD flare"),
        hpi=("{He} reports increased dyspnea and sputum production for {dur}.",
             "Now SOB walking to the mailbox; uses albuterol {puffs}.",
             "Sputum more yellow than usual. No hemoptysis."),
        positives=("shortness of breath", "cough", "wheezing"),
        exam=(CHRONIC_EXAM_LUNG, ("General", "mild tachypnea, speaking in full sentences")),
        uncertain=("{name}; cannot exclude superimposed pneumonia, CXR without clear infiltrate",
                   "{name}, likely viral trigger; r/o PE felt low probability"),
        plan=("Continue tiotropium; albuterol nebs q4h PRN", "Prednisone 40 mg daily x5 days",
              "Smoking cessation counseling > 3 min", "Pulmonary rehab referral",
              "Goal SpO2 88-92%"),
        course=("Pt was treated for a COPD exacerbation with nebulized bronchodilators, "
                "prednisone and a 5-day course of azithromycin. O2 was weaned to {his} home "
                "baseline.",),
        ed=("Given duonebs x3, methylprednisolone 125 mg IV; SpO2 improved to 91% on 2L NC.",),
        imaging=("Chest X-ray, PA and lateral", "Hyperinflated lungs with flattened "
                 "hemidiaphragms. No focal consolidation, effusion or pneumothorax.",
                 "Hyperinflation c/w COPD. No acute cardiopulmonary process."),
        follow=("Pulmonology in 2-4 weeks", "PCP in 1 week"),
        family=("Father with COPD, deceased at 71",)),
    "heart-failure": Phrasing(
        complaint=("SOB and leg swelling", "DOE, orthopnea", "weight gain and SOB"),
        hpi=("{He} reports progressive DOE and b/l LE swelling for {dur}, now 3-pillow "
             "orthopnea.", "Weight up about 4 kg; admits to dietary indiscretion.",
             "Denies CP or palpitations."),
        positives=("shortness of breath", "leg swelling"),
        exam=(("Neck", "JVD to the angle of the jaw at 45 degrees"),
              ("Lungs", "b/l basilar crackles"),
              ("Extremities", "2+ pitting edema b/l LE to the knees")),
        uncertain=("{name}; ACS felt less likely, trend troponin",
                   "{name}, likely precipitated by dietary indiscretion; r/o ischemia"),
        plan=("IV furosemide with strict I/O and daily weights", "2 g sodium, 1.5 L fluid "
              "restriction", "Continue GDMT as BP allows", "TTE to reassess EF",
              "Daily weights at home, call for gain >1 kg/day"),
        course=("Pt was diuresed with IV furosemide, net negative about 5 L over the stay, "
                "with resolution of orthopnea and improving edema; transitioned to oral "
                "diuretic before discharge.",),
        ed=("Given furosemide 40 mg IV with brisk UOP; BNP elevated.",),
        imaging=("Chest X-ray, portable AP", "Cardiomegaly. Pulmonary vascular congestion "
                 "with small b/l pleural effusions.",
                 "Findings c/w CHF / volume overload. Superimposed infection cannot be "
                 "excluded."),
        follow=("Cardiology in 1-2 weeks", "PCP within 7 days; BMP at that visit"),
        family=("Father deceased at 62 of MI", "Mother with CHF")),
    "pneumonia": Phrasing(
        complaint=("cough and fever", "fever, productive cough", "SOB, fever x3 days"),
        hpi=("{He} reports productive cough, fevers to 102 F and chills for {dur}.",
             "Pleuritic pain on the right with deep breaths. Decreased appetite.",
             "No sick contacts or recent travel."),
        positives=("fevers", "chills", "cough", "shortness of breath"),
        exam=(("Lungs", "crackles and egophony over the {lobe}"),
              ("General", "ill-appearing, febrile")),
        assess=("{name}",),
        uncertain=("likely viral vs early bacterial pneumonia",
                   "{name}; cannot exclude aspiration",
                   "{name}, r/o sepsis, lactate normal"),
        plan=("Ceftriaxone and azithromycin", "Blood and sputum cultures", "Incentive "
              "spirometry", "Supplemental O2 to keep SpO2 >92%", "Repeat CXR in 6-8 weeks"),
        course=("Pt was started on IV ceftriaxone and azithromycin for {name}. Blood cultures "
                "remained no growth. Fever curve resolved by HD 2 and pt was transitioned to "
                "PO antibiotics to complete a 5-day course. Weaned to room air.",),
        ed=("CXR with {lobe} opacity; blood cultures drawn and first dose of ceftriaxone and "
            "azithromycin given.",),
        imaging=("Chest X-ray, PA and lateral", "Airspace consolidation in the {lobe}. No "
                 "pleural effusion or pneumothorax. Heart size normal.",
                 "{lobe} consolidation c/w pneumonia in the appropriate clinical setting; "
                 "follow-up imaging recommended to document resolution."),
        follow=("PCP in 1 week", "Repeat CXR in 6-8 weeks")),
    "uti": Phrasing(
        complaint=("dysuria", "burning with urination", "urinary frequency"),
        hpi=("{He} reports dysuria, urgency and frequency for {dur}.",
             "Mild suprapubic discomfort. No flank pain, fevers or vaginal discharge."),
        positives=("dysuria", "frequency"),
        exam=(("Abdomen", "soft, mild suprapubic tenderness; no CVA tenderness"),),
        uncertain=("r/o UTI; UA with positive LE and nitrites, culture sent",
                   "{name}, pyelonephritis less likely given no fever or flank pain"),
        plan=("Nitrofurantoin 100 mg PO BID x5 days", "Urine culture pending", "Hydration",
              "Return for fevers, flank pain or vomiting"),
        course=("Pt received IV ceftriaxone, transitioned to oral antibiotics once afebrile; "
                "urine culture reviewed and antibiotic choice confirmed susceptible.",),
        ed=("UA with pyuria; urine culture sent; first dose of antibiotic given.",)),
    "pyelonephritis": Phrasing(
        complaint=("flank pain and fever", "fever, dysuria and back pain"),
        hpi=("{He} reports {side} flank pain, fevers and chills for {dur}, preceded by "
             "dysuria and frequency.", "Nausea without emesis. No hematuria.",
             "Tolerating some PO."),
        positives=("fevers", "chills", "dysuria", "frequency", "nausea", "back pain"),
        exam=(("Abdomen", "soft, mild suprapubic tenderness; {side} CVA tenderness"),
              ("General", "uncomfortable, febrile")),
        uncertain=("{name}; obstructing stone less likely, consider renal US if not "
                   "improving",), plan=(
            "IV ceftriaxone, narrow per culture", "Urine and blood cultures", "IV fluids",
            "Antiemetics and acetaminophen PRN", "Renal US if no improvement in 48-72 h"),
        course=("Pt received IV ceftriaxone and fluids, defervesced within 48 hours and was "
                "transitioned to oral antibiotics per culture susceptibilities to complete "
                "the course.",),
        ed=("UA with pyuria; urine and blood cultures sent; IV ceftriaxone and 1 L NS "
            "given.",), follow=("PCP in 1 week",)),
    "delivery": Phrasing(
        complaint=("contractions", "labor", "regular painful contractions"),
        hpi=("{gp} at {ga} weeks presenting with regular painful contractions every 3-4 "
             "minutes since this morning.", "+FM, no VB. Membranes intact on arrival.",
             "Prenatal course uncomplicated; prenatal labs unremarkable."),
        exam=(("Abdomen", "gravid, soft, nontender between contractions; FHT 140s, "
               "category I tracing"),),
        plan=("Admit to L&D", "Continuous fetal monitoring", "Epidural on request",
              "GBS status reviewed", "Anticipate delivery"),
        course=("Pt was admitted to L&D and delivered on HD 1. Postpartum course "
                "uncomplicated: tolerating diet, ambulating, voiding, lochia appropriate, "
                "pain controlled with oral agents.",),
        follow=("Postpartum visit in 6 weeks", "OB clinic in 2 weeks for BP check")),
    "ckd": Phrasing(
        complaint=("f/u CKD", "kidney function follow-up"),
        hpi=("{He} is here for f/u of {name}. Urinating without difficulty.",
             "Avoiding NSAIDs as advised. No edema."),
        plan=("Avoid NSAIDs and nephrotoxins", "Renally dose medications",
              "BMP, CBC, phosphorus and PTH", "Nephrology referral if eGFR continues to fall",
              "ACE inhibitor for albuminuria, BP goal <130/80"),
        follow=("Nephrology in 3 months",), family=("Mother on dialysis",)),
    "depression": Phrasing(
        complaint=("depressed mood", "f/u depression", "feeling down"),
        hpi=("{He} reports low mood, poor sleep and anhedonia for {dur}.",
             "PHQ-9 today {phq}. Denies SI/HI.", "Appetite decreased; difficulty "
             "concentrating at work."),
        positives=("depressed mood",),
        exam=(("Psych", "flat affect, linear thought process, denies SI/HI"),),
        plan=("Sertraline, titrate as tolerated", "Referral to behavioral health for CBT",
              "Crisis line and safety plan reviewed", "Repeat PHQ-9 in 4-6 weeks"),
        follow=("PCP in 4 weeks", "Behavioral health intake"),
        family=("Mother with depression", "Sister with anxiety")),
    "hip-fracture": Phrasing(
        complaint=("{side} hip pain after fall", "fall, unable to bear weight"),
        hpi=("{He} had a mechanical fall at home {dur} ago, tripping on a rug, landing on "
             "{his} {side} side; unable to bear weight since.",
             "No head strike or LOC. Denies preceding CP, palpitations or dizziness."),
        positives=("joint pain",),
        exam=(("Extremities", "{side} LE shortened and externally rotated; pain with log "
               "roll; distal pulses 2+, sensation intact"),),
        uncertain=("{name}; syncope felt unlikely given clear mechanical history",),
        plan=("Orthopedics consulted for operative fixation", "NPO after midnight", "Pain "
              "control with acetaminophen, oxycodone PRN", "DVT ppx with enoxaparin post-op",
              "PT/OT eval; fall prevention"),
        course=("Orthopedics was consulted and pt underwent {proc} on HD 2 without "
                "complication. Post-op course notable for pain controlled with oral agents. "
                "Pt worked with PT/OT and was WBAT. DVT ppx with enoxaparin.",),
        ed=("XR {side} hip confirmed fracture; IV morphine given, fascia iliaca block "
            "placed.",),
        imaging=("XR {side} hip, 2 views", "Fracture of the {side} proximal femur with "
                 "varus angulation. No dislocation. Osteopenia.",
                 "Acute {side} hip fracture as described."),
        follow=("Orthopedics in 2 weeks for wound check", "PCP in 1-2 weeks; bone density "
                "evaluation")),
    "pregnancy": Phrasing(
        complaint=("prenatal visit", "routine OB visit", "prenatal care"),
        hpi=("{gp} at {ga} weeks by LMP c/w early US.", "No VB, LOF or cramping.",
             "Taking prenatal vitamins daily."),
        exam=(("Abdomen", "gravid, soft, nontender; FHT 140s by Doppler"),),
        plan=("Continue prenatal vitamins", "Routine prenatal labs reviewed", "Anatomy "
              "US at 18-22 weeks", "Preterm labor and bleeding precautions reviewed"),
        course=("Pt was admitted in labor and had an uncomplicated course; postpartum "
                "recovery was routine.",),
        follow=("OB clinic in 4 weeks",)),
    "breast-cancer": Phrasing(
        complaint=("abnormal mammogram", "breast mass", "breast cancer f/u"),
        hpi=("{He} was found to have a {side} breast mass on screening mammogram, with core "
             "biopsy showing carcinoma.", "No nipple discharge or skin changes.",
             "Here to discuss surgical management."),
        exam=(("Breast", "{side} breast with a 2 cm firm mass at the {clock} o'clock "
               "position; no skin retraction"),),
        plan=("Surgical oncology for lumpectomy with SLNB", "Medical oncology referral",
              "Genetic counseling offered", "Multidisciplinary tumor board review"),
        course=("Pt underwent {proc} without complication and was discharged after "
                "overnight observation.",),
        imaging=("Diagnostic mammogram, {side}", "Irregular spiculated mass in the {side} "
                 "breast at {clock} o'clock, approximately 1.8 cm. No suspicious "
                 "calcifications.", "Highly suggestive of malignancy. BI-RADS 5. "
                 "Tissue sampling recommended."),
        follow=("Surgical oncology in 2 weeks", "Medical oncology"),
        family=("Maternal aunt with breast cancer at 52", "No family hx of ovarian cancer")),
    "lung-cancer": Phrasing(
        complaint=("lung mass", "cough and weight loss", "abnormal CT"),
        hpi=("{He} was found to have a {lobe} mass on CT obtained for persistent cough, "
             "biopsy c/w carcinoma.", "Reports 5 kg weight loss over 3 months. No hemoptysis."),
        positives=("cough", "weight loss"),
        plan=("PET/CT and brain MRI for staging", "PFTs", "Thoracic surgery evaluation",
              "Tumor board review", "Smoking cessation"),
        course=("Pt underwent {proc}. Chest tube removed POD 2. Pain controlled with oral "
                "agents.",),
        imaging=("CT chest with contrast", "Spiculated 3.1 cm mass in the {lobe}. Mildly "
                 "enlarged ipsilateral hilar node. No pleural effusion.",
                 "{lobe} mass highly suspicious for primary lung malignancy. Recommend "
                 "tissue sampling and PET/CT."),
        follow=("Thoracic surgery in 2 weeks", "Medical oncology"),
        family=("Father deceased at 68 of lung cancer",)),
    "colorectal-cancer": Phrasing(
        complaint=("rectal bleeding", "abnormal colonoscopy", "anemia, change in bowel habits"),
        hpi=("{He} reports intermittent hematochezia and change in bowel habits for {dur}. "
             "Colonoscopy showed a {site} mass, biopsy c/w adenocarcinoma.",
             "Some fatigue. No abdominal pain or obstructive symptoms."),
        positives=("hematochezia",),
        plan=("CT chest/abdomen/pelvis for staging", "CEA level", "Colorectal surgery "
              "referral", "Bowel prep per surgery"),
        course=("Pt underwent {proc}. Diet advanced on POD 2, return of bowel function POD 3. "
                "Ambulating independently.",),
        imaging=("CT abdomen and pelvis with contrast", "Irregular wall thickening of the "
                 "{site} over 4 cm. No liver lesions. No ascites.", "Mass of the {site} c/w "
                 "known primary. No evidence of hepatic metastases."),
        follow=("Colorectal surgery in 2 weeks", "Medical oncology"),
        family=("Father with colon polyps",)),
    "prostate-cancer": Phrasing(
        complaint=("elevated PSA", "prostate cancer f/u"),
        hpi=("{He} was referred for a PSA of {psa}; TRUS biopsy showed adenocarcinoma.",
             "Mild nocturia. No bone pain, hematuria or weight loss."),
        exam=(("GU", "prostate firm with a nodule on the {side} lobe on DRE"),),
        plan=("Discussed active surveillance vs radical prostatectomy vs radiation",
              "Bone scan not indicated at this risk level", "Urology follow-up"),
        course=("Pt underwent {proc}. Foley to remain 7-10 days. Ambulating, tolerating diet.",),
        follow=("Urology in 1 week for catheter removal",),
        family=("Father with prostate cancer in his 70s",)),
    "melanoma": Phrasing(
        complaint=("changing mole", "skin lesion", "melanoma f/u"),
        hpi=("{He} noticed a changing pigmented lesion on the {site} over {dur}; shave "
             "biopsy showed melanoma.", "No other new lesions."),
        exam=(("Skin", "1.2 cm irregular, variegated pigmented lesion on the {site} with "
               "healing biopsy site; no regional LAD"),),
        plan=("Wide local excision with 1 cm margins", "SLNB discussed", "Full-body skin exam "
              "every 3-6 months", "Sun protection counseling"),
        follow=("Dermatology in 3 months",), family=("No family hx of melanoma",)),
}


# Chronic conditions seen between exacerbations: nothing here may document a decompensation
# the code does not carry.
PHRASINGS["asthma-stable"] = Phrasing(
    complaint=("asthma f/u", "f/u asthma, med refill"),
    hpi=("{He} uses albuterol about {rescue}; no night awakenings.", "No ED visits or OCS "
         "bursts since last visit.", "Exercise tolerance at baseline."),
    plan=PHRASINGS["asthma"].plan, family=PHRASINGS["asthma"].family)
PHRASINGS["copd-stable"] = Phrasing(
    complaint=("COPD f/u", "f/u COPD"),
    hpi=("{He} reports stable DOE at baseline, able to walk a block.", "Chronic morning "
         "cough with clear sputum, unchanged.", "Using inhalers as prescribed."),
    positives=("cough",), plan=PHRASINGS["copd"].plan[:1] + PHRASINGS["copd"].plan[2:4],
    family=PHRASINGS["copd"].family)
PHRASINGS["heart-failure-stable"] = Phrasing(
    complaint=("CHF f/u", "f/u heart failure"),
    hpi=("{He} reports stable exertional tolerance, sleeps on one pillow.", "Weights stable "
         "at home; adherent to low-sodium diet.", "No LE swelling beyond baseline."),
    plan=("Continue GDMT", "Daily weights, call for gain >1 kg/day", "2 g sodium diet",
          "BMP today"), follow=("Cardiology in 3 months",), family=PHRASINGS[
              "heart-failure"].family)
PHRASINGS["hip-fracture-aftercare"] = Phrasing(
    complaint=("post-op f/u", "wound check after hip surgery"),
    hpi=("{He} is s/p repair of {his} {side} hip fracture, ambulating with a walker.",
         "Pain controlled with acetaminophen.", "Working with PT at home."),
    exam=(("Extremities", "{side} hip incision c/d/i without erythema; distal NVI"),),
    plan=("Continue PT, WBAT", "Staples removed today", "DVT ppx to complete 4 weeks",
          "Fall prevention; bone density evaluation"), follow=("Orthopedics in 6 weeks",))
ON_TREATMENT = Phrasing(
    complaint=("oncology f/u", "treatment visit"),
    hpi=("{He} is under treatment for {name}.", "Tolerating treatment with mild fatigue; "
         "no fevers.", "Appetite fair, weight stable."),
    assess=("{name}, on treatment", "{name}"), plan=(
        "Labs reviewed, OK to treat", "Antiemetics PRN", "Continue current regimen",
        "Survivorship and symptom management reviewed"), follow=("Medical oncology",))
ALIASES = {"asthma-exacerbation": "asthma", "copd-exacerbation": "copd",
            "heart-failure-decompensation": "heart-failure"}


@dataclass(frozen=True)
class Operation:
    words: tuple[str, ...]  # any of these in the procedure's name selects this operation
    anesthesia: tuple[str, ...]
    steps: str
    specimen: str  # "" when nothing goes to pathology
    gross: str
    findings: str
    open: bool = True  # prepped, draped, incised and closed (not an endoscopy)


OPERATIONS = (
    Operation(("colonoscopy", "endoscopy", "bronchoscopy", "biopsy of colon"),
               ("MAC (propofol)", "Moderate sedation"), "The scope was advanced under direct "
               "vision to the cecum, identified by the appendiceal orifice and ileocecal "
               "valve. The mucosa was carefully examined on withdrawal; the bowel prep was "
               "good.", "{where}, biopsies", "{n} fragments of tan mucosa, 0.2 to 0.5 cm",
               "As described below.", open=False),
    Operation(("mastectomy", "excision of breast", "excision of left breast",
                "excision of right breast"), ("General",),
               "An elliptical incision encompassing the nipple-areola complex was made. Skin "
               "flaps were raised to the clavicle, sternum, inframammary fold and latissimus, "
               "and the breast was removed off the pectoralis fascia.",
               "{side} breast, mastectomy", "a mastectomy specimen weighing {w}0 g with an "
               "ellipse of skin and nipple; serial sections show a firm stellate mass {t} cm, "
               "{margin}", "Mass in the breast; no chest wall involvement."),
    Operation(("biopsy",), ("Local", "Moderate sedation with local"),
               "Under image guidance the lesion was localized and {n} core samples were "
               "obtained; a marker clip was placed.", "{where}, biopsy",
               "{n} tan-white cores of tissue, 0.6 to 1.5 cm in length, entirely submitted",
               "Lesion sampled as planned.", open=False),
    Operation(("cesarean", "products of conception"), ("Spinal",),
               "A Pfannenstiel incision was made and carried down to the fascia. A low "
               "transverse hysterotomy was made and the infant delivered atraumatically and "
               "handed to the waiting pediatric team. The placenta was delivered and the "
               "hysterotomy closed in two layers.", "", "", "Viable infant; normal uterus, "
               "tubes and ovaries."),
    Operation(("mastectomy", "lumpectomy", "breast"), ("General", "MAC with local"),
               "A curvilinear incision was made over the wire-localized lesion. Skin flaps "
               "were raised and the lesion excised with a rim of normal tissue, oriented "
               "with sutures (short superior, long lateral).",
               "{side} breast tissue, oriented",
               "an oriented fibrofatty specimen measuring {a} x {b} x {c} cm, inked; cut "
               "surface shows a firm stellate tan-white mass {t} cm in greatest dimension, "
               "{margin}",
               "Palpable mass corresponding to the localized lesion; no gross skin "
               "involvement."),
    Operation(("colectomy", "colon", "sigmoid", "rectum", "rectal"), ("General endotracheal",),
               "Pneumoperitoneum was established and ports placed under direct vision. The "
               "colon was mobilized along the white line of Toldt, the mesentery divided "
               "with the vessels ligated at their origin, and a stapled anastomosis created; "
               "leak test negative.", "segment of colon",
               "a segment of colon {a} cm in length with attached mesentery; an "
               "ulcerated, circumferential mass {t} cm is present, {margin}",
               "Mass in the expected location; no liver lesions or peritoneal "
               "implants."),
    Operation(("lobectomy", "lung", "wedge", "pulmonary"), ("General with double-lumen ETT",),
               "VATS ports were placed; the fissure was completed, and the vein, artery "
               "and bronchus were divided with staplers. Mediastinal lymph node dissection "
               "was performed.", "lobe of lung with hilar nodes",
               "a lobe of lung weighing {w} g; a firm gray-white subpleural mass {t} cm, "
               "{margin}", "Firm mass in the lobe; no pleural "
               "effusion."),
    Operation(("prostatectomy", "prostate"), ("General endotracheal",),
               "The robot was docked. The space of Retzius was developed, the endopelvic "
               "fascia incised, the dorsal venous complex ligated and the prostate and "
               "seminal vesicles removed; vesicourethral anastomosis over a Foley catheter.",
               "prostate and seminal vesicles",
               "a prostate weighing {w} g with attached seminal vesicles, inked; cut "
               "surface shows a vague yellow nodule in the {side} posterior peripheral zone",
               "Prostate without gross extraprostatic extension."),
    Operation(("arthroplasty", "hip", "femur", "femoral", "fixation", "nail"),
               ("Spinal with sedation", "General"),
               "A lateral approach was used; the fracture was reduced under fluoroscopy and "
               "the implant placed with good position on AP and lateral views.",
               "{side} femoral head",
               "a femoral head {a} cm in diameter with a fracture through the neck; the "
               "articular cartilage is smooth", "Displaced fracture of the proximal femur."),
    Operation(("excision", "skin", "melanoma", "lesion"), ("Local with MAC", "Local"),
               "An ellipse was designed around the biopsy scar with 1 cm margins and "
               "excised down to fascia; the defect was closed in layers.",
               "skin, {site}, wide local excision",
               "an ellipse of skin {a} x {b} cm excised to a depth of {c} cm with a healing "
               "biopsy scar centrally; no residual pigmented lesion grossly",
               "Healing biopsy site; no satellite lesions."),
)
GENERIC_OPERATION = Operation(
    (), ("General endotracheal", "MAC"), "The procedure was carried out in the standard "
    "fashion without difficulty.", "tissue as labeled",
    "multiple fragments of tan-pink soft tissue aggregating {a} x {b} x {c} cm",
    "As expected from preoperative evaluation.")
