"""Disease modules for nine common conditions: who has them (by published US prevalence or
incidence) and the visits, results, orders, procedures and documents that follow from them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from datetime import date, timedelta

from chartkeeper.synth.course import (
    AMBULATORY,
    EMERGENCY,
    INPATIENT,
    OBSERVATION,
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
from chartkeeper.synth.modules import (
    BP_PANEL,
    HEART_RATE,
    LISINOPRIL,
    WEIGHT,
    band_rate,
    by_sex,
)
from chartkeeper.synth.people import Person

Bands = tuple[tuple[int, int, float], ...]
Result = tuple[Measure, float | tuple[float, float]]
Rate = Callable[[int, str], float]

# --- prevalence and incidence -------------------------------------------------------------
# Figures marked "(unverified)" could not be re-read against the publication when this was
# written; they are close to it but should be checked before the numbers are relied on.

# Current asthma, % of persons, by sex and age: CDC, "2021 National Health Interview Survey
# (NHIS) Data", Table 4-1 (Percentage of persons with current asthma by age, 2021).
ASTHMA_MALE_BY_AGE: Bands = (
    (0, 5, 0.021), (5, 15, 0.091), (15, 20, 0.097), (20, 25, 0.084), (25, 35, 0.070),
    (35, 65, 0.060), (65, 200, 0.046))
ASTHMA_FEMALE_BY_AGE: Bands = (
    (0, 5, 0.018), (5, 15, 0.062), (15, 20, 0.084), (20, 25, 0.106), (25, 35, 0.087),
    (35, 65, 0.104), (65, 200, 0.094))
# Diagnosed COPD (COPD, emphysema or chronic bronchitis), adults, by age: CDC, "Chronic
# Obstructive Pulmonary Disease Among Adults - United States, 2011", MMWR 2012;61(46):938-43
# (BRFSS 2011): 3.2% at 18-44, 6.6% at 45-54, 9.2% at 55-64, 12.1% at 65-74, 11.6% at 75+.
# Women have it more often than men: 4.1% vs 3.4% age-adjusted in Weeks JD, Elgaddal N,
# "Chronic Obstructive Pulmonary Disease in Adults Age 18 and Older: United States, 2023",
# NCHS Data Brief No. 529 (NHIS 2023).
COPD_BY_AGE: Bands = (
    (18, 45, 0.032), (45, 55, 0.066), (55, 65, 0.092), (65, 75, 0.121), (75, 200, 0.116))
COPD_MEN_TO_WOMEN = 3.4 / 4.1
# Heart failure, adults 20 and over, by sex and age: AHA, "Heart Disease and Stroke
# Statistics - 2019 Update" (NHANES 2013-2016), HF chart: 40-59 men 1.2%, women 1.7%; 80 and
# over men 12.8%, women 12.0% (these four re-read, as quoted from that report, in BMJ Best
# Practice, "Heart failure with reduced ejection fraction: Epidemiology",
# https://bestpractice.bmj.com/topics/en-us/61/epidemiology). 20-39 about 0.3% in both sexes
# and 60-79 men 6.9%, women 4.8% (unverified: the chart itself was not found, and no source
# seen quotes these two bands).
HEART_FAILURE_MALE_BY_AGE: Bands = ((20, 40, 0.003), (40, 60, 0.012), (60, 80, 0.069),
                                    (80, 200, 0.128))
HEART_FAILURE_FEMALE_BY_AGE: Bands = ((20, 40, 0.003), (40, 60, 0.017), (60, 80, 0.048),
                                      (80, 200, 0.120))
# Chronic kidney disease stages 1-4, adults: CDC, "Chronic Kidney Disease in the United
# States, 2021" (CKD Surveillance System, NHANES 2015-2018, CKD-EPI): 6.0% at 18-44, 12.4% at
# 45-64, 38.1% at 65 and over; men 12.4%, women 14.3%. Every case is modelled as diagnosed
# (in truth as many as 9 in 10 adults with CKD do not know they have it).
CKD_BY_AGE: Bands = ((18, 45, 0.060), (45, 65, 0.124), (65, 200, 0.381))
CKD_MEN_TO_WOMEN = 12.4 / 14.3
# Major depressive episode in the past year: NIMH, "Major Depression" statistics page
# (SAMHSA NSDUH 2021): adults 18-25 18.6%, 26-49 9.3%, 50 and over 4.5%; adult women 10.3%,
# men 6.2%. Adolescents 12-17: girls 29.2%, boys 11.5%.
DEPRESSION_ADULTS_BY_AGE: Bands = ((18, 26, 0.186), (26, 50, 0.093), (50, 200, 0.045))
DEPRESSION_MEN_TO_WOMEN = 6.2 / 10.3
DEPRESSION_ADOLESCENT_GIRLS = 0.292
DEPRESSION_ADOLESCENT_BOYS = 0.115
# Community-acquired pneumonia requiring hospitalization, annual cases per person. Children:
# Jain S et al., "Community-Acquired Pneumonia Requiring Hospitalization among U.S.
# Children", NEJM 2015;372:835-45, Table 2: <2 years 62.2, 2-4 years 23.8, 5-9 years 10.1,
# 10-17 years 4.2 per 10,000 (re-read in the PMC author manuscript, Table 2,
# https://pmc.ncbi.nlm.nih.gov/articles/PMC4697461/table/T2). Adults: Jain S et al.,
# "Community-Acquired Pneumonia Requiring Hospitalization among U.S. Adults", NEJM
# 2015;373:415-27: 65-79 years 63.0, 80 and over 164.3 per 10,000 (24.8 over all adults)
# (re-read in the abstract's results as summarised at
# https://study.space/p/Community-Acquired_Pneumonia_Requiring_Hospitalization_among_U.S._Adults.
# and, for 24.8, BMJ Best Practice, https://bestpractice.bmj.com/topics/en-us/17/epidemiology);
# 18-49 years 6.3 and 50-64 years 26.0 (unverified: the paper's age-group figure/table was not
# found; the abstract gives only the two oldest bands).
PNEUMONIA_BY_AGE: Bands = (
    (0, 2, 0.00622), (2, 5, 0.00238), (5, 10, 0.00101), (10, 18, 0.00042),
    (18, 50, 0.00063), (50, 65, 0.00260), (65, 80, 0.00630), (80, 200, 0.01643))
# Urinary tract infection treated with antibiotics, annual: Foxman B et al., "Urinary tract
# infection: self-reported incidence and associated costs", Ann Epidemiol 2000;10:509-15:
# 10.8% of women 18 and over, 17.5% of women 18-24, report at least one in the past 12
# months. Men account for about 20% of UTIs (Griebling TL, "Urologic Diseases in America
# project: trends in resource use for urinary tract infections in men", J Urol 2005), so a
# man's rate is a quarter of a woman's. Children are not modelled.
UTI_WOMEN_BY_AGE: Bands = ((18, 25, 0.175), (25, 200, 0.108))
UTI_MEN_SHARE = 0.20
# Share of ambulatory UTI visits made to an emergency department: 21.3% (Foxman B, "Urinary
# tract infection syndromes", Infect Dis Clin N Am 2014;28:1-13, NAMCS/NHAMCS 2007).
UTI_EMERGENCY_SHARE = 0.213
# Hip fracture, annual cases per person, 65 and over: Fisher ES et al., "Hip fracture
# incidence and mortality in New England", Epidemiology 1991;2:116-22 (Medicare): women 2.2
# per 1,000 at 65-69 rising to 31.8 at 90-94, men 0.9 rising to 20.8. The bands between are
# geometric interpolation of those ends. Over 1986-2005 the US mean was 957 per 100,000
# women and 414 per 100,000 men 65 and over (Brauer CA et al., JAMA 2009;302:1573-9).
HIP_FRACTURE_FEMALE_BY_AGE: Bands = (
    (65, 70, 0.0022), (70, 75, 0.00375), (75, 80, 0.0064), (80, 85, 0.0109),
    (85, 90, 0.0186), (90, 200, 0.0318))
HIP_FRACTURE_MALE_BY_AGE: Bands = (
    (65, 70, 0.0009), (70, 75, 0.00169), (75, 80, 0.00316), (80, 85, 0.00592),
    (85, 90, 0.0111), (90, 200, 0.0208))
# Live births per woman per year by mother's age: Osterman MJK et al., "Births: Final Data
# for 2022", NVSR 73(2), 2024: 15-19 13.6 per 1,000 and cesarean delivery rate 32.1% (both
# re-read in the report's abstract, reproduced at
# https://opqic.org/cdc-national-vital-statistics-report-births-final-data-2022/ and
# summarised at https://study.space/p/Births%3A_Final_Data_for_2022.; 32.1% also in Martin JA
# et al., "Births in the United States, 2022", NCHS Data Brief No. 477,
# http://www.cdc.gov/nchs/products/databriefs/db477.htm). 20-24 56.7, 25-29 93.0, 30-34 95.0,
# 35-39 53.9, 40-44 12.5 per 1,000 (unverified: the report's table of rates by age was not
# found). Check 25-29 and 30-34 first: the abstract says the 2022 rates rose 1-5% at 25-29 and
# 35-44 and names no change at 30-34, while the 2021 final rates were reported (secondary
# source) as 93.0 at 25-29 and 97.6 at 30-34, so 93.0 looks like the 2021 figure and 95.0
# would be a fall the abstract does not mention.
BIRTHS_BY_AGE: Bands = (
    (15, 20, 0.0136), (20, 25, 0.0567), (25, 30, 0.0930), (30, 35, 0.0950), (35, 40, 0.0539),
    (40, 45, 0.0125))
CESAREAN_SHARE = 0.321

# Course parameters that are modelling choices, not calibrated to a source.
ASTHMA_EMERGENCY_PER_YEAR = 0.10
# Among adults with COPD, 17.7% had an ED visit or admission for it in the past 12 months
# (MMWR 2012;61(46), the BRFSS optional COPD module).
COPD_EXACERBATION_PER_YEAR = 0.177
HEART_FAILURE_ADMISSION_PER_YEAR = 0.25
FIRST_BIRTH_SHARE = 0.40  # roughly the share of US births that are first births (NVSR)


def asthma_rate(age: int, gender: str) -> float:
    """Prevalence of current asthma."""
    return band_rate(ASTHMA_MALE_BY_AGE if gender == "male" else ASTHMA_FEMALE_BY_AGE, age)


def copd_rate(age: int, gender: str) -> float:
    """Prevalence of diagnosed COPD (adults)."""
    return by_sex(band_rate(COPD_BY_AGE, age), COPD_MEN_TO_WOMEN, gender)


def heart_failure_rate(age: int, gender: str) -> float:
    """Prevalence of heart failure (adults 20 and over)."""
    bands = HEART_FAILURE_MALE_BY_AGE if gender == "male" else HEART_FAILURE_FEMALE_BY_AGE
    return band_rate(bands, age)


def chronic_kidney_disease_rate(age: int, gender: str) -> float:
    """Prevalence of chronic kidney disease stages 1-4 (adults)."""
    return by_sex(band_rate(CKD_BY_AGE, age), CKD_MEN_TO_WOMEN, gender)


def depression_rate(age: int, gender: str) -> float:
    """Prevalence of a major depressive episode in the past year (12 and over)."""
    if 12 <= age < 18:
        return DEPRESSION_ADOLESCENT_BOYS if gender == "male" else DEPRESSION_ADOLESCENT_GIRLS
    return by_sex(band_rate(DEPRESSION_ADULTS_BY_AGE, age), DEPRESSION_MEN_TO_WOMEN, gender)


def pneumonia_rate(age: int, gender: str) -> float:
    """Annual incidence of pneumonia needing hospital care (the same for both sexes)."""
    return band_rate(PNEUMONIA_BY_AGE, age)


def urinary_tract_infection_rate(age: int, gender: str) -> float:
    """Annual incidence of a treated urinary tract infection (adults)."""
    women = band_rate(UTI_WOMEN_BY_AGE, age)
    return women if gender == "female" else women * UTI_MEN_SHARE / (1 - UTI_MEN_SHARE)


def hip_fracture_rate(age: int, gender: str) -> float:
    """Annual incidence of hip fracture (65 and over)."""
    bands = HIP_FRACTURE_MALE_BY_AGE if gender == "male" else HIP_FRACTURE_FEMALE_BY_AGE
    return band_rate(bands, age)


def pregnancy_rate(age: int, gender: str) -> float:
    """Annual chance of a live birth (women 15-44), by age on the day of delivery."""
    return band_rate(BIRTHS_BY_AGE, age) if gender == "female" else 0.0


# --- codes --------------------------------------------------------------------------------
ASTHMA_MILD_INTERMITTENT = Disease("asthma", "J45.20", "Mild intermittent asthma, uncomplicated",
                                   "195967001", "Asthma (disorder)")
ASTHMA_MILD_PERSISTENT = Disease("asthma", "J45.30", "Mild persistent asthma, uncomplicated",
                                 "195967001", "Asthma (disorder)")
ASTHMA_MODERATE_PERSISTENT = Disease("asthma", "J45.40",
                                     "Moderate persistent asthma, uncomplicated",
                                     "195967001", "Asthma (disorder)")
# Each asthma severity with its exacerbation code (the combination code a coder uses).
ASTHMA_EXACERBATION: dict[str, Disease] = {
    "J45.20": Disease("asthma-exacerbation", "J45.21",
                      "Mild intermittent asthma with (acute) exacerbation",
                      "281239006", "Exacerbation of asthma (disorder)", chronic=False),
    "J45.30": Disease("asthma-exacerbation", "J45.31",
                      "Mild persistent asthma with (acute) exacerbation",
                      "281239006", "Exacerbation of asthma (disorder)", chronic=False),
    "J45.40": Disease("asthma-exacerbation", "J45.41",
                      "Moderate persistent asthma with (acute) exacerbation",
                      "281239006", "Exacerbation of asthma (disorder)", chronic=False),
}
COPD = Disease("copd", "J44.9", "Chronic obstructive pulmonary disease, unspecified",
               "13645005", "Chronic obstructive lung disease (disorder)")
COPD_EXACERBATION = Disease("copd-exacerbation", "J44.1",
                            "Chronic obstructive pulmonary disease with (acute) exacerbation",
                            "195951007",
                            "Acute exacerbation of chronic obstructive airways disease (disorder)",
                            chronic=False)
HEART_FAILURE_REDUCED = Disease("heart-failure", "I50.22",
                                "Chronic systolic (congestive) heart failure",
                                "88805009", "Chronic congestive heart failure (disorder)")
HEART_FAILURE_PRESERVED = Disease("heart-failure", "I50.32",
                                  "Chronic diastolic (congestive) heart failure",
                                  "88805009", "Chronic congestive heart failure (disorder)")
HEART_FAILURE_DECOMPENSATED: dict[str, Disease] = {
    "I50.22": Disease("heart-failure-decompensation", "I50.23",
                      "Acute on chronic systolic (congestive) heart failure",
                      "10633002", "Acute congestive heart failure (disorder)", chronic=False),
    "I50.32": Disease("heart-failure-decompensation", "I50.33",
                      "Acute on chronic diastolic (congestive) heart failure",
                      "10633002", "Acute congestive heart failure (disorder)", chronic=False),
}
PNEUMONIA = Disease("pneumonia", "J18.9", "Pneumonia, unspecified organism",
                    "233604007", "Pneumonia (disorder)", chronic=False)
HYPOXEMIA = Disease("hypoxemia", "R09.02", "Hypoxemia", "389087006", "Hypoxemia (disorder)",
                    chronic=False)
UTI = Disease("uti", "N39.0", "Urinary tract infection, site not specified",
              "68566005", "Urinary tract infectious disease (disorder)", chronic=False)
PYELONEPHRITIS = Disease("pyelonephritis", "N10", "Acute pyelonephritis",
                         "36689008", "Acute pyelonephritis (disorder)", chronic=False)
CKD_STAGES: tuple[Disease, ...] = (
    Disease("ckd", "N18.1", "Chronic kidney disease, stage 1",
            "431855005", "Chronic kidney disease stage 1 (disorder)"),
    Disease("ckd", "N18.2", "Chronic kidney disease, stage 2 (mild)",
            "431856006", "Chronic kidney disease stage 2 (disorder)"),
    Disease("ckd", "N18.31", "Chronic kidney disease, stage 3a",
            "433144002", "Chronic kidney disease stage 3 (disorder)"),
    Disease("ckd", "N18.32", "Chronic kidney disease, stage 3b",
            "433144002", "Chronic kidney disease stage 3 (disorder)"),
    Disease("ckd", "N18.4", "Chronic kidney disease, stage 4 (severe)",
            "431857002", "Chronic kidney disease stage 4 (disorder)"),
)
# eGFR range (mL/min/1.73 m2) of each stage in CKD_STAGES (KDIGO 2012); stages 1 and 2 also
# need albuminuria.
CKD_EGFR_RANGES: tuple[tuple[float, float], ...] = (
    (90, 120), (60, 89), (45, 59), (30, 44), (15, 29))
# Stage mix of CKD stages 1-4 in NHANES 1999-2004 (Coresh J et al., JAMA 2007;298:2038-47):
# stage 1 1.8%, 2 3.2%, 3 7.7%, 4 0.35% of adults; stage 3 split 3a:3b as 3:1 (a modelling
# choice).
CKD_STAGE_WEIGHTS = (1.8, 3.2, 7.7 * 0.75, 7.7 * 0.25, 0.35)
DEPRESSION_SINGLE = Disease("depression", "F32.1",
                            "Major depressive disorder, single episode, moderate",
                            "370143000", "Major depressive disorder (disorder)")
DEPRESSION_RECURRENT = Disease("depression", "F33.1",
                               "Major depressive disorder, recurrent, moderate",
                               "370143000", "Major depressive disorder (disorder)")
# Hip fractures by side: (femoral neck initial, neck subsequent, intertrochanteric initial,
# intertrochanteric subsequent).
HIP_FRACTURES: dict[str, tuple[Disease, Disease, Disease, Disease]] = {
    side: (
        Disease("hip-fracture", f"S72.00{n}A",
                f"Fracture of unspecified part of neck of {side} femur, initial encounter for "
                "closed fracture", "5913000", "Fracture of neck of femur (disorder)",
                chronic=False),
        Disease("hip-fracture-aftercare", f"S72.00{n}D",
                f"Fracture of unspecified part of neck of {side} femur, subsequent encounter "
                "for closed fracture with routine healing", "5913000",
                "Fracture of neck of femur (disorder)", chronic=False),
        Disease("hip-fracture", f"S72.14{n}A",
                f"Displaced intertrochanteric fracture of {side} femur, initial encounter for "
                "closed fracture", "359817006", "Closed fracture of hip (disorder)",
                chronic=False),
        Disease("hip-fracture-aftercare", f"S72.14{n}D",
                f"Displaced intertrochanteric fracture of {side} femur, subsequent encounter "
                "for closed fracture with routine healing", "359817006",
                "Closed fracture of hip (disorder)", chronic=False),
    )
    for side, n in (("right", 1), ("left", 2))
}
FALL = Disease("fall", "W19.XXXA", "Unspecified fall, initial encounter",
               "1912002", "Fall (event)", chronic=False)
# Supervision of normal pregnancy by (first pregnancy, trimester 1-3).
PREGNANCY_SUPERVISION: dict[tuple[bool, int], Disease] = {
    (first, trimester): Disease(
        "pregnancy", f"Z34.{0 if first else 8}{trimester}",
        f"Encounter for supervision of {'normal first' if first else 'other normal'} pregnancy, "
        f"{('first', 'second', 'third')[trimester - 1]} trimester",
        "72892002", "Normal pregnancy (finding)", chronic=False)
    for first in (True, False) for trimester in (1, 2, 3)
}
DELIVERY_UNCOMPLICATED = Disease("delivery", "O80",
                                 "Encounter for full-term uncomplicated delivery",
                                 "48782003", "Delivery normal (finding)", chronic=False)
BREECH = Disease("delivery", "O32.1XX0",
                 "Maternal care for breech presentation, not applicable or unspecified",
                 "6096002", "Breech presentation (finding)", chronic=False)
LIVE_BIRTH = Disease("live-birth", "Z37.0", "Single live birth",
                     "169826009", "Single live birth (finding)", chronic=False)

ALBUTEROL_INHALER = Drug("745679", "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
                         "2 puffs inhaled every 4 to 6 hours as needed for wheezing")
ALBUTEROL_NEBULIZED = Drug("351137", "albuterol 0.21 MG/ML Inhalation Solution",
                           "2.5 mg by nebulizer every 20 minutes for 3 doses")
FLUTICASONE_INHALER = Drug("895994",
                           "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
                           "2 puffs inhaled twice daily; rinse mouth after use")
FLUTICASONE_SALMETEROL = Drug(
    "896209", "60 ACTUAT fluticasone propionate 0.25 MG/ACTUAT / salmeterol 0.05 MG/ACTUAT "
    "Dry Powder Inhaler", "1 inhalation twice daily")
PREDNISONE = Drug("312617", "predniSONE 20 MG Oral Tablet",
                  "2 tablets (40 mg) by mouth once daily for 5 days")
AZITHROMYCIN = Drug("308460", "azithromycin 250 MG Oral Tablet",
                    "2 tablets on day 1, then 1 tablet daily on days 2 to 5")
AMOXICILLIN_CLAVULANATE = Drug("562251", "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet",
                               "1 tablet by mouth every 8 hours for 5 days")
CEFTRIAXONE = Drug("1665021", "ceftriaxone 1000 MG Injection",
                   "1 g intravenously every 24 hours")
FUROSEMIDE = Drug("313988", "furosemide 40 MG Oral Tablet", "1 tablet by mouth once daily")
METOPROLOL_SUCCINATE = Drug("866412",
                            "24 HR metoprolol succinate 100 MG Extended Release Oral Tablet",
                            "1 tablet by mouth once daily")
NITROFURANTOIN = Drug("311995", "nitrofurantoin, macrocrystals 50 MG Oral Capsule",
                      "2 capsules (100 mg) by mouth four times daily for 5 days")
TRIMETHOPRIM_SULFAMETHOXAZOLE = Drug(
    "198335", "sulfamethoxazole 800 MG / trimethoprim 160 MG Oral Tablet",
    "1 tablet by mouth twice daily for 3 days")
CIPROFLOXACIN = Drug("309309", "ciprofloxacin 500 MG Oral Tablet",
                     "1 tablet by mouth twice daily for 7 days")
SERTRALINE = Drug("312940", "sertraline 50 MG Oral Tablet", "1 tablet by mouth once daily")
ESCITALOPRAM = Drug("349332", "escitalopram 10 MG Oral Tablet", "1 tablet by mouth once daily")
FLUOXETINE = Drug("310385", "fluoxetine 20 MG Oral Capsule", "1 capsule by mouth once daily")
ACETAMINOPHEN = Drug("313782", "acetaminophen 325 MG Oral Tablet",
                     "2 tablets by mouth every 6 hours as needed for pain")
ENOXAPARIN = Drug("854235", "0.4 ML enoxaparin sodium 100 MG/ML Prefilled Syringe",
                  "40 mg subcutaneously once daily for 28 days")
IBUPROFEN = Drug("197806", "ibuprofen 600 MG Oral Tablet",
                 "1 tablet by mouth every 6 hours as needed for pain")

SPO2 = Measure("2708-6", "Oxygen saturation in Arterial blood", "%", "vital-signs")
RESPIRATORY_RATE = Measure("9279-1", "Respiratory rate", "/min", "vital-signs")
TEMPERATURE = Measure("8310-5", "Body temperature", "Cel", "vital-signs")
PEAK_FLOW = Measure("19935-6",
                    "Maximum expiratory gas flow Respiratory system airway by Peak flow meter",
                    "L/min", "vital-signs")
FEV1 = Measure("20150-9", "FEV1", "L", "laboratory")
FEV1_FVC = Measure("19926-5", "FEV1/FVC", "%", "laboratory")
NT_PROBNP = Measure("33762-6",
                    "Natriuretic peptide.B prohormone N-Terminal [Mass/volume] in Serum or Plasma",
                    "pg/mL", "laboratory")
CREATININE = Measure("2160-0", "Creatinine [Mass/volume] in Serum or Plasma", "mg/dL",
                     "laboratory")
EGFR = Measure("33914-3", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] in "
               "Serum or Plasma by Creatinine-based formula (MDRD)", "mL/min/{1.73_m2}",
               "laboratory")
POTASSIUM = Measure("2823-3", "Potassium [Moles/volume] in Serum or Plasma", "mmol/L",
                    "laboratory")
ALBUMIN_CREATININE = Measure("9318-7", "Albumin/Creatinine [Mass Ratio] in Urine", "mg/g",
                             "laboratory")
LVEF = Measure("10230-1", "Left ventricular Ejection fraction", "%", "imaging")
PHQ9 = Measure("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]",
               "{score}", "survey")
WBC = Measure("6690-2", "Leukocytes [#/volume] in Blood by Automated count", "10*3/uL",
              "laboratory")
HEMOGLOBIN = Measure("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", "laboratory")
URINE_WBC = Measure("5821-4", "Leukocytes [#/area] in Urine sediment by Microscopy high power "
                    "field", "/[HPF]", "laboratory")
GLUCOSE_CHALLENGE = Measure("1504-0", "Glucose [Mass/volume] in Serum or Plasma --1 hour post "
                            "50 g glucose PO", "mg/dL", "laboratory")

SPIROMETRY = ProcedureCode("spirometry", "127783003", "Spirometry (procedure)")
NEBULIZER = ProcedureCode(
    "nebulizer", "56251003", "Nebulizer therapy (procedure)", hcpcs="J7613",
    hcpcs_display="Albuterol, inhalation solution, fda-approved final product, non-compounded, "
    "administered through dme, unit dose, 1 mg")
ECHOCARDIOGRAPHY = ProcedureCode("echocardiography", "40701008", "Echocardiography (procedure)")
CHEST_XRAY = ProcedureCode("chest-x-ray", "399208008", "Plain chest X-ray (procedure)")
HIP_XRAY = ProcedureCode("hip-x-ray", "363680008", "Radiographic imaging procedure (procedure)")
URINALYSIS = ProcedureCode("urinalysis", "27171005", "Urinalysis (procedure)")
URINE_CULTURE = ProcedureCode("urine-culture", "117010004", "Urine culture (procedure)")
PHQ9_SCREENING = ProcedureCode(
    "phq-9", "715252007",
    "Depression screening using Patient Health Questionnaire Nine Item score (procedure)")
# Medicare pays for an annual depression screening in primary care under HCPCS G0444.
PHQ9_SCREENING_MEDICARE = ProcedureCode(
    "phq-9", "715252007",
    "Depression screening using Patient Health Questionnaire Nine Item score (procedure)",
    hcpcs="G0444", hcpcs_display="Annual depression screening, 15 minutes")
HIP_REPLACEMENT = {
    side: ProcedureCode(
        "total-hip-replacement", "52734007", "Total replacement of hip (procedure)",
        icd10pcs=code, icd10pcs_display=f"Replacement of {side.title()} Hip Joint with "
        "Metal on Polyethylene Synthetic Substitute, Cemented, Open Approach")
    for side, code in (("right", "0SR9029"), ("left", "0SRB029"))
}
HIP_NAILING = {
    side: ProcedureCode(
        "intramedullary-nailing", "387713003", "Surgical procedure (procedure)",
        icd10pcs=code, icd10pcs_display=f"Reposition {side.title()} Upper Femur with "
        "Intramedullary Internal Fixation Device, Percutaneous Approach")
    for side, code in (("right", "0QS636Z"), ("left", "0QS736Z"))
}
PRENATAL_FIRST_VISIT = ProcedureCode("prenatal-initial-visit", "424441002",
                                     "Prenatal initial visit (regime/therapy)")
PRENATAL_VISIT = ProcedureCode("prenatal-visit", "424619006", "Prenatal visit (regime/therapy)")
FETAL_ANATOMY_ULTRASOUND = ProcedureCode("fetal-anatomy-ultrasound", "271442007",
                                         "Fetal anatomy study (procedure)")
VAGINAL_DELIVERY = ProcedureCode(
    "vaginal-delivery", "177184002", "Normal delivery procedure (procedure)",
    icd10pcs="10E0XZZ", icd10pcs_display="Delivery of Products of Conception, External Approach")
CESAREAN = ProcedureCode(
    "cesarean-section", "11466000", "Cesarean section (procedure)",
    icd10pcs="10D00Z1", icd10pcs_display="Extraction of Products of Conception, Low, Open Approach")


# --- shared pieces of a course ------------------------------------------------------------
def _clip(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


def _first_day(person: Person, window: Window) -> date:
    return max(window.start, person.birth_date)


def _chronic_onset(rng: random.Random, person: Person, window: Window, earliest_age: int) -> date:
    """Onset of a condition the person has on the as-of date: up to 20 years back, never
    before ``earliest_age``."""
    age = person.age_on(window.as_of)
    onset_age = rng.randint(min(age, max(earliest_age, age - 20)), age)
    day = person.birth_date + timedelta(days=onset_age * 365 + rng.randrange(0, 365))
    return min(day, window.as_of - timedelta(days=1))


def _visit_days(rng: random.Random, start: date, end: date, every: int) -> list[date]:
    """Days in [start, end), about ``every`` days apart, starting on ``start``."""
    days = []
    day = start
    while day < end:
        days.append(day)
        day += timedelta(days=every + rng.randrange(-every // 6, every // 6 + 1))
    return days


def _event_days(rng: random.Random, person: Person, start: date, end: date, rate: Rate
                ) -> list[date]:
    """Days of the events of an annual-incidence process over [start, end): one chance per
    365-day slice (a part slice gets its share), at the person's age on a random day of it."""
    days = []
    slice_start = start
    while slice_start < end:
        slice_end = min(slice_start + timedelta(days=365), end)
        length = (slice_end - slice_start).days
        day = slice_start + timedelta(days=rng.randrange(length))
        chance = rate(person.age_on(day), person.gender) * length / 365
        if rng.random() < chance and day >= person.birth_date:
            days.append(day)
        slice_start = slice_end
    return days


