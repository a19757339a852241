"""What the MS-DRG grouper assigned a stay, and how it is read from ``msdrg``'s result."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final, Literal

from msdrg.grouper import GroupResult

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.grouper_msdrg import procedure_is_or, procedure_valid
from chartkeeper.coding.grouper_stay import Diagnosis, Procedure
from chartkeeper.coding.grouper_table5 import DrgWeight

Severity = Literal["MCC", "CC", "none"]
Partition = Literal["medical", "surgical"]

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

SEVERITIES: Final[Mapping[str, Severity]] = {"MCC": "MCC", "CC": "CC", "NONE": "none"}


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


def principal_result(principal: Diagnosis, result: GroupResult) -> DiagnosisResult:
    output = result.get("pdx_output")
    if output is None:
        raise CodeSetError(f"msdrg returned nothing for principal diagnosis {principal.code}")
    return _diagnosis_result(principal, dict(output), principal=True)


def secondary_results(
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
    severity = SEVERITIES.get(str(output.get("severity")), "none")
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


def procedure_results(
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
        valid = procedure_valid(version, procedure.code)
        results.append(
            ProcedureResult(
                code=procedure.code,
                performed=procedure.performed,
                valid=valid,
                is_or=procedure_is_or(version, procedure.code) if valid else None,
                affects_drg=output.get("drg_impact") in ("FINAL", "BOTH"),
            )
        )
    return tuple(results)


def partition_of(
    weight: DrgWeight | None, procedures: Sequence[ProcedureResult]
) -> Partition | None:
    if weight is not None:
        return "surgical" if weight.type == "SURG" else "medical"
    deciding = [procedure for procedure in procedures if procedure.affects_drg]
    if any(procedure.is_or for procedure in deciding):
        return "surgical"
    if any(procedure.is_or is None for procedure in deciding):
        return None
    return "medical"


def _strings(value: object) -> frozenset[str]:
    return frozenset(str(item) for item in value) if isinstance(value, list) else frozenset()
