"""``chartkeeper completion``: check discharged records and bring the deficiency worklist up to
date (the nightly job), or print the rules and figures."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Annotated

import typer

from chartkeeper.chart.completion.service import (
    CompletionRules,
    RulesError,
    analyze,
    completion_summary,
    load_rules,
    rules_to_toml,
    sync_tasks,
)
from chartkeeper.settings import Settings
from chartkeeper.store import Store

completion_app = typer.Typer(help="Record completion: deficiencies of discharged records.",
                             no_args_is_help=True, add_completion=False)


def _rules(settings: Settings, path: Path | None) -> CompletionRules:
    chosen = path or (Path(settings.completion_rules) if settings.completion_rules else None)
    try:
        return load_rules(chosen) if chosen else CompletionRules()
    except RulesError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


@completion_app.command("run")
def run(
    as_of: Annotated[str | None, typer.Option(help="analyse as of this day (YYYY-MM-DD)")] = None,
    rules: Annotated[Path | None, typer.Option(help="rules file (TOML); default: "
                                                      "$CHARTKEEPER_COMPLETION_RULES")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Analyse every discharged record, update the deficiency Tasks, print the figures."""
    settings = Settings.from_env()
    chosen = _rules(settings, rules)
    try:
        day = date.fromisoformat(as_of) if as_of else date.today()
    except ValueError:
        typer.echo(f"error: --as-of {as_of!r} is not a date (YYYY-MM-DD)", err=True)
        raise typer.Exit(2) from None
    store = Store(settings.database_url)
    try:
        store.create_schema()
        sync = sync_tasks(store, analyze(store, chosen, day), day, chosen)
        summary = completion_summary(store, day, chosen)
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps({"tasks": {k: v for k, v in vars(sync).items()},
                               **summary.as_dict()}, indent=2))
        return
    typer.echo(f"tasks: {sync.created} created, {sync.updated} updated, "
               f"{sync.completed} completed, {sync.cancelled} cancelled, "
               f"{sync.unchanged} unchanged")
    rate = ("no discharges" if summary.delinquency_rate is None
            else f"{summary.delinquency_rate:.0%} (limit {summary.rate_limit:.0%})")
    typer.echo(f"open deficiencies {summary.open_deficiencies}, incomplete records "
               f"{summary.incomplete_records}, delinquent records {summary.delinquent_records}, "
               f"delinquent record rate {rate}")


@completion_app.command("rules")
def show_rules(
    rules: Annotated[Path | None, typer.Option(help="rules file to check and print")] = None,
) -> None:
    """Print the rules in force (the defaults, or the site's file after checking it)."""
    typer.echo(rules_to_toml(_rules(Settings.from_env(), rules)), nl=False)
