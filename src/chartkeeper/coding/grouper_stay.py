"""The inpatient stay the MS-DRG grouper and the Medicare Code Editor read: codes, POA, status."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Final, Literal

from chartkeeper.coding.errors import CodeSetError

Sex = Literal["male", "female", "unknown"]

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

SEX_CODES: Final[Mapping[str, Literal[0, 1, 2]]] = {"male": 0, "female": 1, "unknown": 2}
_CM_CODE = re.compile(r"[A-Z][0-9][0-9A-Z](?:\.?[0-9A-Z]{1,4})?")
# ICD-10-PCS uses digits and letters except I and O.
_PCS_CODE = re.compile(r"[0-9A-HJ-NP-Z]{7}")


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
        if self.sex not in SEX_CODES:
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
