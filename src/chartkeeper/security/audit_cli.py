"""The ``chartkeeper audit`` commands: verify the chain, sign checkpoints, report on access."""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import orjson
import typer
from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import DBAPIError

from chartkeeper.security.audit import (
    AuditAction,
    AuditEntry,
    AuditError,
    AuditKey,
    AuditKeyError,
    AuditRecord,
    AuditTrail,
    Checkpoint,
    InvalidAuditRecord,
    audit_checkpoint,
    audit_entry,
    audit_key_path,
    create_audit_schema,
)
from chartkeeper.settings import Settings
from chartkeeper.store.engine import make_engine

audit_app = typer.Typer(help="Verify, anchor and report on the tamper-evident audit trail.",
                        no_args_is_help=True, add_completion=False)

EXIT_BROKEN = 1
EXIT_UNUSABLE = 2  # no usable key, anchor, filter or database: nothing was checked


class AnchorFileError(AuditError):
    """An ``--anchor`` file is missing, not JSON, or not a checkpoint."""


class ReportFormat(StrEnum):
    csv = "csv"
    fhir = "fhir"


def fail(message: str, code: int = EXIT_UNUSABLE) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def refusals(settings: Settings) -> Iterator[None]:
    """Say why the command cannot run, without a traceback, and exit 2."""
    try:
        yield
    except (AuditKeyError, AnchorFileError, InvalidAuditRecord) as exc:
        fail(str(exc))
    except DBAPIError as exc:  # unreachable, refused, or no right to create the audit tables
        database = make_url(settings.audit_url).render_as_string(hide_password=True)
        fail(f"database {database}: {exc.orig if exc.orig is not None else exc}")


def _trail_written(engine: Engine) -> bool:
    """Whether the audit trail holds any entry or checkpoint, i.e. a key has been used."""
    with engine.connect() as conn:
        return any(conn.execute(select(table.c.seq).limit(1)).first() is not None
                   for table in (audit_entry, audit_checkpoint))


def _load_key(home: Path, engine: Engine, *, create: bool) -> AuditKey:
    path = audit_key_path(home)
    if not path.exists():
        # A new key cannot vouch for what an old one hashed: only a trail never written may
        # get one, and ``verify`` never makes one.
        if not create:
            raise AuditKeyError(
                f"audit key {path} does not exist; verifying needs the key the entries were "
                "hashed with: set CHARTKEEPER_HOME to the directory that holds audit.key")
        if _trail_written(engine):
            raise AuditKeyError(
                f"audit key {path} does not exist, but the audit trail was written with one: "
                "set CHARTKEEPER_HOME to the directory that holds that audit.key")
    return AuditKey(path)


