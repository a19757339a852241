"""Checking a worksheet's final codes against the code-set releases in force on the date of
service, and gathering every problem found into one error of the right kind."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from sqlalchemy import Engine

from chartkeeper.coding import codesets
from chartkeeper.coding.cpt import CPT_CODE
from chartkeeper.coding.errors import UnknownCode
from chartkeeper.coding.icd10cm import Tabular
from chartkeeper.coding.worksheet import (
    PROCEDURE_NAMES,
    CodingError,
    DecisionError,
    InvalidCode,
    NoCodeSet,
)
from chartkeeper.coding.worksheet_text import EncounterDocuments
from chartkeeper.store.errors import OutcomeIssue

_HCPCS = re.compile(r"[A-Z][0-9]{4}")


class Problems:
    """Problems found while checking, reported together as one error of the right kind."""

    def __init__(self) -> None:
        self.found: list[tuple[type[CodingError], OutcomeIssue]] = []

    def add(self, kind: type[CodingError], expression: str, message: str) -> None:
        self.found.append((kind, OutcomeIssue(kind.issue_code, message, expression)))

    def raise_any(self, encounter_id: str) -> None:
        if not self.found:
            return
        kinds = [kind for kind, _ in self.found]
        # One exception class says what to fix first: a missing code set, then bad codes.
        kind = next((k for k in (NoCodeSet, InvalidCode, DecisionError) if k in kinds),
                    kinds[0])
        issues = [issue for _, issue in self.found]
        raise kind(f"Encounter/{encounter_id}: " + "; ".join(i.diagnostics for i in issues),
                   issues)


class CodeChecker:
    """Checks final codes against the releases in force on the date of service."""

    def __init__(self, engine: Engine, documents: EncounterDocuments, table: Tabular,
                 release: codesets.Release, problems: Problems, releases: dict[str, str],
                 warnings: list[str]) -> None:
        self.engine = engine
        self.documents = documents
        self.table = table
        self.release = release
        self.problems = problems
        self.releases = releases
        self.warnings = warnings
        self._models: dict[str, Any] = {}
        self._missing: dict[str, str] = {}
        self._reported: set[str] = set()

    def diagnosis(self, code: str, where: str) -> str | None:
        """The code's title when it is a billable code of the release; else reports why."""
        on = self.documents.date_of_service.isoformat()
        release = f"ICD-10-CM {self.release.version} (in force {self.release.effective_from}.." \
                  f"{self.release.effective_to or 'open'}, the date of service being {on})"
        if code not in self.table:
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a code of {release}")
            return None
        if not self.table.is_billable(code):
            children = ", ".join(c.code for c in self.table.children(code)[:4])
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not billable in {release}: it has subdivisions "
                              f"({children}...); code to the highest specificity")
            return None
        return self.table.title(code)

    def procedure(self, system: str, code: str, where: str) -> tuple[str | None] | None:
        """(display,) when the code is valid for the date; else reports why."""
        if system == "hcpcs" and not _HCPCS.fullmatch(code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a HCPCS Level II code (a letter and 4 digits)")
            return None
        if system == "cpt" and not CPT_CODE.fullmatch(code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a CPT code (5 digits, or 4 digits + A/M/F/T/U)")
            return None
        if system == "icd10pcs" and not re.fullmatch(r"[0-9A-HJ-NP-Z]{7}", code):
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not an ICD-10-PCS code (7 characters, digits and "
                              "letters other than I and O)")
            return None
        checked, model = self._model(system, where)
        if not checked:
            return None
        if model is None:
            return (None,)  # no release of HCPCS or CPT at all: a warning says so
        version = self.releases[system]
        on = self.documents.date_of_service
        if system == "icd10pcs":
            if not model.is_valid(code):
                self.problems.add(InvalidCode, f"{where}.code",
                                  f"{code} is not a valid code of ICD-10-PCS {version}")
                return None
            return (str(model.title(code)),)
        if system == "hcpcs":
            if not model.is_valid(code, on):
                self.problems.add(InvalidCode, f"{where}.code",
                                  f"{code} is not a HCPCS code in force on {on} in HCPCS "
                                  f"{version}")
                return None
            found = model.get(code)
            return (str(found.long or found.short),)
        try:
            return (str(model.descriptor(code)),)
        except UnknownCode:
            self.problems.add(InvalidCode, f"{where}.code",
                              f"{code} is not a code of the site's CPT file {version}")
            return None

    def _model(self, system: str, where: str) -> tuple[bool, Any]:
        """(whether codes of the system can be accepted, the release in force or None).

        ICD-10-PCS codes need a release in force on the date of service. HCPCS and CPT codes
        are checked against one when the site imported any (CPT is licensed and many sites
        have no file): with none at all they pass on their form, with a warning."""
        if system in self._models:
            return True, self._models[system]
        on = self.documents.date_of_service
        name = PROCEDURE_NAMES[system]
        problem = self._missing.get(system)
        if problem is None:
            problem = self._missing[system] = self._release(system, name, on)
        if problem == "":
            return True, None
        if problem == "loaded":
            return True, self._models[system]
        if system not in self._reported:  # once, however many codes of the system
            self._reported.add(system)
            self.problems.add(NoCodeSet, f"{where}.system", problem)
        return False, None

    def _release(self, system: str, name: str, on: date) -> str:
        """Loads the release in force into ``_models``; returns the problem, "" for none."""
        fiscal_year = on.year + 1 if on.month >= 10 else on.year
        if not codesets.releases(self.engine, system):
            if system == "icd10pcs":
                return (f"no ICD-10-PCS release is imported, so ICD-10-PCS codes cannot be "
                        f"checked and are refused; import the CMS ICD-10-PCS tables with "
                        f"`chartkeeper codes import --system icd10pcs --fiscal-year "
                        f"{fiscal_year} FILE`")
            self.warnings.append(f"{name} codes were checked for their form only: no {name} "
                                 f"release is imported (`chartkeeper codes import --system "
                                 f"{system} FILE`)")
            return ""
        try:
            release = codesets.release_for(self.engine, system, on)
        except codesets.NoRelease as exc:
            return f"{name}: {exc}"
        self.releases[system] = release.version
        self._models[system] = codesets.model(self.engine, release)
        return "loaded"
