"""The code-validity edits: each code against the code-set release in force on its date.

ICD-10-CM diagnoses (fiscal year, 7th character, headings), ICD-10-PCS procedures, HCPCS Level
II and CPT codes on service lines and their modifiers, and the ``no-release`` edit for a date no
imported release covers.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Final

from sqlalchemy import Engine

from chartkeeper.coding import codesets
from chartkeeper.coding.cpt import CPT_CODE, CptRelease
from chartkeeper.coding.edits_claim import CodedClaim, Edit
from chartkeeper.coding.hcpcs import HcpcsRelease
from chartkeeper.coding.icd10cm import CATEGORY, CmCode, Tabular, dotted, undotted
from chartkeeper.coding.pcs import PcsCodeError, PcsTables

SYSTEM_NAMES: Final = {
    "icd10cm": "ICD-10-CM",
    "icd10pcs": "ICD-10-PCS",
    "hcpcs": "HCPCS Level II",
    "cpt": "CPT",
    "ncci-ptp-practitioner": "NCCI PTP edits for practitioners",
    "ncci-ptp-hospital": "NCCI PTP edits for hospital outpatient services",
    "ncci-mue-practitioner": "NCCI MUE values for practitioners",
    "ncci-mue-hospital": "NCCI MUE values for hospital outpatient services",
}
_CM_SHAPE = re.compile(rf"{CATEGORY}(?:\.[0-9A-Z]{{1,4}}|[0-9A-Z]{{1,4}})?")
_HCPCS_LEVEL2 = re.compile(r"[A-Z][0-9]{4}")


@dataclass(frozen=True, slots=True)
class Coded:
    """A diagnosis that is a billable code in the release in force: its place and node."""

    index: int
    code: str  # dotted
    node: CmCode


class CodeChecker:
    """The releases in force on the claim's dates, and the edits on the codes read with them.

    Each check appends to ``edits``; ``report_missing_releases`` adds the ``no-release`` edits
    for the codes no imported release could check.
    """

    def __init__(self, engine: Engine, claim: CodedClaim) -> None:
        self.engine = engine
        self.claim = claim
        self.on = claim.coding_date
        self.edits: list[Edit] = []
        self._releases: dict[str, list[codesets.Release]] = {}
        self._missing: defaultdict[tuple[str, date], list[str]] = defaultdict(list)

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
                f"no release of {SYSTEM_NAMES[system]} is in force on {on} "
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

    def diagnoses(self) -> tuple[Tabular | None, list[Coded]]:
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
        coded: list[Coded] = []
        for index, diagnosis in enumerate(self.claim.diagnoses):
            code = display_cm(diagnosis.code)
            if not is_cm_shape(diagnosis.code):
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
                coded.append(Coded(index, code, tabular.get(code)))
                continue
            self.edits.append(self.cm_problem(tabular, release, code, index))
        self.report_missing_releases()
        return tabular, coded

    def cm_problem(self, tabular: Tabular, release: codesets.Release, code: str,
                   index: int) -> Edit:
        """Why a code is not billable on the date: wrong year, 7th character, header, unknown."""
        number = f"diagnosis {index + 1}"
        in_force = describe(release)
        for other in self.others("icd10cm", release):
            other_tabular: Tabular = codesets.model(self.engine, other)
            if other_tabular.is_billable(code):
                return Edit(
                    "error", "fiscal-year", (code,),
                    f"{code} ({other_tabular.title(code)}; {number}) is not valid on {self.on} "
                    f"({self.date_name(self.on)}): the code set in force then is {in_force}, "
                    f"and {code} is a code of {describe(other)}. Code the claim with the "
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
                    f"ICD-10-PCS tables in force then are {describe(release)}; {code} "
                    f"({other_tables.title(code)}) is a code of {describe(other)}. Code the "
                    "claim with the release in force on its date")
        try:
            tables.axes(code)
        except PcsCodeError as problem:
            # The tables name the first character they do not allow; that is the message.
            return Edit("error", "validity", (code,),
                        f"{where} is not a valid code in {describe(release)}: {problem}")
        raise AssertionError(f"{code} is neither valid nor refused by {release.source}")

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
                f"{describe(release)}: {why}"))
            return
        for other in self.others("hcpcs", release):
            other_hcpcs: HcpcsRelease = codesets.model(self.engine, other)
            if code in other_hcpcs.codes:
                self.edits.append(Edit(
                    "error", "fiscal-year", (code,),
                    f"{where} is not in {describe(release)}, the HCPCS release in force on "
                    f"{on}; {code} ({other_hcpcs.codes[code].short}) is a code of "
                    f"{describe(other)}"))
                return
        self.edits.append(Edit("error", "validity", (code,),
                               f"{where} is not a code in {describe(release)}, the release "
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
            f"{describe(release)}"))

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
                    f"{where} is not in {describe(release)}, the CPT release in force on {on}; "
                    f"it is a code of {describe(other)}"))
                return
        self.edits.append(Edit("error", "validity", (code,),
                               f"{where} is not a code in {describe(release)}, the release "
                               f"in force on {on}"))


def is_cm_shape(code: str) -> bool:
    if code.count(".") > 1 or ("." in code and code.index(".") != 3):
        return False
    return bool(_CM_SHAPE.fullmatch(code))


def display_cm(code: str) -> str:
    return dotted(code) if is_cm_shape(code) else code


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


def describe(release: codesets.Release) -> str:
    name = SYSTEM_NAMES.get(release.system, release.system)
    return f"{name} {release.version} ({_span(release)})"


def _span(release: codesets.Release) -> str:
    return f"in force {release.effective_from} to {release.effective_to or 'open'}"


def _import_advice(system: str, on: date) -> str:
    name = SYSTEM_NAMES[system]
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
