"""Computer-assisted coding on short notes whose right codes a coder can check by hand."""

from __future__ import annotations

import pytest

from chartkeeper.coding.cac import Coder, SuggestError, Suggestions, with_evidence_text
from tests.coding.packaged import packaged_coder


@pytest.fixture(scope="module")
def coder() -> Coder:
    return packaged_coder()


def suggest(coder: Coder, text: str, setting: str = "outpatient") -> Suggestions:
    return with_evidence_text(coder.suggest(text, setting), text)


def proposed(found: Suggestions) -> list[str]:
    return [s.code for s in found.diagnoses if s.proposed]


def test_abbreviations_and_qualifiers_find_the_specific_codes(coder: Coder) -> None:
    found = suggest(coder, "ASSESSMENT:\n1. DM2 without complications\n2. essential HTN\n"
                           "3. CKD stage 3a\n4. moderate persistent asthma\n")
    assert set(proposed(found)) == {"E11.9", "I10", "N18.31", "J45.40"}


def test_without_complications_is_not_a_negation(coder: Coder) -> None:
    found = suggest(coder, "ASSESSMENT:\nType 2 diabetes without complications.\n")
    assert proposed(found) == ["E11.9"]


def test_negated_family_and_hypothetical_mentions_are_not_coded(coder: Coder) -> None:
    text = ("HISTORY OF PRESENT ILLNESS:\nDenies chest pain. No evidence of pneumonia. "
            "Mother with breast cancer.\n\nASSESSMENT:\n1. essential hypertension\n"
            "- DVT ppx with enoxaparin\n")
    found = suggest(coder, text)
    codes = {s.code for s in found.diagnoses}
    assert proposed(found) == ["I10"]
    assert not codes & {"R07.9", "J18.9", "C50.919", "I82.90"}


def test_uncertain_diagnoses_are_coded_only_in_an_inpatient_stays_final_diagnoses(
        coder: Coder) -> None:
    text = ("DISCHARGE DIAGNOSES:\nPrincipal: probable community acquired pneumonia\n\n"
            "HOSPITAL COURSE:\nAdmitted with fever and cough.\n")
    assert "J18.9" in proposed(suggest(coder, text, "inpatient"))
    assert "J18.9" not in proposed(suggest(coder, text, "outpatient"))


def test_assessment_and_plan_is_a_section_and_the_header_is_not_coded(coder: Coder) -> None:
    text = ("PROGRESS NOTE\nAuthor: Alexander Fox, MD\n\nASSESSMENT AND PLAN:\n"
            "1. acute on chronic systolic CHF (HFrEF)\n")
    found = suggest(coder, text)
    assert proposed(found) == ["I50.23"]
    assert found.diagnoses[0].evidence[0].section == "observation_and_plan"


def test_evidence_spans_point_at_the_words_in_the_text(coder: Coder) -> None:
    text = "ASSESSMENT:\n1. left intertrochanteric fx after a mechanical fall\n"
    found = suggest(coder, text, "outpatient")
    fracture = next(s for s in found.diagnoses if s.code.startswith("S72.1"))
    assert fracture.code == "S72.142A"  # left, displaced by default, initial encounter
    span = fracture.evidence[0]
    assert text[span.start:span.end] == span.text == "left intertrochanteric fx"
    assert "W19.XXXA" in proposed(found)


def test_history_of_a_condition_is_not_a_current_condition(coder: Coder) -> None:
    found = suggest(coder, "SUBJECTIVE:\n50 y/o M with hx of pneumonia here for f/u HTN.\n\n"
                           "ASSESSMENT:\n1. essential HTN\n")
    assert proposed(found) == ["I10"]


def test_inpatient_principal_follows_the_discharge_diagnoses(coder: Coder) -> None:
    text = ("DISCHARGE DIAGNOSES:\nPrincipal: community-acquired pneumonia of the RLL\n"
            "Secondary: COPD\nSecondary: hypoxemia\n")
    found = suggest(coder, text, "inpatient")
    assert found.principal == "J18.9"
    assert {"J18.9", "J44.9", "R09.02"} <= set(proposed(found))


def test_a_delivery_adds_its_outcome_and_is_the_principal(coder: Coder) -> None:
    text = ("DISCHARGE DIAGNOSES:\nPrincipal: term pregnancy in labor\n"
            "Secondary: moderate persistent asthma\n\nPROCEDURES:\nNormal delivery\n")
    found = suggest(coder, text, "inpatient")
    assert found.principal == "O80"
    assert {"O80", "Z37.0", "J45.40"} <= set(proposed(found))
    assert "Z33.1" not in proposed(found)


