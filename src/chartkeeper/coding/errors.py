"""Exceptions shared by the code-set parsers (ICD-10-CM, its index tables, HCPCS, CPT)."""

from __future__ import annotations


class CodeSetError(ValueError):
    """A code-set file is not what it claims to be.

    The message names the file (its ``source``), the element or line at fault and what was
    expected there.
    """


class UnknownCode(ValueError, KeyError):
    """A code looked up in a loaded code set does not exist in it.

    A ``KeyError`` so that code sets read like mappings, a ``ValueError`` like every other
    error of this project. It is not a ``CodeSetError``: the file is fine, the code is not.
    """

    def __init__(self, code: str, code_set: str) -> None:
        super().__init__(f"{code!r} is not a code in {code_set}")
        self.code = code
        self.code_set = code_set

    def __reduce__(self) -> tuple[type[UnknownCode], tuple[str, str]]:
        # Rebuild from both arguments (exceptions cross process boundaries in batch jobs).
        return (UnknownCode, (self.code, self.code_set))

    def __str__(self) -> str:
        # KeyError.__str__ would quote the whole message; keep it readable.
        return str(self.args[0])
