"""``chartkeeper generate``: write the synthetic hospital to a directory."""

from __future__ import annotations

import sys
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from chartkeeper.synth.generate import (
    DEFAULT_AS_OF,
    FORMATS,
    GenerateError,
    check_arguments,
    generate,
    prepare_output,
)

console = Console(stderr=True)


def generate_command(
    patients: Annotated[int, typer.Option("--patients", help="how many patients (1 or more)")],
    out: Annotated[Path, typer.Option("--out", help="new or empty directory to write to")],
    seed: Annotated[int, typer.Option("--seed", help="same seed, same hospital")] = 1,
    output_format: Annotated[str, typer.Option(
        "--format", help=f"one of: {', '.join(FORMATS)}")] = "bundles",
    as_of: Annotated[str, typer.Option(
        "--as-of", help="the day the records end (YYYY-MM-DD)")] = DEFAULT_AS_OF.isoformat(),
) -> None:
    """Generate synthetic patients as transaction Bundles or NDJSON, plus an answer key."""
    try:
        day = date.fromisoformat(as_of)
    except ValueError:
        typer.echo(f"error: --as-of must be a date like 2026-01-01, got {as_of!r}", err=True)
        raise typer.Exit(2) from None
    try:
        # Checked before the progress bar starts, so that a bad argument is one clean line.
        check_arguments(patients, output_format)
        prepare_output(out)
        with Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console,
                      transient=not sys.stderr.isatty()) as progress:
            task = progress.add_task("generating", total=max(patients, 0))
            summary = generate(out, patients, seed, output_format=output_format, as_of=day,
                               on_patient=lambda _: progress.advance(task))
    except GenerateError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(f"patients={summary.patients} resources={summary.resources} "
               f"out={summary.out} format={output_format} seed={seed}")
