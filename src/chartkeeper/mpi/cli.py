"""``chartkeeper mpi``: find duplicate registrations, review them, merge, link and undo.

Every decision from the command line is made by the operator (the OS user) with a stated
reason: it is recorded on the decision's Provenance and appended to the audit trail.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from rich.console import Console

from chartkeeper.mpi.dedupe import Thresholds, dedupe
from chartkeeper.mpi.merge import Decider, Outcome, decisions_of, link, merge
from chartkeeper.mpi.service import apply, decide, get_review, open_reviews, undo_decision
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.errors import StoreError

mpi_app = typer.Typer(help="Master patient index: duplicate registrations, merges and links.",
                      no_args_is_help=True, add_completion=False)
errors = Console(stderr=True, soft_wrap=True)
ROLE = "him-technician"
Reason = Annotated[str, typer.Option("--reason", help="why (recorded with the decision)")]


@contextmanager
def opened() -> Iterator[tuple[Settings, Store]]:
    settings = Settings.from_env()
    store = Store(settings.database_url)
    try:
        store.create_schema()
        yield settings, store
    except StoreError as exc:
        errors.print(f"[red]error:[/red] {exc.diagnostics}", highlight=False)
        raise typer.Exit(1) from None
    finally:
        store.dispose()


def operator(reason: str) -> Decider:
    from chartkeeper.security.audit_cli import os_user

    try:
        return Decider(os_user()[:128], ROLE, reason)
    except StoreError as exc:
        errors.print(f"[red]error:[/red] {exc.diagnostics}", highlight=False)
        raise typer.Exit(2) from None


def audit(settings: Settings, decider: Decider, activity: str, patients: list[str],
          outcome: Outcome | None, **details: Any) -> None:
    """One audit entry for an operator's decision on patient records."""
    from chartkeeper.security.audit import AuditAction, AuditRecord
    from chartkeeper.security.services import open_audit_trail

    trail = open_audit_trail(settings)
    try:
        trail.append(None, AuditRecord(
            user_id=decider.user, role=decider.role, action=AuditAction.UPDATE,
            patient_id=patients[0], resource_type="Patient", resource_id=patients[0],
            source_address=socket.gethostname()[:255] or None,
            details={"via": "cli", "decision": activity, "patients": patients,
                     "provenance": outcome.provenance_id if outcome else None,
                     "versions": outcome.targets[:50] if outcome else [], **details}))
    finally:
        trail.close()
        trail.engine.dispose()


def report(outcome: Outcome) -> None:
    typer.echo(f"{outcome.activity} Provenance/{outcome.provenance_id}: "
               f"{len(outcome.targets)} resources written, {outcome.repointed} re-pointed")
    for key in outcome.kept_later_changes:
        typer.echo(f"  {key} changed since: kept its later changes")


@mpi_app.command("dedupe")
def dedupe_command(
    auto_link: Annotated[float, typer.Option(help="match probability of an automatic link")
                         ] = Thresholds.auto_link,
    review: Annotated[float, typer.Option(help="match probability from which a person "
                                               "reviews the pair")] = Thresholds.review,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="score and print; write nothing")
                       ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the pairs as JSON")] = False,
    engine: Annotated[str, typer.Option(
        help="duckdb (trains the model on the store's patients) or spark (scores with the "
             "stored model on Spark local mode)")] = "duckdb",
) -> None:
    """Score every likely pair of the store's patients; link those above --auto-link and
    queue those from --review for a person (nothing is merged without one)."""
    try:
        thresholds = Thresholds(auto_link=auto_link, review=review)
    except ValueError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if engine not in ("duckdb", "spark"):
        errors.print("[red]error:[/red] --engine is duckdb or spark")
        raise typer.Exit(2)
    with opened() as (settings, store):
        if engine == "spark":
            result = spark_dedupe(store, thresholds)
        else:
            result = dedupe(store, thresholds, on_progress=lambda m: errors.print(m))
        written = None
        if not dry_run:
            decider = operator(f"automatic link at match probability >= {auto_link}")
            written = apply(store, result, decider, on_progress=lambda m: errors.print(m))
            if written.linked:
                audit(settings, decider, "link", sorted({p for pair in result.links
                                                         for p in (pair.left, pair.right)}),
                      None, automatic=True, pairs=written.linked)
    if as_json:
        typer.echo(json.dumps({
            "patients": result.patients, "note": result.note,
            "links": [{"left": p.left, "right": p.right, "probability": p.probability,
                       "weight": p.weight} for p in result.links],
            "review": [{"left": p.left, "right": p.right, "probability": p.probability,
                        "weight": p.weight} for p in result.review],
            "written": vars(written) if written else None}, indent=2))
        return
    typer.echo(f"patients={result.patients} links={len(result.links)} "
               f"review={len(result.review)}" + (
                   f" linked={written.linked} queued={written.queued} "
                   f"unchanged={written.unchanged} kept-apart={written.kept_apart}"
                   if written else " (dry run: nothing written)"))
    if result.note:
        typer.echo(f"note: {result.note}")


