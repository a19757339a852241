"""The ``chartkeeper users`` and ``chartkeeper token`` commands: accounts and bearer tokens."""

from __future__ import annotations

import getpass
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from chartkeeper.security.audit import (
    AuditAction,
    AuditRecord,
)
from chartkeeper.security.identity import (
    Role,
    SecurityError,
    UserDirectory,
    create_identity_schema,
    ensure_initial_admin,
    load_or_create_key,
    totp_key_path,
)
from chartkeeper.security.tokens import TokenIssuer
from chartkeeper.settings import Settings
from chartkeeper.store.engine import make_engine

users_app = typer.Typer(help="Manage user accounts.", no_args_is_help=True,
                        add_completion=False)
token_app = typer.Typer(help="Issue OAuth2 bearer tokens.", no_args_is_help=True,
                        add_completion=False)
errors = Console(stderr=True, soft_wrap=True)


@contextmanager
def open_directory(settings: Settings) -> Iterator[UserDirectory]:
    """The user directory in the store database named by the settings (schema created)."""
    settings.home.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.database_url)
    try:
        create_identity_schema(engine)
        yield UserDirectory(engine, totp_key=load_or_create_key(totp_key_path(settings.home)))
    finally:
        engine.dispose()


def record_privilege_change(settings: Settings, target: str, change: str,
                            **details: str | bool | int | None) -> None:
    """Append a privilege-change entry to the audit trail for an operator's change to an
    account (ONC 170.315(d)(2)): who (the OS user), whose account, what changed."""
    from chartkeeper.security.audit_cli import os_user
    from chartkeeper.security.services import open_audit_trail

    trail = open_audit_trail(settings)
    try:
        trail.append(None, AuditRecord(
            user_id=os_user()[:128], role="administrator", action=AuditAction.PRIVILEGE_CHANGE,
            source_address=socket.gethostname()[:255] or None,
            details={"via": "cli", "account": target, "change": change,
                     **{k: v for k, v in details.items() if v is not None}}))
    finally:
        trail.close()
        trail.engine.dispose()


@contextmanager
def refusals() -> Iterator[None]:
    """Print a security refusal as one line and exit 1 (no traceback, nothing secret)."""
    try:
        yield
    except SecurityError as exc:
        errors.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        raise typer.Exit(1) from exc


def read_password() -> str:
    """The new password: typed twice at a terminal, else the first line of stdin.

    Never an argument: argv is visible to every user of the machine and kept in shell history.
    """
    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("password again: ") != password:
            errors.print("[red]error:[/red] the two passwords differ")
            raise typer.Exit(1)
        return password
    password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        errors.print("[red]error:[/red] no password on stdin")
        raise typer.Exit(1)
    return password


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="user name (lower case)")],
    role: Annotated[Role, typer.Option(help="the user's role", case_sensitive=False)],
    must_change_password: Annotated[bool, typer.Option(
        help="make the user choose a new password at first sign-in")] = False,
) -> None:
    """Add a user; the password is read from stdin (or prompted for at a terminal)."""
    password = read_password()
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.add_user(name, role, password, must_change_password=must_change_password)
    record_privilege_change(settings, user.username, "add", role=user.role.value)
    typer.echo(f"added {user.username} ({user.role.value})")
    if user.requires_second_factor:
        typer.echo(f"{user.role.value} needs a second factor: run "
                   f"`chartkeeper users enroll-totp {user.username}`")


@users_app.command("set-password")
def set_password(
    name: Annotated[str, typer.Argument(help="user name")],
    must_change_password: Annotated[bool, typer.Option(
        help="make the user choose a new password at next sign-in")] = True,
) -> None:
    """Set a user's password, read from stdin (or prompted for at a terminal)."""
    password = read_password()
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.set_password(name, password, must_change_password=must_change_password)
    record_privilege_change(settings, user.username, "set-password")
    typer.echo(f"password of {user.username} set")


@users_app.command("disable")
def disable_user(name: Annotated[str, typer.Argument(help="user name")]) -> None:
    """Disable a user: every further sign-in is refused."""
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.disable(name)
    record_privilege_change(settings, user.username, "disable")
    typer.echo(f"disabled {user.username}")


