"""The ``chartkeeper`` command line: serve, import, export, init-demo."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import false, select

from chartkeeper.chart.completion.cli import completion_app
from chartkeeper.coding.claims_cli import claims_app
from chartkeeper.coding.cli import code_app, codes_app
from chartkeeper.ingest.files import SUFFIXES, import_any
from chartkeeper.ingest.hl7_cli import hl7_app
from chartkeeper.mpi.cli import mpi_app
from chartkeeper.security.audit_cli import audit_app
from chartkeeper.security.cli import (
    open_directory,
    record_privilege_change,
    token_app,
    users_app,
)
from chartkeeper.security.deid_cli import deid_app
from chartkeeper.security.identity import ensure_initial_admin
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.importer import Importer, find_files
from chartkeeper.synth.cli import generate_command

app = typer.Typer(help="Chartkeeper health information management.", no_args_is_help=True,
                  add_completion=False)
console = Console(stderr=True)
app.add_typer(users_app, name="users", help="Manage user accounts (passwords from stdin).")
app.add_typer(token_app, name="token", help="Issue OAuth2 bearer tokens (SMART scopes).")
app.add_typer(deid_app, name="deid", help="De-identified exports (HIPAA Safe Harbor).")
app.add_typer(audit_app, name="audit", help="Verify, anchor and report on the audit trail.")
app.add_typer(hl7_app, name="hl7")
app.add_typer(completion_app, name="completion")
app.add_typer(mpi_app, name="mpi")
app.add_typer(code_app, name="code")
app.add_typer(codes_app, name="codes")
app.add_typer(claims_app, name="claims")
app.command("generate")(generate_command)


def open_store(settings: Settings) -> Store:
    settings.home.mkdir(parents=True, exist_ok=True)
    store = Store(settings.database_url)
    store.create_schema()
    return store


@app.command()
def serve(host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="port to listen on")] = 8000) -> None:
    """Serve the FHIR API (and workbench) over HTTP."""
    import uvicorn

    from chartkeeper.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # uvicorn's access log prints query strings, which carry names and birth dates: the app
    # logs requests itself, without them.
    uvicorn.run(create_app(Settings.from_env()), host=host, port=port, log_level="info",
                access_log=False)


DEMO_PATIENTS = 500
DEMO_SEED = 20261129


@app.command("init-demo")
def init_demo(
    patients: Annotated[int, typer.Option(
        "--patients", help="patients in the demo hospital", min=1)] = DEMO_PATIENTS,
) -> None:
    """Create the embedded store if missing and load the demo hospital when it is empty."""
    settings = Settings.from_env()
    store = open_store(settings)
    with open_directory(settings) as directory:
        password = ensure_initial_admin(directory)
    if password is not None:
        record_privilege_change(settings, "admin", "add", role="administrator", initial=True)
        # Printed once, here; only its argon2id hash is stored. There is no default password.
        typer.echo(f"created user admin (administrator); one-time password: {password}")
        typer.echo("change it at first sign-in; enroll TOTP with "
                   "`chartkeeper users enroll-totp admin`")
    if not store.is_empty():
        console.print(f"store {settings.database_url} already holds data; nothing loaded")
        return
    load_demo_hospital(settings, store, patients)


def load_demo_hospital(settings: Settings, store: Store, patients: int) -> None:
    """Generate the synthetic demo hospital and import it. Its answer key (the true
    diagnoses) is kept in $CHARTKEEPER_HOME/demo/ for measuring, never in the store."""
    from chartkeeper.synth.generate import generate

    with tempfile.TemporaryDirectory(dir=settings.home) as scratch:
        out = Path(scratch) / "hospital"
        console.print(f"generating the demo hospital: {patients} synthetic patients")
        generate(out, patients, DEMO_SEED)
        files = find_files([out / "bundles"])
        total = Importer(store, workers=default_workers()).import_files(files)
        keep = settings.home / "demo"
        keep.mkdir(exist_ok=True)
        shutil.copyfile(out / "answer-key.ndjson", keep / "answer-key.ndjson")
    for problem in total.problems[:20]:
        console.print(f"[yellow]rejected:[/yellow] {problem}")
    console.print(f"loaded the demo hospital into {settings.database_url}: "
                  f"created={total.created} rejected={total.rejected}")
    if total.rejected:
        raise typer.Exit(1)


def default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 1) - 1))


@app.command("import")
def import_files(
    paths: Annotated[list[Path], typer.Argument(
        help="FHIR JSON, Bundle or NDJSON files, HL7 v2 .hl7 files, C-CDA .xml files, or dirs")],
    workers: Annotated[int, typer.Option(
        help="processes that parse, validate and index while this one writes (0: none)")
    ] = -1,
) -> None:
    """Import FHIR resources, Bundles, NDJSON and HL7 v2 files; prints created/updated/rejected."""
    settings = Settings.from_env()
    if workers < -1:
        console.print(f"[red]error:[/red] --workers must be 0 or more, got {workers}")
        raise typer.Exit(2)
    try:
        files = find_files(paths, SUFFIXES)
    except FileNotFoundError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    store = open_store(settings)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[resources]} resources"), TimeElapsedColumn(),
                  console=console, transient=not sys.stderr.isatty()) as progress:
        task = progress.add_task("importing", total=len(files), resources=0)
        counted = [0]

        def on_progress(n: int) -> None:
            counted[0] += n
            progress.update(task, resources=counted[0])

        def on_file(name: str) -> None:
            progress.update(task, description=name[:40])
            progress.advance(task)

        total = import_any(store, files, on_progress=on_progress, on_file=on_file,
                           workers=default_workers() if workers == -1 else workers)
    for problem in total.problems[:50]:
        console.print(f"[yellow]rejected:[/yellow] {problem}")
    if len(total.problems) > 50:
        console.print(f"... and {len(total.problems) - 50} more problems")
    typer.echo(f"files={total.files} created={total.created} updated={total.updated} "
               f"rejected={total.rejected} already-imported={total.skipped}")
    if total.rejected:
        raise typer.Exit(1)


@app.command("export")
def export_ndjson(
    out: Annotated[Path, typer.Option("--out", help="directory for <Type>.ndjson files")],
    types: Annotated[str | None, typer.Option("--type", help="comma-separated types")] = None,
) -> None:
    """Export the current version of every resource as NDJSON, one file per type."""
    from chartkeeper.store import schema

    settings = Settings.from_env()
    store = open_store(settings)
    out.mkdir(parents=True, exist_ok=True)
    wanted = [t for t in types.split(",") if t] if types else None
    r = schema.resource
    counts: dict[str, int] = {}
    handles = {}
    with store.read() as txn:
        stmt = select(r.c.resource_type, r.c.content).where(r.c.deleted == false())
        if wanted:
            stmt = stmt.where(r.c.resource_type.in_(wanted))
        for rtype, content in txn.conn.execution_options(yield_per=1000).execute(
                stmt.order_by(r.c.pk)):
            if rtype not in handles:
                handles[rtype] = (out / f"{rtype}.ndjson").open("w", encoding="utf-8")
            handles[rtype].write(content + "\n")
            counts[rtype] = counts.get(rtype, 0) + 1
    for handle in handles.values():
        handle.close()
    for rtype, n in sorted(counts.items()):
        typer.echo(f"{rtype}.ndjson\t{n}")


def main() -> None:  # pragma: no cover
    app()


if __name__ == "__main__":  # pragma: no cover - `python -m chartkeeper.cli`
    app()
