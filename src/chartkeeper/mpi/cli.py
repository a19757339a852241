"""``chartkeeper mpi``: find duplicate patient registrations."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from chartkeeper.mpi.dedupe import Thresholds, dedupe
from chartkeeper.settings import Settings
from chartkeeper.store import Store

mpi_app = typer.Typer(help="Master patient index: duplicate registrations.",
                      no_args_is_help=True, add_completion=False)


@mpi_app.command("dedupe")
def dedupe_command(
    auto_link: Annotated[float, typer.Option(help="match probability of an automatic link")
                         ] = Thresholds.auto_link,
    review: Annotated[float, typer.Option(help="match probability from which a person "
                                               "reviews the pair")] = Thresholds.review,
    as_json: Annotated[bool, typer.Option("--json", help="print the pairs as JSON")] = False,
) -> None:
    """Score every likely pair of the store's patients; print the links and the pairs to
    review (nothing is merged: that is a person's decision, or the next slice's)."""
    try:
        thresholds = Thresholds(auto_link=auto_link, review=review)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    settings = Settings.from_env()
    store = Store(settings.database_url)
    try:
        store.create_schema()
        result = dedupe(store, thresholds, on_progress=lambda m: typer.echo(m, err=True))
    finally:
        store.dispose()
    if as_json:
        typer.echo(json.dumps({
            "patients": result.patients,
            "links": [vars(p) for p in result.links],
            "review": [vars(p) for p in result.review]}, indent=2))
        return
    typer.echo(f"patients={result.patients} links={len(result.links)} "
               f"review={len(result.review)}")
