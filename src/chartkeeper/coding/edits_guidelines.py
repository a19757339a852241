"""The ICD-10-CM conventions and Official Guidelines edits, from the tabular's notes and titles.

Excludes1, combination codes, "code first" and "use additional code" notes, sequencing,
duplicates and laterality, over the claim's billable diagnoses.
"""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from chartkeeper.coding.edits_claim import CodedClaim, Edit
from chartkeeper.coding.edits_codes import Coded, display_cm
from chartkeeper.coding.icd10cm import CodeReference, Note, Tabular, code_references, undotted

# The classification's own words for a manifestation code (guideline I.A.13); B95-B97 read
# "as the cause of diseases classified elsewhere" and are not manifestations.
_MANIFESTATION = re.compile(r"\bin (?:other )?diseases classified elsewhere\b", re.IGNORECASE)
# A note with these words is conditional ("if applicable", "any associated", "such as"):
# whether another code is needed depends on the record, so no warning is raised for it.
_CONDITIONAL = re.compile(r"\b(?:if|any|such as|when|may)\b", re.IGNORECASE)
_UNSPECIFIED = re.compile(r"\bunspecified\b", re.IGNORECASE)


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


class Guidelines:
    """The checks the tabular's notes and titles support, over the claim's billable codes."""

    def __init__(self, tabular: Tabular, coded: list[Coded], claim: CodedClaim,
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
            places[display_cm(diagnosis.code)].append(diagnosis_index + 1)
        for code, numbers in places.items():
            if len(numbers) > 1 and not self.by_mce("mce:duplicate-of-pdx", code):
                self.edits.append(Edit(
                    "error", "duplicate", (code,),
                    f"{code} is listed {len(numbers)} times (diagnoses "
                    f"{', '.join(map(str, numbers))}): report each code once"))

    def external_cause_first(self, principal: Coded) -> None:
        if principal.code[0] in "VWXY" and not self.by_mce("mce:e-code-as-pdx", principal.code):
            self.edits.append(Edit(
                "error", "sequencing", (principal.code,),
                f"{principal.code} ({principal.node.title}) is an external cause code "
                f"(V00-Y99): it is never the {self.first} diagnosis (guideline I.C.20); list "
                "the injury or condition it explains first"))

    def manifestation_first(self, principal: Coded) -> bool:
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

    def code_first(self, coded: Coded) -> None:
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

    def use_additional(self, coded: Coded) -> None:
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

    def laterality(self, coded: Coded) -> None:
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

    def groups(self, coded: Coded, kind: str) -> list[_NoteGroup]:
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