@users_app.command("enable")
def enable_user(name: Annotated[str, typer.Argument(help="user name")]) -> None:
    """Enable a disabled user again."""
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.enable(name)
    record_privilege_change(settings, user.username, "enable")
    typer.echo(f"enabled {user.username}")


@users_app.command("unlock")
def unlock_user(name: Annotated[str, typer.Argument(help="user name")]) -> None:
    """Lift a lockout after failed sign-ins."""
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.unlock(name)
    record_privilege_change(settings, user.username, "unlock")
    typer.echo(f"unlocked {user.username}")


@users_app.command("enroll-totp")
def enroll_totp(name: Annotated[str, typer.Argument(help="user name")]) -> None:
    """Give a user a new authenticator secret; prints the otpauth:// URI once."""
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        uri = directory.enroll_totp(name)
    record_privilege_change(settings, name, "enroll-totp")
    typer.echo(uri)


@users_app.command("link-practitioner")
def link_practitioner_command(
    name: Annotated[str, typer.Argument(help="user name")],
    practitioner: Annotated[str, typer.Argument(help="the Practitioner resource's id")],
) -> None:
    """Say which Practitioner a user is (their documents and deficiencies become theirs)."""
    from chartkeeper.security.practitioners import link_practitioner
    from chartkeeper.store import Store

    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        user = directory.get_user(name)
        store = Store(settings.database_url)
        try:
            changed = link_practitioner(store, user.username, practitioner)
        finally:
            store.dispose()
    if changed:
        record_privilege_change(settings, user.username, "link-practitioner",
                                practitioner=practitioner)
    typer.echo(f"{user.username} is Practitioner/{practitioner}"
               + ("" if changed else " (already linked)"))


@users_app.command("init-admin")
def init_admin() -> None:
    """On a store without users, create `admin` and print its one-time password once."""
    settings = Settings.from_env()
    with refusals(), open_directory(settings) as directory:
        password = ensure_initial_admin(directory)
    if password is None:
        errors.print("users already exist; no initial administrator created")
        return
    record_privilege_change(settings, "admin", "add", role="administrator", initial=True)
    typer.echo(f"created user admin (administrator); one-time password: {password}")
    typer.echo("it must be changed at first sign-in; enroll TOTP with "
               "`chartkeeper users enroll-totp admin`")


@users_app.command("list")
def list_users() -> None:
    """List users with role, state and second factor."""
    with refusals(), open_directory(Settings.from_env()) as directory:
        users = directory.list_users()
    table = Table("user", "role", "active", "locked until", "TOTP", "must change password",
                  "last sign-in")
    for user in users:
        table.add_row(
            user.username, user.role.value, "yes" if user.active else "no",
            (user.locked_until.isoformat(timespec="seconds")
             if user.locked_until is not None and user.is_locked() else ""),
            "yes" if user.totp_enrolled else ("required" if user.requires_second_factor else ""),
            "yes" if user.must_change_password else "",
            user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "",
        )
    Console(width=160).print(table)


@token_app.command("issue")
def issue_token(
    user: Annotated[str, typer.Option("--user", help="the user the token acts for")],
    scope: Annotated[str, typer.Option(
        "--scope", help="space-separated SMART scopes, e.g. 'user/*.rs patient/Observation.r'")],
    patient: Annotated[str | None, typer.Option(
        "--patient", help="patient id for patient/ scopes")] = None,
    minutes: Annotated[int, typer.Option("--minutes", help="lifetime in minutes")] = 60,
) -> None:
    """Print a bearer token for an active user (an administrator's tool: no password asked)."""
    settings = Settings.from_env()
    with refusals():
        with open_directory(settings) as directory:
            account = directory.get_user(user)
        if not account.active:
            errors.print(f"[red]error:[/red] user {account.username!r} is disabled")
            raise typer.Exit(1)
        token = TokenIssuer.from_settings(settings).issue(
            account.username, account.role, scope, patient=patient, minutes=minutes)
    record_privilege_change(settings, account.username, "token-issued", scope=scope,
                            patient=patient, minutes=minutes)
    typer.echo(token)


app = typer.Typer(help="Chartkeeper accounts and tokens.", no_args_is_help=True,
                  add_completion=False)
app.add_typer(users_app, name="users")
app.add_typer(token_app, name="token")


if __name__ == "__main__":  # pragma: no cover - `python -m chartkeeper.security.cli`
    app()
