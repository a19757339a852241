"""``chartkeeper code`` (suggest, search, show, pcs) and ``chartkeeper codes`` (import, list)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from sqlalchemy import Engine

from chartkeeper.coding import codesets, service
from chartkeeper.coding.cac import SETTINGS, SuggestError
from chartkeeper.coding.errors import CodeSetError, UnknownCode
from chartkeeper.settings import Settings
from chartkeeper.store import Store

code_app = typer.Typer(help="Coding: suggest codes for a note, search and show codes.",
                       no_args_is_help=True, add_completion=False)
codes_app = typer.Typer(help="Code-set releases: import the official files, list them.",
                        no_args_is_help=True, add_completion=False)
out = Console(soft_wrap=True, highlight=False, markup=False)
errors = Console(stderr=True, soft_wrap=True, highlight=False)


@contextmanager
def opened() -> Iterator[Engine]:
    settings = Settings.from_env()
    store = Store(settings.database_url)
    try:
        store.create_schema()
        yield store.engine
    except (CodeSetError, UnknownCode, SuggestError) as exc:
        errors.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    finally:
        store.dispose()


def _date(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.print(f"[red]error:[/red] {option} must be a date as YYYY-MM-DD, got {value!r}")
        raise typer.Exit(2) from None


@code_app.command("suggest")
def suggest_command(
    file: Annotated[Path, typer.Argument(help="a clinical note as plain text (UTF-8)")],
    setting: Annotated[str, typer.Option(help="inpatient or outpatient")] = "outpatient",
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
    age: Annotated[int | None, typer.Option(help="the patient's age (else read from the note)")]
    = None,
    on: Annotated[str | None, typer.Option("--date", help="date of service: the code set in "
                                           "force then (default: the newest)")] = None,
) -> None:
    """Suggest ICD-10-CM codes for a note, best first, each with its evidence."""
    if setting not in SETTINGS:
        errors.print(f"[red]error:[/red] --setting must be one of {', '.join(SETTINGS)}, "
                     f"got {setting!r}")
        raise typer.Exit(2)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        errors.print(f"[red]error:[/red] cannot read {file}: {exc}")
        raise typer.Exit(2) from None
    with opened() as engine:
        found = service.suggest(engine, text, setting, age=age, on=_date(on, "--date"))
    if as_json:
        out.print_json(json.dumps(found.to_json()))
        return
    for suggestion in found.diagnoses:
        mark = "*" if suggestion.code == found.principal else " "
        where = suggestion.evidence[0] if suggestion.evidence else None
        out.print(f"{mark} {suggestion.code:<9} {suggestion.confidence:5.2f} "
                  f"{'proposed ' if suggestion.proposed else 'offered  '}{suggestion.display}"
                  + (f"  [{where.section}: {where.text!r}]" if where else ""))


@code_app.command("search")
def search_command(
    query: Annotated[str, typer.Argument(help="words, abbreviations or a code")],
    limit: Annotated[int, typer.Option(min=1, max=200)] = 20,
) -> None:
    """Search ICD-10-CM titles, inclusion terms and imported index tables."""
    with opened() as engine:
        for hit in service.search(engine, query, limit=limit):
            out.print(f"{hit.code:<9} {'billable' if hit.billable else 'header  '} "
                      f"{hit.text}  ({hit.source})")


@code_app.command("show")
def show_command(code: Annotated[str, typer.Argument(help="an ICD-10-CM code")]) -> None:
    """A code with its hierarchy and every instructional note that applies."""
    with opened() as engine:
        found = service.detail(engine, code)
    for ancestor, title in found.ancestors:
        out.print(f"  {ancestor}  {title}")
    out.print(f"{found.code}  {found.title}"
              f"{'  (billable)' if found.billable else ''}")
    for child, title in found.children:
        out.print(f"    {child}  {title}")
    for note in found.notes:
        out.print(f"  {note['kind']} (from {note['from']}): {note['text']}")


@codes_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="the official file (XML, zip, txt, csv)")],
    system: Annotated[str, typer.Option(help=", ".join(sorted(codesets.PARSERS)))],
    fiscal_year: Annotated[int | None, typer.Option(help="CMS fiscal year (Oct 1 - Sep 30)")]
    = None,
    effective_from: Annotated[str | None, typer.Option("--from", help="first date in force")]
    = None,
    effective_to: Annotated[str | None, typer.Option("--to", help="last date in force")] = None,
    version: Annotated[str | None, typer.Option(help="version label (default: the file's)")]
    = None,
) -> None:
    """Validate an official code-set file and store it as a release."""
    start, end = _date(effective_from, "--from"), _date(effective_to, "--to")
    if fiscal_year is not None:
        if start is not None or end is not None:
            errors.print("[red]error:[/red] give --fiscal-year or --from/--to, not both")
            raise typer.Exit(2)
        start, end = codesets.fiscal_year_dates(fiscal_year)
    if start is None:
        errors.print("[red]error:[/red] say when the release is in force: --fiscal-year or "
                     "--from")
        raise typer.Exit(2)
    try:
        data = file.read_bytes()
    except OSError as exc:
        errors.print(f"[red]error:[/red] cannot read {file}: {exc.strerror or exc}")
        raise typer.Exit(2) from None
    from chartkeeper.security.audit_cli import os_user

    with opened() as engine:
        release = codesets.import_release(engine, data, system=system, source=file.name,
                                          effective_from=start, effective_to=end,
                                          version=version, imported_by=os_user())
    out.print(f"imported {release.system} {release.version}: {release.entries} entries, "
              f"{release.effective_from}..{release.effective_to or 'open'}")


@codes_app.command("list")
def list_command() -> None:
    """The imported releases, by system and dates in force."""
    with opened() as engine:
        codesets.ensure_packaged(engine)
        for release in codesets.releases(engine):
            until = str(release.effective_to or "open")
            out.print(f"{release.system:<22} {release.version:<24} "
                      f"{release.effective_from}..{until:<10} "
                      f"{release.entries:>7} entries  {release.source}")