def _weight(rng: random.Random, person: Person, day: date) -> float:
    """Body weight (kg): adult NHANES means by sex, children on a rough growth curve, scaled
    by the person's own build so that every module and visit sees about the same person."""
    age = person.age_on(day)
    if age >= 18:
        mean = 90.6 if person.gender == "male" else 77.5
    else:
        mean = 7 if age < 1 else 8 + 2.6 * age if age < 13 else 42 + (age - 13) * 5
    # The build comes from the person, not the module's stream: the same in every module.
    build = _clip(random.Random(f"build:{person.mrn}").gauss(1, 0.17), 0.65, 1.7)
    return round(_clip(mean * build + rng.gauss(0, 1.0), 3, 200), 1)


def _vitals(rng: random.Random, person: Person, day: date, spo2: float = 97,
            heart_rate: float = 76, respiratory_rate: float = 16) -> list[Result]:
    results: list[Result] = [(WEIGHT, _weight(rng, person, day))]
    if person.age_on(day) >= 3:
        systolic = round(_clip(rng.gauss(124, 14), 85, 200))
        diastolic = round(_clip(rng.gauss(76, 9), 45, systolic - 20))
        results.append((BP_PANEL, (systolic, diastolic)))
    results.append((HEART_RATE, round(_clip(rng.gauss(heart_rate, 8), 45, 170))))
    results.append((RESPIRATORY_RATE, round(_clip(rng.gauss(respiratory_rate, 2), 10, 40))))
    results.append((SPO2, round(_clip(rng.gauss(spo2, 1.2), 70, 100))))
    return results