def test_pregnancy_supervision_uses_gravidity_and_trimester(coder: Coder) -> None:
    first = suggest(coder, "SUBJECTIVE:\nG1P0 at 16 weeks here for prenatal care.\n\n"
                           "ASSESSMENT:\n1. routine prenatal visit\n")
    later = suggest(coder, "SUBJECTIVE:\nG3P2 at 30 weeks here for prenatal care.\n\n"
                           "ASSESSMENT:\n1. routine prenatal visit\n")
    assert proposed(first)[0] == "Z34.02"
    assert proposed(later)[0] == "Z34.83"


def test_routine_examination_codes_follow_the_patients_age(coder: Coder) -> None:
    child = suggest(coder, "SUBJECTIVE:\n9-year-old girl here for well child check.\n\n"
                           "ASSESSMENT:\nWell child check.\n")
    adult = suggest(coder, "ASSESSMENT:\nAnnual physical.\n", "outpatient")
    assert proposed(child)[0] == "Z00.129"
    assert adult.diagnoses[0].code in ("Z00.00", "Z00.129")  # no age stated: either
    aged = with_evidence_text(coder.suggest("ASSESSMENT:\nAnnual physical.\n", "outpatient",
                                            age=52), "")
    assert proposed(aged)[0] == "Z00.00"


@pytest.mark.parametrize(("assessment", "expected"), [
    # "bronchus or lung": either word is enough; RLL is the right lower lobe.
    ("carcinoma of the RLL", {"C34.31"}),
    ("RML lung carcinoma", {"C34.2"}),
    # A neoplasm "of liver and intrahepatic bile duct" names either site.
    ("metastatic disease to the liver", {"C78.7"}),
    ("metastatic disease to the axillary nodes", {"C77.3"}),
    ("metastatic disease to the adrenal", {"C79.70"}),
    # "[ER+]" and "status" are left unsaid; the patient is the female of "female breast".
    ("left breast cancer (UOQ)\n2. estrogen receptor positive tumor", {"C50.412", "Z17.0"}),
    ("rectal cancer", {"C20"}),
    # A history is the Z85 code of the site, not the cancer: "large intestine" is the colon,
    # and Z85.048's "of rectum, rectosigmoid junction, and anus" names any of the three.
    ("hx of colon cancer", {"Z85.038"}),
    ("hx of rectal cancer", {"Z85.048"}),
    # "Malignant neoplasm of colon, unspecified" gives way to the part of the colon named.
    ("colon cancer (cecum)", {"C18.0"}),
])
def test_neoplasms_are_coded_to_their_documented_site(coder: Coder, assessment: str,
                                                      expected: set[str]) -> None:
    found = suggest(coder, f"ASSESSMENT:\n1. {assessment}\n")
    assert set(proposed(found)) == expected, [(s.code, s.confidence) for s in found.diagnoses]


def test_a_bracketed_restatement_is_optional_but_never_leaves_a_one_word_title(
        coder: Coder) -> None:
    # "Unspecified mood [affective] disorder" must not be coded from any mention of mood.
    found = suggest(coder, "HPI:\nReports low mood and poor sleep.\n\nASSESSMENT:\n"
                           "1. major depressive disorder, single episode, moderate\n")
    assert proposed(found) == ["F32.1"], [(s.code, s.confidence) for s in found.diagnoses]


def test_unspecified_sites_give_way_to_the_documented_ones(coder: Coder) -> None:
    text = ("HPI:\nCore biopsy showed carcinoma.\n\nASSESSMENT:\n1. left breast cancer\n"
            "2. cancer of overlapping sites of the left breast\n"
            "3. metastatic disease to the intrathoracic nodes\n")
    found = suggest(coder, text)
    codes = set(proposed(found))
    assert {"C50.812", "C77.1"} <= codes
    # Not the skin of the breast, not an unknown primary, not an unspecified site beside a
    # specific one of the same category.
    assert not codes & {"C44.501", "C80.1", "C50.912", "C77.9"}, codes