def spark_dedupe(store: Store, thresholds: Thresholds) -> Any:
    """The batch run on Spark with the stored (DuckDB-trained) model."""
    from chartkeeper.mpi.dedupe import patient_rows
    from chartkeeper.mpi.service import load_model
    from chartkeeper.mpi.spark import ModelMismatch, SparkUnavailable, dedupe_rows_spark

    with store.read() as txn:
        model = load_model(txn)
    if model is None:
        errors.print("[red]error:[/red] no trained model in the store yet: run `chartkeeper "
                     "mpi dedupe` (DuckDB) once to train it")
        raise typer.Exit(1)
    try:
        rows = list(patient_rows(store))
        errors.print(f"{len(rows)} patients read")
        return dedupe_rows_spark(rows, model, thresholds, on_progress=lambda m: errors.print(m))
    except (SparkUnavailable, ModelMismatch) as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None


@mpi_app.command("merge")
def merge_command(
    survivor: Annotated[str, typer.Argument(help="id of the Patient that stays")],
    prior: Annotated[str, typer.Argument(help="id of the Patient merged into it")],
    reason: Reason,
    federate: Annotated[bool | None, typer.Option(
        "--federate/--repoint", help="leave the clinical records on the prior Patient, or "
                                     "re-point them (default: CHARTKEEPER_MPI_MERGE_MODE)")
                        ] = None,
) -> None:
    """Merge two registrations of one person; undo with `chartkeeper mpi undo`."""
    decider = operator(reason)
    with opened() as (settings, store):
        mode = settings.mpi_merge_mode if federate is None else (
            "federate" if federate else "repoint")
        with store.write() as txn:
            outcome = merge(txn, survivor, prior, decider, mode=mode)  # type: ignore[arg-type]
        audit(settings, decider, "merge", [survivor, prior], outcome)
    report(outcome)


@mpi_app.command("link")
def link_command(
    first: Annotated[str, typer.Argument(help="a Patient id")],
    second: Annotated[str, typer.Argument(help="the other Patient id")],
    reason: Reason,
) -> None:
    """Link two records of one person that both stay in use."""
    decider = operator(reason)
    with opened() as (settings, store):
        with store.write() as txn:
            outcome = link(txn, first, second, decider)
        audit(settings, decider, "link", [first, second], outcome)
    report(outcome)


@mpi_app.command("undo")
def undo_command(
    decision: Annotated[str, typer.Argument(help="id of the merge or link Provenance")],
    reason: Reason,
) -> None:
    """Undo a merge or a link exactly (resources changed since keep their later changes)."""
    decider = operator(reason)
    with opened() as (settings, store):
        with store.write() as txn:
            outcome = undo_decision(txn, decision, decider)
        patients = sorted({t.split("/")[1] for t in outcome.targets if t.startswith("Patient/")})
        audit(settings, decider, outcome.activity, patients or ["unknown"], outcome,
              undone=decision)
    report(outcome)


@mpi_app.command("review")
def review_command(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many to list")] = 20,
) -> None:
    """List the open duplicate reviews, oldest first, with their evidence."""
    with opened() as (_settings, store), store.read() as txn:
        reviews, total = open_reviews(txn, count=limit)
    typer.echo(f"{total} open duplicate reviews")
    for item in reviews:
        typer.echo(f"Task/{item.task['id']}  Patient/{item.left} ~ Patient/{item.right}  "
                   f"p={item.probability:.4f} weight={item.weight:+.2f}")
        for name, level, weight in item.evidence:
            typer.echo(f"    {name:<12} {weight:+7.2f}  {level}")


@mpi_app.command("decide")
def decide_command(
    task: Annotated[str, typer.Argument(help="id of the review Task")],
    verdict: Annotated[str, typer.Argument(help="merge, link or not-duplicate")],
    reason: Reason,
    survivor: Annotated[str | None, typer.Option(help="for a merge: the Patient that stays")
                        ] = None,
) -> None:
    """Decide a duplicate review: merge, link, or not a duplicate (kept apart for good)."""
    if verdict not in ("merge", "link", "not-duplicate"):
        errors.print("[red]error:[/red] the decision is merge, link or not-duplicate")
        raise typer.Exit(2)
    decider = operator(reason)
    with opened() as (settings, store):
        with store.write() as txn:
            pair = get_review(txn, task)
            outcome = decide(txn, task, verdict, decider,  # type: ignore[arg-type]
                             survivor=survivor, mode=settings.mpi_merge_mode,  # type: ignore[arg-type]
                             )
        audit(settings, decider, verdict, [pair.left, pair.right], outcome, task=task)
    if outcome is not None:
        report(outcome)
    else:
        typer.echo(f"Task/{task}: not a duplicate")


@mpi_app.command("history")
def history_command(
    patient: Annotated[str, typer.Argument(help="a Patient id")],
) -> None:
    """The merges, links and undos that wrote a patient's record, newest first."""
    with opened() as (_settings, store), store.read() as txn:
        for provenance in decisions_of(txn, patient):
            who = provenance["agent"][0]["who"].get("display", "")
            typer.echo(f"{provenance['recorded']}  {provenance['activity']['coding'][0]['code']}"
                       f"  Provenance/{provenance['id']}  by {who}: "
                       f"{provenance.get('reason', [{}])[0].get('text', '')}")