def _ambulatory(day: date, principal: Disease, kind: str = "follow-up",
                secondary: list[Disease] | None = None) -> Visit:
    return Visit(day, kind, AMBULATORY, reasons=[principal], principal=principal,
                 secondary=list(secondary or []), notes=[Note("progress-note")])


def _emergency(day: date, principal: Disease, secondary: list[Disease] | None = None) -> Visit:
    return Visit(day, "emergency", EMERGENCY, reasons=[principal], principal=principal,
                 secondary=list(secondary or []), notes=[Note("emergency-note")])


def _admission(day: date, principal: Disease, days: int, discharge: str,
               secondary: list[Disease] | None = None) -> Visit:
    return Visit(day, "admission", INPATIENT, days=days, reasons=[principal],
                 principal=principal, secondary=list(secondary or []), discharge=discharge,
                 notes=[Note("history-and-physical"), Note("discharge-summary")])


def _older_discharge(rng: random.Random, person: Person, day: date) -> str:
    """Where an older patient goes after a medical admission; most go home."""
    if person.age_on(day) < 75:
        return "home" if rng.random() < 0.85 else "home-health"
    return rng.choices(("home", "home-health", "snf"), weights=(0.55, 0.30, 0.15))[0]


def _sorted(visits: list[Visit]) -> list[Visit]:
    # Stable: an emergency visit stays ahead of the admission it leads to on the same day.
    return sorted(visits, key=lambda visit: visit.day)


