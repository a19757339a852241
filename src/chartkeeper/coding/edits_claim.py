"""The coded claim the pre-billing edits read, and the edit they report."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, Final, Literal

from chartkeeper.coding import grouper
from chartkeeper.coding.ncci import ServiceLine

Severity = Literal["error", "warning"]
Setting = Literal["inpatient", "outpatient"]

SEXES: Final = ("male", "female", "unknown")
SETTINGS: Final = ("inpatient", "outpatient")


class ClaimError(ValueError):
    """A coded claim is not shaped as ``check`` needs it (missing dates, bad age or sex...)."""


@dataclass(frozen=True, slots=True)
class Edit:
    """One problem on a claim: ``error`` blocks billing, ``warning`` asks for a look."""

    severity: Severity
    rule: str
    codes: tuple[str, ...]
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"severity": self.severity, "rule": self.rule, "codes": list(self.codes),
                "message": self.message}


@dataclass(frozen=True, slots=True)
class ClaimDiagnosis:
    """An ICD-10-CM code as coded (dots optional) and, inpatient, its POA indicator.

    ``poa`` is Y, N, U, W, or 1 (or "exempt") for a code exempt from POA reporting.
    """

    code: str
    poa: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code.strip():
            raise ClaimError(f"diagnosis code {self.code!r}: expected an ICD-10-CM code as text")
        object.__setattr__(self, "code", self.code.strip().upper())
        if self.poa is not None:
            if not isinstance(self.poa, str):
                raise ClaimError(f"POA indicator {self.poa!r} for {self.code}: expected text")
            poa = self.poa.strip().upper()
            object.__setattr__(self, "poa", "1" if poa == "EXEMPT" else poa or None)


@dataclass(frozen=True, slots=True)
class ClaimProcedure:
    """An ICD-10-PCS code and the day it was performed."""

    code: str
    performed: date | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not self.code.strip():
            raise ClaimError(f"procedure code {self.code!r}: expected an ICD-10-PCS code as text")
        object.__setattr__(self, "code", self.code.strip().upper())
        if self.performed is not None and not isinstance(self.performed, date):
            raise ClaimError(f"procedure {self.code}: performed {self.performed!r} is not a date")


@dataclass(frozen=True, slots=True)
class CodedClaim:
    """A claim as coded, ready for the edits.

    ``diagnoses`` are in sequence: the first is the principal (inpatient) or first-listed
    (outpatient) diagnosis. An inpatient claim needs ``admitted``, ``discharged`` and the NUBC
    ``discharge_status``; an outpatient claim needs ``service_date`` (its first date of service;
    a service line without a date is on it). ``facility`` chooses the NCCI files: hospital
    outpatient (True) or practitioner (False). ``age`` is in whole years (0 to 124).
    """

    setting: Setting
    age: int
    sex: str
    diagnoses: tuple[ClaimDiagnosis, ...]
    service_date: date | None = None
    admitted: date | None = None
    discharged: date | None = None
    discharge_status: str | None = None
    procedures: tuple[ClaimProcedure, ...] = ()
    lines: tuple[ServiceLine, ...] = ()
    facility: bool = False

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ClaimError(f"setting {self.setting!r}: expected 'inpatient' or 'outpatient'")
        if isinstance(self.age, bool) or not isinstance(self.age, int) or not 0 <= self.age <= 124:
            raise ClaimError(f"age {self.age!r}: expected whole years from 0 to 124")
        if self.sex not in SEXES:
            raise ClaimError(f"sex {self.sex!r}: expected 'male', 'female' or 'unknown'")
        for name, kind in (("diagnoses", ClaimDiagnosis), ("procedures", ClaimProcedure),
                           ("lines", ServiceLine)):
            items = tuple(getattr(self, name))
            for item in items:
                if not isinstance(item, kind):
                    raise ClaimError(f"{name}: {item!r} is not a {kind.__name__}")
            object.__setattr__(self, name, items)
        for name in ("service_date", "admitted", "discharged"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, date):
                raise ClaimError(f"{name} {value!r}: expected a date")
        if self.setting == "inpatient":
            self._check_stay()
        elif self.service_date is None:
            raise ClaimError("an outpatient claim needs its date of service (service_date)")

    def _check_stay(self) -> None:
        if self.admitted is None or self.discharged is None:
            raise ClaimError("an inpatient claim needs its admission and discharge dates")
        if self.discharged < self.admitted:
            raise ClaimError(f"discharge date {self.discharged} is before admission date "
                             f"{self.admitted}")
        status = self.discharge_status
        if not isinstance(status, str):
            raise ClaimError(f"discharge status {status!r}: an inpatient claim needs the "
                             "two-digit NUBC patient status code as text ('01' home...)")
        status = status.strip()
        if status.isdigit() and len(status) == 1:
            status = "0" + status
        if status not in grouper.DISCHARGE_STATUSES:
            raise ClaimError(f"discharge status {self.discharge_status!r}: expected a NUBC "
                             f"patient status code ({', '.join(grouper.DISCHARGE_STATUSES)})")
        object.__setattr__(self, "discharge_status", status)

    @property
    def coding_date(self) -> date:
        """The date the code sets are chosen by: discharge (inpatient) or first service."""
        day = self.discharged if self.setting == "inpatient" else self.service_date
        assert day is not None  # __post_init__ made sure
        return day