def test_a_title_that_only_says_disorder_of_an_organ_is_not_proposed_for_the_organ(
        coder: Coder) -> None:
    # "Disorder of prostate", "Other disorders of lung", "Liver disease" and "Congestive
    # heart disease" (an inclusion term of I50.9) would otherwise match any mention of the
    # organ: "disorder", "disease" and "congestive" are no words to match on.
    text = ("HPI:\nProstate cancer on surveillance; liver and lung imaging clear; heart "
            "sounds regular.\n\nASSESSMENT:\n1. prostate cancer\n2. benign prostatic "
            "hyperplasia\n")
    found = suggest(coder, text)
    codes = {s.code for s in found.diagnoses}
    assert {"C61", "N40.0"} <= set(proposed(found)), proposed(found)
    assert not codes & {"N42.9", "N42.89", "J98.4", "K76.9", "I50.9"}, codes


@pytest.mark.parametrize("setting", ["outpatient", "inpatient"])
def test_a_site_not_specified_gives_way_to_the_site_the_same_clause_names(
        coder: Coder, setting: str) -> None:
    # N39.0 is "Urinary tract infection, site not specified": the clause names the site.
    found = suggest(coder, "ASSESSMENT:\n1. upper UTI (acute pyelonephritis)\n"
                           "2. type 2 diabetes\n", setting)
    assert found.principal == "N10" and set(proposed(found)) == {"N10", "E11.9"}
    assert "N39.0" in {s.code for s in found.diagnoses}  # offered, not proposed
    alone = suggest(coder, "ASSESSMENT:\n1. UTI\n2. type 2 diabetes\n", setting)
    assert "N39.0" in proposed(alone)


def test_a_well_child_visit_is_a_childs_examination_whatever_the_age_says(
        coder: Coder) -> None:
    no_age = suggest(coder, "ASSESSMENT:\nWell child check.\n")
    infant = suggest(coder, "SUBJECTIVE:\n6 month old here for a checkup.\n\n"
                            "ASSESSMENT:\nRoutine health examination.\n")
    assert proposed(no_age) == ["Z00.129"]
    assert "Z00.00" not in proposed(infant) and proposed(infant)[0].startswith("Z00.12")


def test_json_shape_is_what_the_cli_and_api_print(coder: Coder) -> None:
    found = suggest(coder, "ASSESSMENT:\n1. COPD with acute exacerbation\n").to_json()
    assert set(found) == {"diagnoses", "principal", "procedures"}
    first = found["diagnoses"][0]
    assert first["code"] == "J44.1" and found["principal"] == "J44.1"
    assert set(first) >= {"code", "display", "confidence", "evidence"}
    assert set(first["evidence"][0]) >= {"start", "end", "text"}
    confidences = [d["confidence"] for d in found["diagnoses"]]
    assert confidences == sorted(confidences, reverse=True)


@pytest.mark.parametrize(("text", "setting", "message"), [
    ("", "outpatient", "text is empty"),
    ("   \n ", "inpatient", "text is empty"),
    ("ASSESSMENT:\nHTN", "emergency", "setting must be one of"),
])
def test_bad_requests_are_refused_with_a_reason(coder: Coder, text: str, setting: str,
                                                message: str) -> None:
    with pytest.raises(SuggestError, match=message):
        coder.suggest(text, setting)


def test_text_with_nothing_codable_gives_no_suggestions(coder: Coder) -> None:
    found = coder.suggest("PLAN:\nReturn to clinic in one year.\n", "outpatient")
    assert found.diagnoses == [] and found.principal is None


@pytest.fixture(scope="module")
def with_procedures(coder: Coder) -> Coder:
    from chartkeeper.coding.cac_procedures import ProcedureCoder
    from chartkeeper.coding.pcs import parse_tables
    from chartkeeper.coding.pcs_index import parse_index
    from tests.coding.test_codesets import PCS_2025

    index = PCS_2025.parent / "icd10pcs_index_2025.xml"
    procedures = ProcedureCoder(parse_tables(PCS_2025.read_bytes(), source=PCS_2025.name),
                                parse_index(index.read_bytes(), source=index.name))
    return Coder(coder.diagnoses, coder.displays, coder.nlp, coder.excludes1, procedures)


def test_inpatient_procedures_are_coded_from_the_index_and_the_operative_words(
        with_procedures: Coder) -> None:
    text = ("DISCHARGE DIAGNOSES:\nPrincipal: breech presentation at term\n\n"
            "PROCEDURES:\nCesarean section (03/15/2024)\n\nDESCRIPTION OF PROCEDURE:\n"
            "A Pfannenstiel incision was made. A low transverse hysterotomy was made and the "
            "infant was delivered.\n")
    found = with_evidence_text(with_procedures.suggest(text, "inpatient"), text)
    assert [(p.code, p.proposed) for p in found.procedures] == [("10D00Z1", True)]
    assert found.procedures[0].evidence[0].text == "Cesarean section"
    assert found.procedures[0].display == "Extraction of Products of Conception, Open Approach, Low"
    # The hysterotomy is a step of the cesarean, described in a sentence: not a procedure.
    assert found.principal == "O32.1XX0"


