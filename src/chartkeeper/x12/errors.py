"""The X12 package's exceptions and the issue record that the release gate reports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

IssueSource = Literal["chartkeeper", "pyx12"]


class X12Error(ValueError):
    """An X12 message that cannot be read: not X12, truncated, the wrong type or miscounted."""


class ClaimBuildError(ValueError):
    """A claim or envelope that cannot be written as X12 at all (e.g. no payer to address)."""


@dataclass(frozen=True, slots=True)
class X12Issue:
    """One problem found before release, by our own checks or by pyx12.

    ``code`` is a stable name for our checks (``"payer-missing"``, ``"npi-check-digit"`` ...) and
    pyx12's error code for pyx12's findings; ``location`` says where (claim, loop, segment, line).
    """

    source: IssueSource
    code: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"[{self.source} {self.code}] {self.location}: {self.message}"


class ClaimRejected(ValueError):
    """The release gate refused the batch; ``issues`` lists every problem that was found."""

    def __init__(self, issues: Iterable[X12Issue]) -> None:
        self.issues: tuple[X12Issue, ...] = tuple(issues)
        lines = "\n".join(f"  - {issue}" for issue in self.issues)
        count = len(self.issues)
        super().__init__(f"claim batch rejected, nothing released ({count} issues):\n{lines}")
