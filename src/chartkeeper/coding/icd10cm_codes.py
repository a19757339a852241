"""ICD-10-CM codes and notes as the tabular writes them: kinds, the code pattern, dotted forms."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

NoteKind = Literal[
    "includes", "inclusionTerm", "excludes1", "excludes2",
    "codeFirst", "useAdditionalCode", "codeAlso", "notes",
]
CodeKind = Literal["chapter", "block", "category", "subcategory"]
NOTE_KINDS: tuple[NoteKind, ...] = (
    "includes", "inclusionTerm", "excludes1", "excludes2",
    "codeFirst", "useAdditionalCode", "codeAlso", "notes",
)

#: A category: a letter, then a digit in 2nd or 3rd place ("E11", "C4A", FY2026's "QA0").
CATEGORY = r"[A-Z](?:[0-9][0-9A-Z]|[A-Z][0-9])"
#: A diagnosis code as the tabular writes it: category, then a dot and up to four characters.
CODE_PATTERN = re.compile(rf"{CATEGORY}(?:\.[0-9A-Z]{{1,4}})?")
_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Note:
    """One instructional note: ``kind`` is the tabular element it sits in."""

    kind: NoteKind
    text: str


@dataclass(frozen=True, slots=True)
class CmCode:
    """A chapter (its number), block (its range, "I10-I1A") or code (dotted, "E11.9").

    Codes built from a leaf plus a 7th character ("S72.001A") are subcategories whose
    ``seventh`` is that character and whose ``parent`` is the leaf. ``seven_chr`` is the
    sevenChrDef in force at this code (its own or an ancestor's), empty where none applies.
    """

    code: str
    title: str
    kind: CodeKind
    parent: str | None
    children: tuple[str, ...]
    notes: tuple[Note, ...]
    seven_chr: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)
    seven_chr_note: str | None = None
    seventh: str | None = None


def undotted(code: str) -> str:
    """A code as claims and order files write it: upper case, no dot ("E119")."""
    return code.strip().upper().replace(".", "")


def dotted(code: str) -> str:
    """A code as the tabular writes it: upper case, dot after the category ("E11.9")."""
    bare = undotted(code)
    return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"