def test_procedures_need_an_inpatient_setting_and_a_named_procedure(
        with_procedures: Coder) -> None:
    listed = "PROCEDURES:\nLaparoscopic appendectomy\n"
    assert with_procedures.suggest(listed, "outpatient").procedures == []
    (appendectomy,) = with_procedures.suggest(listed, "inpatient").procedures
    assert appendectomy.code[:4] == "0DBJ" and appendectomy.code[4] == "4"  # endoscopic
    assert with_procedures.suggest("PROCEDURES:\nNone\n", "inpatient").procedures == []


def test_drugs_given_at_a_visit_get_their_hcpcs_code(coder: Coder) -> None:
    from chartkeeper.coding.cac_procedures import DrugCoder
    from chartkeeper.coding.hcpcs import parse_hcpcs
    from tests.coding.test_codesets import HCPCS_2020

    drugs = DrugCoder(parse_hcpcs(HCPCS_2020.read_bytes(), source=HCPCS_2020.name))
    with_drugs = Coder(coder.diagnoses, coder.displays, coder.nlp, coder.excludes1, None, drugs)
    text = ("ASSESSMENT AND PLAN:\n1. acute exacerbation of COPD\n"
            "   - Start albuterol 2.5 mg by nebulizer every 20 minutes for 3 doses\n"
            "   - Begin ceftriaxone 1 g IV now\n   - Rx prednisone 40 mg PO daily\n"
            "   - Continue albuterol MDI at home\n")
    found = with_evidence_text(with_drugs.suggest(text, "outpatient"), text)
    # The FDA-approved unit dose, not the compounded preparation; an Rx or a home inhaler
    # is not a drug given at the visit.
    assert [(p.code, p.evidence[0].text) for p in found.procedures] == [
        ("J7613", "albuterol"), ("J0696", "ceftriaxone")]
    assert with_drugs.suggest(text, "inpatient").procedures == []


def test_a_prescription_is_no_drug_given_and_a_regimens_cycle_codes_each_drug(
        coder: Coder) -> None:
    from chartkeeper.coding.cac_procedures import DrugCoder
    from chartkeeper.coding.hcpcs import parse_hcpcs
    from tests.coding.test_codesets import HCPCS_2020

    drugs = DrugCoder(parse_hcpcs(HCPCS_2020.read_bytes(), source=HCPCS_2020.name))
    with_drugs = Coder(coder.diagnoses, coder.displays, coder.nlp, coder.excludes1, None, drugs)

    def given(text: str) -> list[str]:
        return [p.code for p in with_drugs.suggest(text, "outpatient").procedures]

    # "Start" an inhaler PRN is a prescription (J7613 is nebulizer solution given here).
    assert given("PLAN:\n- Start albuterol 0.09 mg/actuation MDI, 2 puffs inhaled q4-6h PRN\n"
                 "- Rx ceftriaxone 1 g IV q24h\n") == []
    # An emergency order for doses given there and then is given, "Rx" or not.
    assert given("PLAN:\n- Rx albuterol 2.5 mg by nebulizer every 20 minutes for 3 doses\n"
                 ) == ["J7613"]
    # A cycle given today: each drug of the current phase (FOLFOX named by its acronym;
    # paclitaxel comes after the doxorubicin and cyclophosphamide cycles; J9070 is
    # "Cyclophosphamide, 100 mg", a chemotherapy code without "Injection").
    folfox = given("ASSESSMENT:\nFOLFOX with bevacizumab, cycle 3 of 12.\n1. colon cancer\n\n"
                   "PLAN:\n- Chemotherapy today\n")
    assert {"J9263", "J0640", "J9190", "J9035"} == set(folfox), folfox
    assert sorted(given("ASSESSMENT:\nDoxorubicin and cyclophosphamide then paclitaxel, "
                        "cycle 1 of 4.\n\nPLAN:\n- Chemotherapy today\n")) == ["J9000", "J9070"]
    # The same regimen named on a visit that gives nothing today codes nothing.
    assert given("ASSESSMENT:\nFOLFOX, cycle 3 of 12, held for neutropenia.\n\n"
                 "PLAN:\n- Recheck counts next week\n") == []
