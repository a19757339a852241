"""The release gate: pyx12 validates the written X12 and our own checks vet the claims first."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from typing import Any

# pyx12 ships no type information; mypy flags only the first import of it it meets, so each
# import allows its ignore to go unused.
import pyx12.errors  # type: ignore[import-untyped,unused-ignore]
import pyx12.params  # type: ignore[import-untyped,unused-ignore]
import pyx12.x12n_document  # type: ignore[import-untyped,unused-ignore]

from chartkeeper.x12.build import build_837i, build_837p
from chartkeeper.x12.checks import check_claims
from chartkeeper.x12.claim import Claim, Envelope, InstitutionalClaim, ProfessionalClaim
from chartkeeper.x12.errors import ClaimBuildError, ClaimRejected, X12Issue

#: Our checks whose failure leaves nothing to write (the builder needs a payer loop).
_UNBUILDABLE = frozenset({
    "payer-missing", "no-claims", "mixed-claim-types", "delimiter-in-value", "envelope",
    "too-many-diagnoses", "too-many-procedures", "procedure-missing", "amount-not-finite",
})


def validate(x12_text: str) -> list[X12Issue]:
    """Every error pyx12 finds in an X12 5010 interchange (837, 835, 999, 277CA, ...).

    pyx12 picks the implementation guide map from GS08 and runs offline on the maps it ships.
    An empty list means pyx12 accepted the text.
    """
    if not x12_text.lstrip().startswith("ISA"):
        start = x12_text.lstrip()[:20]
        return [X12Issue("pyx12", "not-x12", "start of text",
                         f"text does not begin with an ISA segment: {start!r}")]
    report = io.StringIO()
    logged = _LoggedErrors()
    _PYX12_ERROR_LOG.addHandler(logged)
    try:
        valid = pyx12.x12n_document.x12n_document(
            param=pyx12.params.params(), src_file=io.StringIO(x12_text.lstrip()),
            fd_997=None, fd_html=None, fd_json=report,
        )
    except pyx12.errors.X12Error as error:
        return [X12Issue("pyx12", "unreadable", "interchange", f"pyx12 cannot read it: {error}")]
    except pyx12.errors.EngineError as error:
        # Raised for a GS08 version or GS01 functional code pyx12 has no map for.
        return [X12Issue("pyx12", "no-map", "GS", f"pyx12 cannot validate it: {error}")]
    finally:
        _PYX12_ERROR_LOG.removeHandler(logged)
    issues = list(_issues_from_report(report.getvalue()))
    # pyx12's JSON report leaves out errors in ISA/GS/ST elements; its log has every error.
    reported = [issue.message for issue in issues]
    issues.extend(issue for issue in logged.issues
                  if not any(issue.message.startswith(message) for message in reported))
    if not valid and not issues:
        issues.append(X12Issue("pyx12", "invalid", "interchange",
                               "pyx12 rejected the interchange without naming an error"))
    return issues


_PYX12_ERROR_LOG = logging.getLogger("pyx12.error_handler")
# pyx12 logs each error with the element's value (a name, a member id): PHI, which must not
# reach the server's log. Our handler above reads them; nothing propagates further.
logging.getLogger("pyx12").propagate = False
logging.getLogger("pyx12").addHandler(logging.NullHandler())
#: pyx12 logs each error as "Line:12 ELE:7 - message (value)" (SEG, ST, GS and ISA likewise).
_LOG_LINE = re.compile(r"(?:.*?)Line:(\d+) (ISA|GS|ST|SEG|ELE):(\w+) - (.*)", re.DOTALL)


class _LoggedErrors(logging.Handler):
    """Collects the errors pyx12 logs while this thread validates."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.thread = threading.get_ident()
        self.issues: list[X12Issue] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        text = record.getMessage()
        match = _LOG_LINE.match(text)
        if match is None:
            self.issues.append(X12Issue("pyx12", "error", "interchange", text))
        else:
            line, level, code, message = match.groups()
            self.issues.append(X12Issue("pyx12", code, f"line {line} ({level})", message))


def acknowledge(x12_text: str) -> str:
    """The 999 (5010) or 997 (4010) pyx12 writes for an interchange: what a receiver would send.

    Useful to answer inbound files, and to see our 837s as a clearinghouse's front end will.
    """
    acknowledgment = io.StringIO()
    pyx12.x12n_document.x12n_document(
        param=pyx12.params.params(), src_file=io.StringIO(x12_text.lstrip()),
        fd_997=acknowledgment, fd_html=None,
    )
    return acknowledgment.getvalue()


def _issues_from_report(report: str) -> Iterator[X12Issue]:
    """Flattens pyx12's JSON error tree (interchange > group > transaction > segment > element)."""
    if not report:
        return
    document: dict[str, Any] = json.loads(report)
    for isa in document["interchanges"]:
        yield from _node_errors(isa, f"ISA {isa['isa_trn_set_id']} (line {isa['cur_line']})")
        for gs in isa["groups"]:
            yield from _node_errors(gs, f"GS {gs['gs_control_num']} (line {gs['cur_line']})")
            for st in gs["transactions"]:
                where = f"ST {st['trn_set_id']} {st['trn_set_control_num']}"
                yield from _node_errors(st, where)
                for seg in st["segments"]:
                    seg_where = f"{where} line {seg['cur_line']} segment {seg['seg_id']} " \
                        f"({seg['name']})"
                    yield from _node_errors(seg, seg_where)
                    for element in seg["elements"]:
                        ele_where = f"{seg_where} element {element['ele_pos']} " \
                            f"({element['name']})"
                        yield from _node_errors(element, ele_where)


def _node_errors(node: dict[str, Any], where: str) -> Iterator[X12Issue]:
    for error in node["errors"]:
        yield X12Issue("pyx12", str(error["err_cde"]), where, str(error["err_str"]))


def build(claims: Sequence[Claim], envelope: Envelope) -> str:
    """The 837P or 837I for ``claims``, chosen by their type (all must be of one type)."""
    professional = [claim for claim in claims if isinstance(claim, ProfessionalClaim)]
    institutional = [claim for claim in claims if isinstance(claim, InstitutionalClaim)]
    if professional and institutional:
        raise ClaimBuildError("professional and institutional claims go in separate 837s")
    if professional:
        return build_837p(professional, envelope)
    return build_837i(institutional, envelope)


def release(claims: Sequence[Claim], envelope: Envelope) -> str:
    """The 837 text to send, only when our checks and pyx12 find nothing wrong.

    Raises ``ClaimRejected`` listing every issue otherwise; nothing is returned to send then.
    """
    issues = check_claims(claims, envelope)
    if any(issue.code in _UNBUILDABLE for issue in issues):
        raise ClaimRejected(issues)
    text = build(claims, envelope)
    issues.extend(validate(text))
    if issues:
        raise ClaimRejected(issues)
    return text


def release_text(x12_text: str) -> str:
    """Gate already-written X12: the text back when pyx12 accepts it, else ``ClaimRejected``."""
    issues = validate(x12_text)
    if issues:
        raise ClaimRejected(issues)
    return x12_text