@contextmanager
def open_trail(settings: Settings, *, create_key: bool) -> Iterator[AuditTrail]:
    """The site's audit trail (``Settings.audit_url``), schema created."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.audit_url)
    trail: AuditTrail | None = None
    try:
        create_audit_schema(engine)
        key = _load_key(settings.home, engine, create=create_key)
        trail = AuditTrail(engine, key, server_url=settings.base_url)
        yield trail
    finally:
        if trail is not None:
            trail.close()
        engine.dispose()


def read_anchor(path: Path) -> Checkpoint:
    """A checkpoint as ``chartkeeper audit checkpoint`` prints it, read from ``path``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnchorFileError(f"cannot read anchor {path}: {exc.strerror}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AnchorFileError(f"anchor {path} is not JSON: {exc}") from exc
    fields = ("seq", "entry_hash", "signed_at", "signature")
    if (not isinstance(data, dict) or not isinstance(data.get("seq"), int)
            or isinstance(data.get("seq"), bool)
            or not all(isinstance(data.get(name), str) for name in fields[1:])):
        raise AnchorFileError(
            f"anchor {path} is not a checkpoint: expected a JSON object with seq (integer), "
            "entry_hash, signed_at and signature (text), as `chartkeeper audit checkpoint` "
            "writes it")
    return Checkpoint(*(data[name] for name in fields))


@audit_app.command("verify")
def verify(
    anchor: Annotated[Path | None, typer.Option(
        "--anchor", help="a checkpoint JSON kept off the server (`audit checkpoint --out`): "
                         "also detects a truncated tail whose checkpoints were deleted")] = None,
) -> None:
    """Recompute the whole chain; exit 0 if intact, 1 if broken, 2 if it cannot be checked."""
    settings = Settings.from_env()
    with refusals(settings):
        outside = read_anchor(anchor) if anchor is not None else None
        with open_trail(settings, create_key=False) as trail:
            result = trail.verify(anchor=outside)
    if not result.ok:
        typer.echo(f"audit trail BROKEN at entry {result.first_broken_seq}: {result.reason}",
                   err=True)
        raise typer.Exit(EXIT_BROKEN)
    typer.echo(f"audit trail intact: {result.entries_checked} entries, "
               f"{result.checkpoints_checked} checkpoints")
    if outside is not None:
        typer.echo(f"anchor for entry {outside.seq} signed at {outside.signed_at} matches")


@audit_app.command("checkpoint")
def checkpoint(
    out: Annotated[Path | None, typer.Option(
        "--out", help="also write the checkpoint JSON to this file")] = None,
) -> None:
    """Sign the head of the chain and print the checkpoint as JSON, to keep off the server."""
    settings = Settings.from_env()
    with refusals(settings), open_trail(settings, create_key=True) as trail:
        signed = trail.checkpoint()
    document = json.dumps(dataclasses.asdict(signed), indent=2)
    if out is not None:
        try:
            out.write_text(document + "\n", encoding="utf-8")
        except OSError as exc:
            typer.echo(document)
            fail(f"checkpoint signed but not written to {out}: {exc.strerror}")
    typer.echo(document)


def os_user() -> str:
    """Who runs the command: the operator the audit trail names."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (a bare container)
        return f"uid-{os.getuid()}"


def _access_record(patient: str | None, user: str | None, since: str | None,
                   until: str | None, report_format: ReportFormat) -> AuditRecord:
    filters = {name: value for name, value in
               (("patient", patient), ("user", user), ("since", since), ("until", until))
               if value is not None}
    # The query names the AuditEvent search parameters used, never their values.
    parameters = {"patient": "patient", "user": "agent", "since": "date", "until": "date"}
    query = "AuditEvent?" + "&".join(f"{parameters[name]}=" for name in filters)
    return AuditRecord(
        user_id=os_user()[:128], role="administrator", action=AuditAction.AUDIT_LOG_ACCESS,
        patient_id=patient, resource_type="AuditEvent",
        source_address=socket.gethostname()[:255] or None,
        details={"via": "cli", "format": report_format.value, "query": query, **filters})


def write_bundle(trail: AuditTrail, entries: Iterator[AuditEntry], stream: TextIO) -> int:
    """Write a FHIR R4 searchset Bundle of AuditEvents, one entry at a time; return the count."""
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    stream.write(f'{{"resourceType":"Bundle","type":"searchset","timestamp":"{now}"')
    total = 0
    for entry in entries:
        item: dict[str, Any] = {
            "fullUrl": f"{trail.server_url}/AuditEvent/{entry.seq}",
            "resource": trail.to_audit_event(entry),
            "search": {"mode": "match"},
        }
        stream.write(',"entry":[' if total == 0 else ",")
        stream.write(orjson.dumps(item).decode())
        total += 1
    # FHIR JSON has no empty arrays: a Bundle with no match has no "entry".
    stream.write(f'{"]" if total else ""},"total":{total}}}\n')
    return total


@audit_app.command("report")
def report(
    patient: Annotated[str | None, typer.Option(
        "--patient", help="only entries about this patient id")] = None,
    user: Annotated[str | None, typer.Option("--user", help="only entries by this user")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="ISO 8601 instant with time zone, inclusive")] = None,
    until: Annotated[str | None, typer.Option(
        "--until", help="ISO 8601 instant with time zone, exclusive")] = None,
    report_format: Annotated[ReportFormat, typer.Option(
        "--format", case_sensitive=False,
        help="csv: one row per entry; fhir: a searchset Bundle of BALP AuditEvents")
    ] = ReportFormat.csv,
) -> None:
    """Print audit entries (CSV or FHIR); the reading itself is recorded in the trail."""
    settings = Settings.from_env()
    filters: dict[str, Any] = {"patient_id": patient, "user_id": user, "since": since,
                               "until": until}
    with refusals(settings), open_trail(settings, create_key=True) as trail:
        # Refuse bad filters before recording an access that would not happen...
        trail.entries(**filters, limit=0)
        # ...and record the access before showing anything (fail closed).
        trail.append(None, _access_record(patient, user, since, until, report_format))
        if report_format is ReportFormat.csv:
            trail.export_csv(sys.stdout, **filters)
        else:
            write_bundle(trail, trail.iter_entries(**filters), sys.stdout)


if __name__ == "__main__":  # pragma: no cover - `python -m chartkeeper.security.audit_cli`
    audit_app()
