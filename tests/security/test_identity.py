"""User accounts and sign-in on real SQLite and PostgreSQL databases."""

from __future__ import annotations

import logging
import os
import secrets
import stat
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine, MetaData, select

from chartkeeper.security.identity import (
    BAD_CREDENTIALS_MESSAGE,
    PRIVILEGED_ROLES,
    AccountDisabled,
    AccountLocked,
    AuthenticationError,
    BadCredentials,
    BadSecondFactor,
    InvalidRole,
    InvalidUsername,
    KeyFileError,
    LockoutPolicy,
    ReplayedSecondFactor,
    Role,
    SecondFactorKeyMissing,
    SecondFactorRequired,
    Session,
    SessionPolicy,
    UnknownUser,
    UserDirectory,
    UserExists,
    UserNotFound,
    WeakPassword,
    app_user,
    create_identity_schema,
    ensure_initial_admin,
    load_or_create_key,
)
from chartkeeper.store.engine import make_engine

T0 = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
PASSWORD = "Correct-Horse-Battery-Staple-42"


def fast_hasher() -> PasswordHasher:
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


class CountingHasher(PasswordHasher):
    """A fast hasher that counts verifications, to prove unknown users cost one too."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verifications = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Any:
        self.verifications += 1
        return super().verify(hash, password)


@pytest.fixture
def totp_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def directory(engine: Engine, totp_key: bytes) -> UserDirectory:
    return UserDirectory(engine, hasher=fast_hasher(), totp_key=totp_key)


def totp_of(uri: str) -> pyotp.TOTP:
    parsed = pyotp.parse_uri(uri)
    assert isinstance(parsed, pyotp.TOTP)
    return parsed


# ------------------------------------------------------------------------------- basics
def test_added_user_signs_in_with_the_password(directory: UserDirectory) -> None:
    added = directory.add_user("Alice.Coder", Role.coder, PASSWORD, now=T0)
    assert added.username == "alice.coder"
    assert (added.role, added.active, added.totp_enrolled) == (Role.coder, True, False)

    user = directory.authenticate("alice.coder", PASSWORD, now=T0 + timedelta(minutes=1))

    assert user.username == "alice.coder"
    assert user.last_login_at == T0 + timedelta(minutes=1)
    assert user.failed_attempts == 0
    # Usernames are case-insensitive.
    assert directory.authenticate("ALICE.CODER", PASSWORD, now=T0).username == "alice.coder"


def test_wrong_password_and_unknown_user_read_the_same(engine: Engine) -> None:
    hasher = CountingHasher()
    directory = UserDirectory(engine, hasher=hasher)
    directory.add_user("alice", Role.coder, PASSWORD)

    with pytest.raises(BadCredentials) as wrong:
        directory.authenticate("alice", PASSWORD + "x", now=T0)
    before = hasher.verifications
    with pytest.raises(BadCredentials) as unknown:
        directory.authenticate("mallory", PASSWORD, now=T0)

    assert str(wrong.value) == str(unknown.value) == BAD_CREDENTIALS_MESSAGE
    assert type(wrong.value) is BadCredentials
    assert type(unknown.value) is UnknownUser
    # The unknown user still cost one argon2 verification, against the dummy hash.
    assert hasher.verifications == before + 1
    with pytest.raises(UnknownUser):
        directory.authenticate("not a valid name!", PASSWORD, now=T0)


def test_admin_operations_on_a_missing_user_name_it(directory: UserDirectory) -> None:
    for operation in (directory.disable, directory.enable, directory.unlock,
                      directory.get_user, directory.enroll_totp):
        with pytest.raises(UserNotFound, match="'ghost'"):
            operation("ghost")
    with pytest.raises(UserNotFound):
        directory.set_password("ghost", PASSWORD)


def test_list_users_is_sorted_and_carries_no_secrets(directory: UserDirectory) -> None:
    directory.add_user("zoe", Role.analyst, PASSWORD)
    directory.add_user("adam", Role.him_technician, PASSWORD)

    users = directory.list_users()

    assert [u.username for u in users] == ["adam", "zoe"]
    assert directory.count_users() == 2
    assert PASSWORD not in repr(users)
    assert "argon2" not in repr(users)


# ------------------------------------------------------------------------------- lockout
def test_five_failures_lock_with_doubling_back_off_and_success_resets(
        directory: UserDirectory) -> None:
    directory.add_user("bob", Role.coder, PASSWORD)
    for _ in range(4):
        with pytest.raises(BadCredentials):
            directory.authenticate("bob", "wrong password!", now=T0)
    assert directory.get_user("bob").failed_attempts == 4
    assert directory.get_user("bob").locked_until is None

    with pytest.raises(BadCredentials):
        directory.authenticate("bob", "wrong password!", now=T0)
    assert directory.get_user("bob").locked_until == T0 + timedelta(minutes=1)

    # While locked even the right password is refused, and the refusal is not counted.
    with pytest.raises(AccountLocked) as locked:
        directory.authenticate("bob", PASSWORD, now=T0 + timedelta(seconds=59))
    assert locked.value.until == T0 + timedelta(minutes=1)
    assert directory.get_user("bob").failed_attempts == 5

    # Each failure after a lock expires doubles the next lock: 2 minutes, then 4.
    t1 = T0 + timedelta(minutes=1, seconds=1)
    with pytest.raises(BadCredentials):
        directory.authenticate("bob", "wrong password!", now=t1)
    assert directory.get_user("bob").locked_until == t1 + timedelta(minutes=2)
    t2 = t1 + timedelta(minutes=2, seconds=1)
    with pytest.raises(BadCredentials):
        directory.authenticate("bob", "wrong password!", now=t2)
    assert directory.get_user("bob").locked_until == t2 + timedelta(minutes=4)
    with pytest.raises(AccountLocked):
        directory.authenticate("bob", PASSWORD, now=t2 + timedelta(minutes=3))

    # After the lock, the right password signs in and resets everything.
    t3 = t2 + timedelta(minutes=4)
    user = directory.authenticate("bob", PASSWORD, now=t3)
    assert (user.failed_attempts, user.locked_until) == (0, None)
    with pytest.raises(BadCredentials):
        directory.authenticate("bob", "wrong password!", now=t3)
    assert directory.get_user("bob").locked_until is None
    assert directory.get_user("bob").failed_attempts == 1


def test_lockout_back_off_doubles_and_is_capped_at_one_hour() -> None:
    policy = LockoutPolicy()
    durations = [policy.lock_duration(n) for n in range(1, 13)]
    minutes = [None if d is None else d / timedelta(minutes=1) for d in durations]
    assert minutes == [None, None, None, None, 1, 2, 4, 8, 16, 32, 60, 60]
    assert policy.lock_duration(10_000) == timedelta(hours=1)


def test_locked_account_is_capped_at_one_hour_in_the_database(
        directory: UserDirectory) -> None:
    directory.add_user("carol", Role.coder, PASSWORD)
    moment = T0
    for _ in range(15):
        with pytest.raises(BadCredentials):
            directory.authenticate("carol", "wrong password!", now=moment)
        locked_until = directory.get_user("carol").locked_until
        if locked_until is not None:
            assert locked_until - moment <= timedelta(hours=1)
            moment = locked_until + timedelta(seconds=1)
    assert directory.get_user("carol").locked_until == moment - timedelta(seconds=1)
    assert locked_until is not None
    assert directory.get_user("carol").failed_attempts == 15

    unlocked = directory.unlock("carol")
    assert (unlocked.failed_attempts, unlocked.locked_until) == (0, None)
    assert directory.authenticate("carol", PASSWORD, now=T0).username == "carol"


# ------------------------------------------------------------------------------- disabled
def test_disabled_user_is_refused_and_wrong_password_reveals_nothing(
        directory: UserDirectory) -> None:
    directory.add_user("dave", Role.transcriptionist, PASSWORD)
    assert directory.disable("dave").active is False

    with pytest.raises(AccountDisabled):
        directory.authenticate("dave", PASSWORD, now=T0)
    with pytest.raises(BadCredentials) as wrong:
        directory.authenticate("dave", "wrong password!", now=T0)
    assert str(wrong.value) == BAD_CREDENTIALS_MESSAGE

    directory.enable("dave")
    assert directory.authenticate("dave", PASSWORD, now=T0).active


# ------------------------------------------------------------------------------- TOTP
def test_privileged_roles_are_refused_without_a_second_factor(
        directory: UserDirectory) -> None:
    for role in Role:
        directory.add_user(f"user-{role.value}", role, PASSWORD)
        if role in PRIVILEGED_ROLES:
            with pytest.raises(SecondFactorRequired) as refused:
                directory.authenticate(f"user-{role.value}", PASSWORD, now=T0)
            assert refused.value.enrolled is False
        else:
            assert directory.authenticate(f"user-{role.value}", PASSWORD, now=T0).role is role
    assert {r for r in Role if r.requires_second_factor} == {
        Role.administrator, Role.privacy_officer, Role.physician, Role.roi_specialist}


def test_correct_totp_is_accepted_once_and_replays_are_refused(
        directory: UserDirectory) -> None:
    directory.add_user("dr.house", Role.physician, PASSWORD)
    uri = directory.enroll_totp("dr.house")
    assert uri.startswith("otpauth://totp/") and "issuer=Chartkeeper" in uri
    totp = totp_of(uri)
    assert directory.get_user("dr.house").totp_enrolled

    with pytest.raises(SecondFactorRequired) as missing:
        directory.authenticate("dr.house", PASSWORD, now=T0)
    assert missing.value.enrolled is True
    wrong = f"{(int(totp.at(T0)) + 1) % 1_000_000:06d}"
    with pytest.raises(BadSecondFactor) as bad:
        directory.authenticate("dr.house", PASSWORD, wrong, now=T0)
    assert type(bad.value) is BadSecondFactor
    with pytest.raises(BadSecondFactor, match="6 digits"):
        directory.authenticate("dr.house", PASSWORD, "12ab56", now=T0)

    user = directory.authenticate("dr.house", PASSWORD, totp.at(T0), now=T0)
    assert user.username == "dr.house"
    assert user.failed_attempts == 0

    # The same code again, within its own time step or the next, is a replay.
    with pytest.raises(ReplayedSecondFactor):
        directory.authenticate("dr.house", PASSWORD, totp.at(T0), now=T0 + timedelta(seconds=5))
    with pytest.raises(ReplayedSecondFactor):
        directory.authenticate("dr.house", PASSWORD, totp.at(T0), now=T0 + timedelta(seconds=31))
    # An older (but still in-window) code is refused too: steps only move forward.
    with pytest.raises(ReplayedSecondFactor):
        directory.authenticate("dr.house", PASSWORD, totp.at(T0 - timedelta(seconds=30)),
                               now=T0 + timedelta(seconds=5))
    # The next step's code works; one from two steps ago is simply wrong.
    later = T0 + timedelta(seconds=30)
    assert directory.authenticate("dr.house", PASSWORD, totp.at(later), now=later).active
    with pytest.raises(BadSecondFactor):
        directory.authenticate("dr.house", PASSWORD, totp.at(later - timedelta(seconds=60)),
                               now=later + timedelta(seconds=30))


def test_a_right_code_does_not_help_a_wrong_password(directory: UserDirectory) -> None:
    directory.add_user("privacy", Role.privacy_officer, PASSWORD)
    totp = totp_of(directory.enroll_totp("privacy"))
    with pytest.raises(BadCredentials):
        directory.authenticate("privacy", "wrong password!", totp.at(T0), now=T0)
    # The code was not consumed by the failed attempt.
    assert directory.authenticate("privacy", PASSWORD, totp.at(T0), now=T0).username == "privacy"


def test_wrong_one_time_codes_count_toward_lockout(directory: UserDirectory) -> None:
    directory.add_user("roi", Role.roi_specialist, PASSWORD)
    totp = totp_of(directory.enroll_totp("roi"))
    wrong = f"{(int(totp.at(T0)) + 500_000) % 1_000_000:06d}"
    for _ in range(5):
        with pytest.raises(BadSecondFactor):
            directory.authenticate("roi", PASSWORD, wrong, now=T0)
    with pytest.raises(AccountLocked):
        directory.authenticate("roi", PASSWORD, totp.at(T0), now=T0 + timedelta(seconds=10))


def test_concurrent_sign_ins_with_one_code_let_exactly_one_through(
        directory: UserDirectory) -> None:
    directory.add_user("admin2", Role.administrator, PASSWORD)
    code = totp_of(directory.enroll_totp("admin2")).at(T0)

    def attempt(_: int) -> str:
        try:
            directory.authenticate("admin2", PASSWORD, code, now=T0)
        except ReplayedSecondFactor:
            return "replayed"
        return "signed in"

    with ThreadPoolExecutor(max_workers=4) as pool:
        outcomes = list(pool.map(attempt, range(4)))
    assert sorted(outcomes) == ["replayed"] * 3 + ["signed in"]


def test_a_non_privileged_user_who_enrolled_needs_the_code_too(directory: UserDirectory) -> None:
    directory.add_user("erin", Role.coder, PASSWORD)
    totp = totp_of(directory.enroll_totp("erin"))
    assert directory.get_user("erin").requires_second_factor
    with pytest.raises(SecondFactorRequired):
        directory.authenticate("erin", PASSWORD, now=T0)
    assert directory.authenticate("erin", PASSWORD, totp.at(T0), now=T0).username == "erin"


def test_totp_secrets_need_the_key_they_were_encrypted_with(engine: Engine) -> None:
    keyless = UserDirectory(engine, hasher=fast_hasher())
    keyless.add_user("frank", Role.physician, PASSWORD)
    with pytest.raises(SecondFactorKeyMissing):
        keyless.enroll_totp("frank")

    UserDirectory(engine, hasher=fast_hasher(), totp_key=secrets.token_bytes(32)
                  ).enroll_totp("frank")
    other_key = UserDirectory(engine, hasher=fast_hasher(), totp_key=secrets.token_bytes(32))
    with pytest.raises(KeyFileError, match="does not decrypt"):
        other_key.authenticate("frank", PASSWORD, "123456", now=T0)
    with pytest.raises(KeyFileError, match="32 bytes"):
        UserDirectory(engine, totp_key=b"short")


# ------------------------------------------------------------------------------- policy
def test_password_policy_and_input_errors_store_nothing(directory: UserDirectory) -> None:
    with pytest.raises(WeakPassword, match="at least 12 characters \\(got 11\\)"):
        directory.add_user("gina", Role.coder, "elevenchars")
    with pytest.raises(WeakPassword, match="must not be the username"):
        directory.add_user("transcriber01", Role.transcriptionist, "Transcriber01")
    with pytest.raises(WeakPassword, match="whitespace"):
        directory.add_user("gina", Role.coder, " " * 16)
    with pytest.raises(WeakPassword, match="at most 1024"):
        directory.add_user("gina", Role.coder, "x" * 1025)
    with pytest.raises(InvalidUsername, match="'gina smith'"):
        directory.add_user("gina smith", Role.coder, PASSWORD)
    with pytest.raises(InvalidRole, match="'surgeon'.*administrator"):
        directory.add_user("gina", "surgeon", PASSWORD)
    assert directory.count_users() == 0

    directory.add_user("gina", "coder", PASSWORD)
    with pytest.raises(UserExists, match="'gina'"):
        directory.add_user("GINA", Role.analyst, PASSWORD)
    with pytest.raises(WeakPassword):
        directory.set_password("gina", "short")
    assert directory.count_users() == 1
    assert directory.authenticate("gina", PASSWORD, now=T0).role is Role.coder


def test_set_password_replaces_the_old_one(directory: UserDirectory) -> None:
    directory.add_user("hank", Role.analyst, PASSWORD)
    user = directory.set_password("hank", "a brand new passphrase", must_change_password=True)
    assert user.must_change_password
    with pytest.raises(BadCredentials):
        directory.authenticate("hank", PASSWORD, now=T0)
    assert directory.authenticate("hank", "a brand new passphrase", now=T0).username == "hank"


def test_hash_is_upgraded_when_the_parameters_change(engine: Engine) -> None:
    UserDirectory(engine, hasher=fast_hasher()).add_user("ivy", Role.coder, PASSWORD)
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    directory = UserDirectory(engine, hasher=stronger)

    def stored_hash() -> str:
        with engine.connect() as conn:
            return str(conn.execute(select(app_user.c.password_hash)).scalar_one())

    old = stored_hash()
    assert old.startswith("$argon2id$") and stronger.check_needs_rehash(old)
    directory.authenticate("ivy", PASSWORD, now=T0)

    new = stored_hash()
    assert new != old and new.startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert not stronger.check_needs_rehash(new)
    assert directory.authenticate("ivy", PASSWORD, now=T0).username == "ivy"


# ------------------------------------------------------------------------------- first start
def test_initial_admin_is_created_once_with_a_one_time_password(
        directory: UserDirectory) -> None:
    password = ensure_initial_admin(directory)

    assert password is not None and len(password) >= 12
    admin = directory.get_user("admin")
    assert (admin.role, admin.must_change_password, admin.active) == (
        Role.administrator, True, True)
    # The password is right; an administrator still needs TOTP before signing in.
    with pytest.raises(SecondFactorRequired):
        directory.authenticate("admin", password, now=T0)
    assert ensure_initial_admin(directory) is None
    assert directory.count_users() == 1


def test_no_initial_admin_when_users_exist(directory: UserDirectory) -> None:
    directory.add_user("jane", Role.administrator, PASSWORD)
    assert ensure_initial_admin(directory) is None
    with pytest.raises(UserNotFound):
        directory.get_user("admin")


# ------------------------------------------------------------------------------- secrecy
def test_passwords_are_never_stored_or_logged(database_url: str, totp_key: bytes,
                                              caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    # SQL statements and their parameters are logged too, to prove none carries a password.
    caplog.set_level(logging.INFO, logger="sqlalchemy.engine")
    engine = make_engine(database_url)
    try:
        create_identity_schema(engine)
        directory = UserDirectory(engine, hasher=fast_hasher(), totp_key=totp_key)
        secrets_used = [
            "Kestrel-Harbor-Quince-7781",
            "Marigold-Anvil-Tundra-5512",
            "Obsidian-Lantern-Pepper-3390",
        ]
        admin_password = ensure_initial_admin(directory)
        assert admin_password is not None
        secrets_used.append(admin_password)
        directory.add_user("kim", Role.coder, secrets_used[0])
        directory.add_user("lee", Role.physician, secrets_used[1])
        totp = totp_of(directory.enroll_totp("lee"))
        secrets_used.append(totp.secret)
        directory.set_password("kim", secrets_used[2])
        refusals: list[Exception] = []
        for password, code in [(secrets_used[2], None), (secrets_used[0], None),
                               (secrets_used[1], None), (secrets_used[1], "000000"),
                               (secrets_used[1], totp.at(T0)), (secrets_used[1], totp.at(T0))]:
            for name in ("kim", "lee", "nobody"):
                try:
                    directory.authenticate(name, password, code, now=T0)
                except Exception as exc:  # every refusal is checked for leaks below
                    refusals.append(exc)
        with pytest.raises(WeakPassword) as weak:
            directory.add_user("max", Role.coder, "Tiny-Secret")
        refusals.append(weak.value)
        secrets_used.append("Tiny-Secret")

        stored = dump_every_row(engine)
        files = sqlite_file_bytes(database_url)
    finally:
        engine.dispose()

    assert "kim" in stored and "$argon2id$" in stored  # the dump really holds the rows
    assert "signed in" in caplog.text and "app_user" in caplog.text  # and logs were captured
    assert len(refusals) > 10
    for secret in secrets_used:
        assert secret not in stored
        assert secret not in caplog.text
        assert all(secret not in str(exc) for exc in refusals)
        for name, content in files.items():
            assert secret.encode() not in content, f"{secret!r} found in {name}"


def dump_every_row(engine: Engine) -> str:
    """Every value of every table in the database, as text."""
    reflected = MetaData()
    reflected.reflect(engine)
    lines = []
    with engine.connect() as conn:
        for table in reflected.sorted_tables:
            for row in conn.execute(select(table)):
                lines.append(f"{table.name}: {tuple(row)!r}")
    return "\n".join(lines)


def sqlite_file_bytes(database_url: str) -> dict[str, bytes]:
    """The database file and its WAL and shared-memory files (empty for PostgreSQL)."""
    if not database_url.startswith("sqlite"):
        return {}
    path = Path(database_url.removeprefix("sqlite:///"))
    found = {p.name: p.read_bytes() for p in path.parent.glob(path.name + "*")}
    assert path.name in found
    return found


# ------------------------------------------------------------------------------- key files
def test_key_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "home" / "test.key"
    key = load_or_create_key(path)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["test.key"]

    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="mode 0644"):
        load_or_create_key(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    short.chmod(0o600)
    with pytest.raises(KeyFileError, match="8 bytes"):
        load_or_create_key(short)


# ------------------------------------------------------------------------------- sessions
def test_session_expires_after_the_idle_timeout() -> None:
    policy = SessionPolicy(idle_minutes=15)
    assert not policy.is_expired(T0, T0 + timedelta(minutes=14, seconds=59))
    assert policy.is_expired(T0, T0 + timedelta(minutes=15))

    user_session = Session(session_id="s", username="kim", role=Role.coder, started_at=T0,
                           last_seen=T0)
    touched = user_session.touched(T0 + timedelta(minutes=10))
    assert not policy.is_expired(touched.last_seen, T0 + timedelta(minutes=20))
    assert touched.started_at == T0


def test_session_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="positive"):
        SessionPolicy(idle_minutes=0)
    with pytest.raises(ValueError, match="timezone-aware"):
        SessionPolicy().is_expired(T0, datetime(2026, 11, 29, 12, 30))


def test_session_start_gives_a_random_id(directory: UserDirectory) -> None:
    user = directory.add_user("nora", Role.coder, PASSWORD)
    first, second = Session.start(user, T0), Session.start(user, T0)
    assert first.session_id != second.session_id and len(first.session_id) >= 40
    assert (first.username, first.role, first.last_seen) == ("nora", Role.coder, T0)


def test_names_without_an_account_lock_like_real_ones(engine: Engine) -> None:
    """Else "account locked" after five tries would tell which user names exist."""
    directory = UserDirectory(engine, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    directory.add_user("realname", Role.coder, "Real-Account-Passphrase-1")
    moment = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    answers: dict[str, list[str]] = {}
    for name in ("realname", "ghostname"):
        answers[name] = []
        for _ in range(directory.lockout.threshold + 1):
            with pytest.raises(AuthenticationError) as refused:
                directory.authenticate(name, "wrong-password-123", now=moment)
            answers[name].append(type(refused.value).__mro__[1].__name__
                                 if type(refused.value) is UnknownUser
                                 else type(refused.value).__name__)
    assert answers["realname"] == answers["ghostname"]
    assert answers["ghostname"][-1] == "AccountLocked"
    # The lock passes for both alike.
    later = moment + directory.lockout.first_lock * 2
    with pytest.raises(BadCredentials):
        directory.authenticate("ghostname", "wrong-password-123", now=later)