def _chronic_course(rng: random.Random, person: Person, window: Window, disease: Disease,
                    earliest_age: int, every: int) -> tuple[Diagnosis, list[Visit]]:
    """The diagnosis and the follow-up visits of a chronic condition; the visit on the onset
    day (when it falls in the window) is the one where it is diagnosed."""
    diagnosis = Diagnosis(disease, _chronic_onset(rng, person, window, earliest_age))
    first = max(diagnosis.onset, _first_day(person, window))
    if diagnosis.onset < first:  # diagnosed before the window: the first follow-up comes later
        first += timedelta(days=rng.randrange(0, every))
    visits = [_ambulatory(day, disease) for day in _visit_days(rng, first, window.as_of, every)]
    if visits and visits[0].day == diagnosis.onset:
        visits[0].kind = "diagnosis"
        visits[0].diagnosed.append(diagnosis)
    return diagnosis, visits


# --- asthma -------------------------------------------------------------------------------
def asthma(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Current asthma: visits twice a year with peak flow, a reliever for everyone and an
    inhaled steroid for persistent asthma; some attacks end in the ED or a short stay."""
    if rng.random() >= asthma_rate(person.age_on(window.as_of), person.gender):
        return ModuleOutput()
    disease = rng.choices((ASTHMA_MILD_INTERMITTENT, ASTHMA_MILD_PERSISTENT,
                           ASTHMA_MODERATE_PERSISTENT), weights=(0.4, 0.35, 0.25))[0]
    diagnosis, visits = _chronic_course(rng, person, window, disease, 1, 182)
    for number, visit in enumerate(visits):
        visit.results = _vitals(rng, person, visit.day) + [
            (PEAK_FLOW, round(_clip(rng.gauss(_expected_peak_flow(person, visit.day) * 0.85,
                                              40), 60, 700)))]
        if number == 0:
            visit.orders.append((ALBUTEROL_INHALER, disease))
            if disease is not ASTHMA_MILD_INTERMITTENT:
                visit.orders.append((FLUTICASONE_INHALER, disease))
    exacerbation = ASTHMA_EXACERBATION[disease.icd10cm]
    start = max(diagnosis.onset, _first_day(person, window))
    for day in _event_days(rng, person, start, window.as_of,
                           lambda _age, _gender: ASTHMA_EMERGENCY_PER_YEAR):
        visits.extend(_respiratory_attack(rng, person, day, exacerbation, PEAK_FLOW,
                                          admit_chance=0.15))
    return ModuleOutput(diagnoses=[diagnosis], visits=_sorted(visits))


def _expected_peak_flow(person: Person, day: date) -> float:
    """A rough predicted peak expiratory flow (L/min) by age and sex."""
    age = person.age_on(day)
    if age < 18:
        return 150 + 22 * max(0, age - 4)
    return (600 if person.gender == "male" else 440) - 2.5 * max(0, age - 30)


def _respiratory_attack(rng: random.Random, person: Person, day: date, exacerbation: Disease,
                        measure: Measure, admit_chance: float) -> list[Visit]:
    """An asthma or COPD exacerbation: ED treatment with nebulized albuterol and steroids,
    sometimes followed by an admission."""
    emergency = _emergency(day, exacerbation)
    admitted = rng.random() < admit_chance
    spo2 = rng.gauss(90, 2) if admitted else rng.gauss(94, 1.5)
    emergency.results = _vitals(rng, person, day, spo2=spo2, heart_rate=104,
                                respiratory_rate=26)
    if measure is PEAK_FLOW:
        emergency.results.append((PEAK_FLOW, round(_clip(
            rng.gauss(_expected_peak_flow(person, day) * 0.45, 30), 40, 500))))
    emergency.procedures.append(Procedure(NEBULIZER, day, exacerbation))
    emergency.orders += [(ALBUTEROL_NEBULIZED, exacerbation), (PREDNISONE, exacerbation)]
    visits = [emergency]
    if admitted:
        if spo2 < 90:
            emergency.secondary.append(HYPOXEMIA)
        stay = _admission(day, exacerbation, rng.randint(2, 5),
                          _older_discharge(rng, person, day), list(emergency.secondary))
        stay.results = _vitals(rng, person, day, spo2=91, heart_rate=96, respiratory_rate=22)
        stay.orders.append((PREDNISONE, exacerbation))
        visits.append(stay)
    return visits


# --- COPD ---------------------------------------------------------------------------------
def copd(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Diagnosed COPD: spirometry twice a year, an ICS/LABA and a reliever; exacerbations
    treated in the ED, half of them admitted."""
    if rng.random() >= copd_rate(person.age_on(window.as_of), person.gender):
        return ModuleOutput()
    diagnosis, visits = _chronic_course(rng, person, window, COPD, 40, 182)
    ratio = rng.uniform(40, 68)  # FEV1/FVC below 70% defines the obstruction
    for number, visit in enumerate(visits):
        visit.results = _vitals(rng, person, visit.day, spo2=93.5) + [
            (FEV1, round(_clip(rng.gauss(1.6 if person.gender == "male" else 1.2, 0.35),
                               0.4, 3.5), 2)),
            (FEV1_FVC, round(_clip(rng.gauss(ratio, 3), 25, 69)))]
        visit.procedures.append(Procedure(SPIROMETRY, visit.day, COPD))
        if number == 0:
            visit.orders += [(ALBUTEROL_INHALER, COPD), (FLUTICASONE_SALMETEROL, COPD)]
    start = max(diagnosis.onset, _first_day(person, window))
    for day in _event_days(rng, person, start, window.as_of,
                           lambda _age, _gender: COPD_EXACERBATION_PER_YEAR):
        attack = _respiratory_attack(rng, person, day, COPD_EXACERBATION, FEV1,
                                     admit_chance=0.5)
        for visit in attack:
            visit.orders.append((AZITHROMYCIN, COPD_EXACERBATION))
        visits.extend(attack)
    return ModuleOutput(diagnoses=[diagnosis], visits=_sorted(visits))


# --- heart failure ------------------------------------------------------------------------
def heart_failure(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Heart failure (half with reduced ejection fraction): an echocardiogram at diagnosis,
    visits every four months with NT-proBNP and kidney function, guideline drugs for reduced
    ejection fraction, and decompensations admitted through the ED."""
    if rng.random() >= heart_failure_rate(person.age_on(window.as_of), person.gender):
        return ModuleOutput()
    reduced = rng.random() < 0.5
    disease = HEART_FAILURE_REDUCED if reduced else HEART_FAILURE_PRESERVED
    diagnosis, visits = _chronic_course(rng, person, window, disease, 20, 120)
    for number, visit in enumerate(visits):
        visit.results = _vitals(rng, person, visit.day, spo2=95.5, heart_rate=78) + [
            (NT_PROBNP, round(_clip(math.exp(rng.gauss(7.0, 0.6)), 150, 20000))),
            (CREATININE, round(_clip(rng.gauss(1.2, 0.25), 0.6, 3.0), 2)),
            (POTASSIUM, round(_clip(rng.gauss(4.3, 0.35), 3.2, 5.8), 1))]
        if visit.diagnosed:
            visit.procedures.append(Procedure(ECHOCARDIOGRAPHY, visit.day, disease))
            visit.results.append((LVEF, round(rng.uniform(20, 38) if reduced
                                              else rng.uniform(52, 65))))
            visit.notes.append(Note("radiology-report", about="Echocardiography",
                                    findings=f"Left ventricular ejection fraction "
                                    f"{'reduced' if reduced else 'preserved'}."))
        if number == 0:
            visit.orders.append((FUROSEMIDE, disease))
            if reduced:
                visit.orders += [(METOPROLOL_SUCCINATE, disease), (LISINOPRIL, disease)]
    decompensated = HEART_FAILURE_DECOMPENSATED[disease.icd10cm]
    start = max(diagnosis.onset, _first_day(person, window))
    for day in _event_days(rng, person, start, window.as_of,
                           lambda _age, _gender: HEART_FAILURE_ADMISSION_PER_YEAR):
        emergency = _emergency(day, decompensated)
        emergency.results = _vitals(rng, person, day, spo2=91, heart_rate=98,
                                    respiratory_rate=24) + [
            (NT_PROBNP, round(_clip(math.exp(rng.gauss(8.6, 0.5)), 900, 35000)))]
        emergency.procedures.append(Procedure(CHEST_XRAY, day, decompensated))
        emergency.notes.append(Note("radiology-report", about="Plain chest X-ray",
                                    findings="Cardiomegaly with pulmonary vascular congestion "
                                    "and small bilateral pleural effusions."))
        visits.append(emergency)
        if rng.random() < 0.8:
            stay = _admission(day, decompensated, rng.randint(3, 7),
                              _older_discharge(rng, person, day))
            stay.results = [(CREATININE, round(_clip(rng.gauss(1.4, 0.3), 0.6, 3.5), 2)),
                            (POTASSIUM, round(_clip(rng.gauss(4.1, 0.4), 3.0, 5.8), 1))]
            stay.orders.append((FUROSEMIDE, decompensated))
            visits.append(stay)
    return ModuleOutput(diagnoses=[diagnosis], visits=_sorted(visits))


# --- pneumonia ----------------------------------------------------------------------------
def pneumonia(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Community-acquired pneumonia needing hospital care: ED with chest X-ray and blood
    count, then an admission (or, for some, an observation stay), then a clinic follow-up."""
    diagnoses: list[Diagnosis] = []
    visits: list[Visit] = []
    for day in _event_days(rng, person, _first_day(person, window), window.as_of,
                           pneumonia_rate):
        hypoxemic = rng.random() < 0.4
        secondary = [HYPOXEMIA] if hypoxemic else []
        emergency = _emergency(day, PNEUMONIA, secondary)
        emergency.results = _vitals(rng, person, day, spo2=88 if hypoxemic else 94,
                                    heart_rate=102, respiratory_rate=24) + [
            (TEMPERATURE, round(_clip(rng.gauss(38.4, 0.6), 36.5, 40.5), 1)),
            (WBC, round(_clip(rng.gauss(14.5, 3.5), 3.5, 30), 1))]
        side = rng.choice(("right", "left"))
        emergency.procedures.append(Procedure(CHEST_XRAY, day, PNEUMONIA, "chest"))
        emergency.notes.append(Note("radiology-report", about="Plain chest X-ray",
                                    findings=f"Airspace consolidation in the {side} lower lobe "
                                    "consistent with pneumonia."))
        emergency.orders.append((CEFTRIAXONE, PNEUMONIA))
        visits.append(emergency)
        if rng.random() < 0.85:
            stay = _admission(day, PNEUMONIA, rng.randint(2, 6),
                              _older_discharge(rng, person, day), secondary)
        else:
            stay = Visit(day, "observation", OBSERVATION, days=1, reasons=[PNEUMONIA],
                         principal=PNEUMONIA, secondary=list(secondary), discharge="home",
                         notes=[Note("history-and-physical"), Note("discharge-summary")])
        stay.results = [(WBC, round(_clip(rng.gauss(10.5, 2.5), 3.5, 25), 1))]
        stay.orders += [(CEFTRIAXONE, PNEUMONIA), (AZITHROMYCIN, PNEUMONIA),
                        (AMOXICILLIN_CLAVULANATE, PNEUMONIA)]
        visits.append(stay)
        home = day + timedelta(days=stay.days)
        follow_up = home + timedelta(days=rng.randint(5, 12))
        if follow_up < window.as_of:
            visit = _ambulatory(follow_up, PNEUMONIA)
            visit.results = _vitals(rng, person, follow_up)
            visits.append(visit)
        diagnoses.append(Diagnosis(PNEUMONIA, day, follow_up + timedelta(days=1)))
        emergency.diagnosed.append(diagnoses[-1])
    return ModuleOutput(diagnoses=diagnoses, visits=_sorted(visits))


# --- urinary tract infection --------------------------------------------------------------
def urinary_tract_infection(rng: random.Random, person: Person, window: Window
                            ) -> ModuleOutput:
    """Adult UTI: an office visit with urinalysis and culture and a short antibiotic course;
    about a fifth are seen in the ED instead, where some have pyelonephritis and a few older
    patients are admitted."""
    diagnoses: list[Diagnosis] = []
    visits: list[Visit] = []
    for day in _event_days(rng, person, _first_day(person, window), window.as_of,
                           urinary_tract_infection_rate):
        emergency = rng.random() < UTI_EMERGENCY_SHARE
        disease = PYELONEPHRITIS if emergency and rng.random() < 0.3 else UTI
        diagnosis = Diagnosis(disease, day, day + timedelta(days=7 if disease is UTI else 14))
        visit = _emergency(day, disease) if emergency else _ambulatory(day, disease, "acute")
        visit.diagnosed.append(diagnosis)
        visit.results = _vitals(rng, person, day, heart_rate=92 if disease is not UTI else 78) + [
            (URINE_WBC, round(_clip(rng.gauss(45, 20), 6, 150)))]
        if disease is PYELONEPHRITIS:
            visit.results += [(TEMPERATURE, round(_clip(rng.gauss(38.6, 0.5), 37, 40.5), 1)),
                              (WBC, round(_clip(rng.gauss(15, 3.5), 4, 30), 1))]
        visit.procedures += [Procedure(URINALYSIS, day, disease),
                             Procedure(URINE_CULTURE, day, disease)]
        if disease is PYELONEPHRITIS:
            drug = CIPROFLOXACIN
        else:
            drug = NITROFURANTOIN if rng.random() < 0.6 else TRIMETHOPRIM_SULFAMETHOXAZOLE
        visit.orders.append((drug, disease))
        visits.append(visit)
        if disease is PYELONEPHRITIS and person.age_on(day) >= 65 and rng.random() < 0.4:
            stay = _admission(day, disease, rng.randint(2, 4), _older_discharge(rng, person, day))
            stay.orders.append((CEFTRIAXONE, disease))
            visits.append(stay)
        diagnoses.append(diagnosis)
    return ModuleOutput(diagnoses=diagnoses, visits=_sorted(visits))


# --- chronic kidney disease ---------------------------------------------------------------
def chronic_kidney_disease(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """CKD stages 1-4 (stage by the NHANES mix): kidney function and albuminuria every six
    months (every four from stage 3b), an ACE inhibitor from stage 3 or with albuminuria."""
    if rng.random() >= chronic_kidney_disease_rate(person.age_on(window.as_of), person.gender):
        return ModuleOutput()
    stage = rng.choices(range(len(CKD_STAGES)), weights=CKD_STAGE_WEIGHTS)[0]
    disease = CKD_STAGES[stage]
    diagnosis, visits = _chronic_course(rng, person, window, disease, 18,
                                        120 if stage >= 3 else 182)
    low, high = CKD_EGFR_RANGES[stage]
    egfr = rng.uniform(low, high)
    for number, visit in enumerate(visits):
        value = round(_clip(rng.gauss(egfr, 2), low, high))
        visit.results = _vitals(rng, person, visit.day) + [
            (EGFR, value),
            (CREATININE, round(_creatinine(person, visit.day, value), 2)),
            (POTASSIUM, round(_clip(rng.gauss(4.4 + 0.1 * stage, 0.35), 3.3, 6.0), 1)),
            (ALBUMIN_CREATININE, round(_clip(math.exp(rng.gauss(4.5, 0.8)), 30, 3000)))]
        if number == 0 and (stage >= 2 or rng.random() < 0.5):
            visit.orders.append((LISINOPRIL, disease))
    return ModuleOutput(diagnoses=[diagnosis], visits=_sorted(visits))


def _creatinine(person: Person, day: date, egfr: float) -> float:
    """Serum creatinine (mg/dL) that gives ``egfr`` by the 4-variable MDRD equation."""
    factor = 175 * person.age_on(day) ** -0.203 * (0.742 if person.gender == "female" else 1)
    return float((egfr / factor) ** (1 / -1.154))


# --- depression ---------------------------------------------------------------------------
def depression(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """A major depressive episode in the past year: diagnosed by PHQ-9 screening, an SSRI,
    and follow-ups every 6 weeks to 2 months with the PHQ-9 falling on treatment."""
    age = person.age_on(window.as_of)
    if age < 12 or rng.random() >= depression_rate(age, person.gender):
        return ModuleOutput()
    disease = DEPRESSION_RECURRENT if rng.random() < 0.5 else DEPRESSION_SINGLE
    onset = window.as_of - timedelta(days=rng.randrange(1, 365))
    if onset < _first_day(person, window):
        return ModuleOutput()
    diagnosis = Diagnosis(disease, onset)
    visits = [_ambulatory(day, disease) for day in _visit_days(rng, onset, window.as_of, 50)]
    visits[0].kind = "diagnosis"
    visits[0].diagnosed.append(diagnosis)
    score = rng.uniform(12, 22)
    screening = PHQ9_SCREENING_MEDICARE if person.coverage == "medicare" else PHQ9_SCREENING
    drug = rng.choices((SERTRALINE, ESCITALOPRAM, FLUOXETINE), weights=(0.45, 0.35, 0.20))[0]
    for number, visit in enumerate(visits):
        visit.results = _vitals(rng, person, visit.day) + [
            (PHQ9, round(_clip(score * 0.8 ** number + rng.gauss(0, 1.5), 0, 27)))]
        if number == 0:
            visit.procedures.append(Procedure(screening, visit.day, disease))
            visit.orders.append((drug, disease))
    return ModuleOutput(diagnoses=[diagnosis], visits=visits)


# --- hip fracture -------------------------------------------------------------------------
def hip_fracture(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """A fall and a hip fracture: ED with hip X-ray, admission, surgery the next day (hip
    replacement for a femoral neck fracture, an intramedullary nail for an intertrochanteric
    one), discharge to rehabilitation or a nursing facility, and an orthopaedic follow-up."""
    diagnoses: list[Diagnosis] = []
    visits: list[Visit] = []
    for day in _event_days(rng, person, _first_day(person, window), window.as_of,
                           hip_fracture_rate):
        side = rng.choice(("right", "left"))
        neck, neck_later, trochanteric, trochanteric_later = HIP_FRACTURES[side]
        femoral_neck = rng.random() < 0.55
        fracture = neck if femoral_neck else trochanteric
        diagnosis = Diagnosis(fracture, day, day + timedelta(days=rng.randint(84, 120)))
        emergency = _emergency(day, fracture, [FALL])
        emergency.diagnosed.append(diagnosis)
        emergency.results = _vitals(rng, person, day, heart_rate=90) + [
            (HEMOGLOBIN, round(_clip(rng.gauss(11.8, 1.4), 7.5, 16), 1))]
        emergency.procedures.append(Procedure(HIP_XRAY, day, fracture, f"{side} hip"))
        emergency.notes.append(Note(
            "radiology-report", about=f"X-ray of the {side} hip",
            findings=f"Displaced {'femoral neck' if femoral_neck else 'intertrochanteric'} "
            f"fracture of the {side} femur."))
        emergency.orders.append((ACETAMINOPHEN, fracture))
        surgery = (HIP_REPLACEMENT if femoral_neck else HIP_NAILING)[side]
        stay = _admission(day, fracture, rng.randint(3, 7),
                          rng.choices(("snf", "rehab", "home-health"), weights=(0.5, 0.3, 0.2))[0],
                          [FALL])
        stay.kind = "surgery"
        operated = min(day + timedelta(days=1), window.as_of - timedelta(days=1))
        stay.procedures.append(Procedure(surgery, operated, fracture, f"{side} hip"))
        stay.notes.append(Note("operative-report", about=surgery.icd10pcs_display))
        stay.results = [(HEMOGLOBIN, round(_clip(rng.gauss(10.2, 1.2), 7, 14), 1))]
        stay.orders += [(ENOXAPARIN, fracture), (ACETAMINOPHEN, fracture)]
        visits += [emergency, stay]
        follow_up = day + timedelta(days=rng.randint(14, 42))
        if follow_up < window.as_of:
            later = neck_later if femoral_neck else trochanteric_later
            visit = _ambulatory(follow_up, later)
            visit.results = _vitals(rng, person, follow_up)
            visits.append(visit)
        diagnoses.append(diagnosis)
    return ModuleOutput(diagnoses=diagnoses, visits=_sorted(visits))


# --- pregnancy ----------------------------------------------------------------------------
def pregnancy(rng: random.Random, person: Person, window: Window) -> ModuleOutput:
    """Pregnancies of women 15-44 by NCHS birth rates: prenatal visits (those inside the
    window) and, when the birth falls inside it, a delivery admission, vaginal or cesarean.
    A pregnancy still going on at the as-of date has only its prenatal visits."""
    if person.gender != "female":
        return ModuleOutput()
    diagnoses: list[Diagnosis] = []
    visits: list[Visit] = []
    previous: date | None = None
    # Births up to 40 weeks past the as-of date show as pregnancies under way.
    for delivery in _event_days(rng, person, _first_day(person, window),
                                window.as_of + timedelta(weeks=40), pregnancy_rate):
        weeks = rng.choices((37, 38, 39, 40, 41), weights=(0.1, 0.2, 0.35, 0.25, 0.1))[0]
        last_period = delivery - timedelta(weeks=weeks, days=rng.randrange(7))
        if (person.age_on(last_period) < 15
                or (previous is not None and last_period < previous + timedelta(days=60))):
            continue
        previous = delivery
        first = rng.random() < FIRST_BIRTH_SHARE
        pregnant = Diagnosis(PREGNANCY_SUPERVISION[(first, 1)],
                             last_period + timedelta(weeks=5),
                             delivery if delivery < window.as_of else None)
        diagnoses.append(pregnant)
        visits += _prenatal_visits(rng, person, window, pregnant, last_period, delivery, first)
        if delivery < window.as_of:
            diagnoses_made, stay = _delivery(rng, person, delivery)
            diagnoses += diagnoses_made
            visits.append(stay)
    return ModuleOutput(diagnoses=diagnoses, visits=_sorted(visits))


def _prenatal_visits(rng: random.Random, person: Person, window: Window, pregnant: Diagnosis,
                     last_period: date, delivery: date, first: bool) -> list[Visit]:
    """The usual schedule (ACOG): every 4 weeks to 28 weeks, every 2 to 36, then weekly."""
    weeks = [8 + rng.randint(0, 3)] + list(range(16, 29, 4)) + [30, 32, 34, 36, 37, 38, 39, 40]
    visits = []
    for week in weeks:
        day = last_period + timedelta(weeks=week, days=rng.randrange(-2, 3))
        if not (_first_day(person, window) <= day < min(window.as_of, delivery)):
            continue
        trimester = 1 if week < 14 else 2 if week < 28 else 3
        supervision = PREGNANCY_SUPERVISION[(first, trimester)]
        visit = _ambulatory(day, supervision, "prenatal")
        visit.results = [(WEIGHT, round(_weight(rng, person, day) + week * 0.35, 1))]
        systolic = round(_clip(rng.gauss(112, 9), 90, 139))
        visit.results.append((BP_PANEL, (systolic, round(_clip(rng.gauss(70, 7), 50, 89)))))
        initial = week < 14
        visit.procedures.append(Procedure(PRENATAL_FIRST_VISIT if initial else PRENATAL_VISIT,
                                          day, supervision))
        if initial:
            visit.kind = "prenatal-initial"
            visit.diagnosed.append(pregnant)
            visit.results.append((HEMOGLOBIN, round(_clip(rng.gauss(12.6, 0.9), 9.5, 15.5), 1)))
        if week == 20:
            visit.procedures.append(Procedure(FETAL_ANATOMY_ULTRASOUND, day, supervision))
            visit.notes.append(Note("radiology-report", about="Fetal anatomy ultrasound",
                                    findings="Single live intrauterine pregnancy; normal fetal "
                                    "anatomy survey."))
        if week == 28:
            visit.results += [(GLUCOSE_CHALLENGE, round(_clip(rng.gauss(112, 18), 70, 139))),
                              (HEMOGLOBIN, round(_clip(rng.gauss(11.6, 0.9), 9.0, 14.5), 1))]
        visits.append(visit)
    return visits


def _delivery(rng: random.Random, person: Person, day: date) -> tuple[list[Diagnosis], Visit]:
    cesarean = rng.random() < CESAREAN_SHARE
    reason = BREECH if cesarean else DELIVERY_UNCOMPLICATED
    made = [Diagnosis(reason, day, day), Diagnosis(LIVE_BIRTH, day, day)]
    stay = _admission(day, reason, rng.randint(2, 4) if cesarean else rng.randint(1, 2), "home",
                      [LIVE_BIRTH])
    stay.kind = "delivery"
    stay.diagnosed += made
    stay.procedures.append(Procedure(CESAREAN if cesarean else VAGINAL_DELIVERY, day, reason))
    if cesarean:
        stay.notes.append(Note("operative-report", about=CESAREAN.icd10pcs_display))
    stay.results = [(HEMOGLOBIN, round(_clip(rng.gauss(11.0, 1.1), 7.5, 14), 1))]
    stay.orders.append((IBUPROFEN, reason))
    return made, stay


MODULES: tuple[Module, ...] = (
    asthma, copd, heart_failure, pneumonia, urinary_tract_infection, chronic_kidney_disease,
    depression, hip_fracture, pregnancy)

# Each module's main condition and the rate its module draws from.
RATES: dict[str, Rate] = {
    "asthma": asthma_rate, "copd": copd_rate, "heart-failure": heart_failure_rate,
    "pneumonia": pneumonia_rate, "uti": urinary_tract_infection_rate,
    "ckd": chronic_kidney_disease_rate, "depression": depression_rate,
    "hip-fracture": hip_fracture_rate, "pregnancy": pregnancy_rate,
}
