"""``msdrg`` itself: its one grouper and editor, the version in force, the claim it reads.

Also what ``msdrg`` does not say outright about a procedure, worked out by probing it: whether
the code is valid (the MCE's invalid-code edit at the version's first day) and whether it is an
O.R. procedure (grouped alone with a principal diagnosis from MDC 23).
"""

from __future__ import annotations

import atexit
import threading
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from typing import Final

import msdrg
from msdrg.grouper import ClaimInput, DiagnosisInput, ProcedureInput

from chartkeeper.coding.errors import CodeSetError
from chartkeeper.coding.grouper_stay import SEX_CODES, Diagnosis, Stay

# A principal diagnosis from MDC 23 ("Other fatigue", valid in every version msdrg ships): MDC
# 23's surgical DRGs 939-941 take any O.R. procedure, so a procedure grouped alone with it lands
# there exactly when it is an O.R. procedure.
_PROBE_PDX: Final = "R5383"
_MDC23_SURGICAL: Final = frozenset({939, 940, 941})


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


def engine() -> _Engine:
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
        "sex": SEX_CODES[stay.sex],
        "discharge_status": int(stay.discharge_status),
        "hospital_status": "EXEMPT" if poa_exempt_hospital else "NOT_EXEMPT",
        "pdx": diagnosis_input(stay.principal),
        "sdx": [diagnosis_input(diagnosis) for diagnosis in stay.secondary],
        "procedures": [ProcedureInput(code=procedure.code) for procedure in stay.procedures],
    }
    if stay.admitting is not None:
        claim["admit_dx"] = DiagnosisInput(code=stay.admitting)
    return claim


def _checked_version(version: int) -> int:
    if version not in {window.version for window in _WINDOWS}:
        available = ", ".join(str(window.version) for window in _WINDOWS)
        raise CodeSetError(f"MS-DRG version {version!r}: msdrg offers {available}")
    return version


def diagnosis_input(diagnosis: Diagnosis) -> DiagnosisInput:
    # msdrg takes blank for "exempt"; its Java original reads 1 and blank alike.
    return DiagnosisInput(code=diagnosis.code, poa=" " if diagnosis.poa == "1" else diagnosis.poa)


@lru_cache(maxsize=65536)
def procedure_valid(version: int, code: str) -> bool:
    first = next(window.first for window in _WINDOWS if window.version == version)
    edited = engine().editor.edit({
        "discharge_date": yyyymmdd(first),
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
def procedure_is_or(version: int, code: str) -> bool | None:
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
    result = engine().grouper.group({
        "version": version,
        "age": 50,
        "sex": 0,
        "discharge_status": 1,
        "pdx": {"code": _PROBE_PDX},
        "sdx": [],
        "procedures": [ProcedureInput(code=code) for code in codes],
    })
    return result.get("final_drg")


def yyyymmdd(day: date) -> int:
    return day.year * 10000 + day.month * 100 + day.day
