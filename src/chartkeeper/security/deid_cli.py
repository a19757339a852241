"""The ``chartkeeper deid`` commands: Safe Harbor de-identified exports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chartkeeper.security.identity import SecurityError, load_or_create_key
from chartkeeper.settings import Settings
from chartkeeper.store import Store
from chartkeeper.store.errors import NotFound

deid_app = typer.Typer(help="De-identified exports (HIPAA Safe Harbor).", no_args_is_help=True,
                       add_completion=False)
errors = Console(stderr=True, soft_wrap=True)


def deid_key_path(home: Path) -> Path:
    """The key that keys export pseudonyms: the same key gives the same pseudonyms."""
    return home / "deid.key"


@deid_app.command("export")
def export(
    out: Annotated[Path, typer.Option("--out", help="directory for <Type>.ndjson files")],
    patients: Annotated[list[str] | None, typer.Option(
        "--patient", help="a Patient id to export (repeat for more; default: every patient)")
    ] = None,
) -> None:
    """Export patients' records de-identified by the Safe Harbor method, one file per type."""
    # Imported here: presidio and spaCy take seconds to load, and only this command needs them.
    from chartkeeper.security.deid import deidentified_export

    settings = Settings.from_env()
    settings.home.mkdir(parents=True, exist_ok=True)
    try:
        key = load_or_create_key(deid_key_path(settings.home))
    except SecurityError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from exc
    store = Store(settings.database_url)
    store.create_schema()
    try:
        with Progress(TextColumn("de-identifying"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("patients"), TimeElapsedColumn(), console=errors,
                      transient=not sys.stderr.isatty()) as progress:
            task = progress.add_task("patients", total=None)

            def on_patient(done: int, total: int) -> None:
                progress.update(task, completed=done, total=total)

            result = deidentified_export(store, out, key, patients or None,
                                         on_patient=on_patient)
    except (NotFound, ValueError) as exc:
        # Messages name a resource type or a patient id the user typed, never record content.
        errors.print(f"[red]error:[/red] {exc}; nothing written", highlight=False)
        raise typer.Exit(1) from exc
    finally:
        store.dispose()
    if not result.counts:
        errors.print("no patients to export; nothing written")
    if result.withheld:
        errors.print(f"withheld {result.withheld} restricted or sensitive resources")
    for rtype, n in result.counts.items():
        typer.echo(f"{rtype}.ndjson\t{n}")
