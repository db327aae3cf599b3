"""Tables of the linkage store and how to connect to it (SQLite or PostgreSQL via SQLModel).

The same SQLModel code serves an embedded SQLite file in the vault folder and a PostgreSQL
server given by URL. No table holds an identifying value in clear: linkage rows are sealed,
journal rows key input files by a keyed digest of their path, and the audit log records
pseudonyms, never identities.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, UniqueConstraint, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlmodel import Field, Session, SQLModel, create_engine

from keystore.errors import ConfigurationError, DatabaseError
from keystore.stamps import utcnow

if TYPE_CHECKING:
    from sqlalchemy.dialects.postgresql import Insert as PostgresInsert
    from sqlalchemy.dialects.sqlite import Insert as SQLiteInsert

#: How long a SQLite writer waits for another one's lock before it gives up (seconds).
BUSY_TIMEOUT_VARIABLE = "PSEUDO_DB_BUSY_TIMEOUT"
DEFAULT_BUSY_TIMEOUT = 60.0
MAX_BUSY_TIMEOUT = 86400.0


class LinkageRow(SQLModel, table=True):
    """One sealed linkage record: a pseudonymous key and the identity it stands for."""

    __tablename__ = "linkage"
    __table_args__ = (UniqueConstraint("project", "kind", "key", "digest"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=16)
    key: str = Field(index=True, max_length=128)
    pseudonym: str = Field(index=True, max_length=128)
    digest: str = Field(max_length=64)
    sealed: bytes
    run_id: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class JournalRow(SQLModel, table=True):
    """What happened to one input file in a project: the bookkeeping that makes runs resumable."""

    __tablename__ = "journal"
    __table_args__ = (UniqueConstraint("project", "input_key"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True, max_length=64)
    input_key: str = Field(max_length=64)
    fingerprint: str = Field(max_length=64)
    status: str = Field(max_length=16)
    output: str | None = Field(default=None, max_length=512)
    reason: str | None = Field(default=None, max_length=512)
    run_id: str = Field(max_length=64)
    updated_at: datetime = Field(default_factory=utcnow)


class PatientStateRow(SQLModel, table=True):
    """State the operator must find again in later batches (e.g. a patient's anchored offset).

    Encrypted with a key derived from the project secret: the operator can read it, a thief of
    the database cannot. The first run to record a patient's state wins; later runs reuse it.
    """

    __tablename__ = "patient_state"
    __table_args__ = (UniqueConstraint("project", "key"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True, max_length=64)
    key: str = Field(max_length=160)
    sealed: bytes
    created_at: datetime = Field(default_factory=utcnow)


class IdentityRuleRow(SQLModel, table=True):
    """A decision on whose pseudonym a patient identity gets: an imported subject ID, a merge
    into another pseudonym, or (with conditions on the birth date and sex) a split.

    ``key`` is a keyed digest of the identity (patient ID and its namespace), ``pseudonym``
    the pseudonym it gets; ``sealed`` holds the date offset and the keyed conditions,
    encrypted with the project's state key (the operator reads it, a thief does not).
    """

    __tablename__ = "identity_rule"
    __table_args__ = (UniqueConstraint("project", "key", "kind", "pseudonym"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True, max_length=64)
    key: str = Field(index=True, max_length=64)
    kind: str = Field(max_length=16)
    pseudonym: str = Field(index=True, max_length=128)
    sealed: bytes
    created_at: datetime = Field(default_factory=utcnow)


class IdentityFingerprintRow(SQLModel, table=True):
    """Keyed fingerprints of what the project holds of a pseudonym's patient: birth date, sex
    and name (HMAC under the project's identity key, each bound to the pseudonym, so equal
    values of two patients give unrelated digests). The first run to know a value records
    it; a later file that contradicts the birth date or sex is an identity conflict."""

    __tablename__ = "identity_fingerprint"
    __table_args__ = (UniqueConstraint("project", "pseudonym"),)

    id: int | None = Field(default=None, primary_key=True)
    project: str = Field(index=True, max_length=64)
    pseudonym: str = Field(max_length=128)
    birth_date: str | None = Field(default=None, max_length=64)
    sex: str | None = Field(default=None, max_length=64)
    name: str | None = Field(default=None, max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class RunRow(SQLModel, table=True):
    """One invocation of ``pseudo run``."""

    __tablename__ = "run"

    run_id: str = Field(primary_key=True, max_length=64)
    project: str = Field(index=True, max_length=64)
    policy: str = Field(max_length=256)
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime | None = None
    status: str = Field(default="running", max_length=16)
    counts: str = Field(default="{}")


class AuditRow(SQLModel, table=True):
    """One record of the append-only, hash-chained audit log."""

    __tablename__ = "audit"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    timestamp: str = Field(max_length=32)
    actor: str = Field(max_length=256)
    action: str = Field(max_length=64)
    project: str | None = Field(default=None, max_length=64)
    subject: str | None = Field(default=None, max_length=256)
    reason: str | None = Field(default=None)
    outcome: str = Field(max_length=64)
    details: str = Field(default="{}")
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64)
    #: The project whose audit key authenticates this record (hashed), or None.
    mac_key: str | None = Field(default=None, max_length=64)
    #: The key slot that was opened to obtain that key (hashed), or None.
    mac_slot: str | None = Field(default=None, max_length=64)
    #: HMAC-SHA256 of ``hash`` under the project's audit key (hex), or None.
    mac: str | None = Field(default=None, max_length=64)


class AuditHead(SQLModel, table=True):
    """The single row naming the last audit record; writers lock it to append in order."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True)
    seq: int = 0
    hash: str = Field(default="0" * 64, max_length=64)


class AuditSignatureRow(SQLModel, table=True):
    """A re-identifier's Ed25519 signature of one audit record's sequence number and hash.

    Written in the transaction that appends the record, by a process that opened a
    re-identification slot; since each hash covers its predecessor, it signs the whole log up
    to that record (the head at that moment). Kept apart from ``audit`` so that the records'
    format, and their hashes, stay as they were.
    """

    __tablename__ = "audit_signature"

    seq: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    project: str = Field(max_length=64)
    signature: str = Field(max_length=128)  # hex


class AuthFailureRow(SQLModel, table=True):
    """Failed passphrase attempts in a row on one project and role, and when the next may start.

    Every attempt counts as a failure until it succeeds (a killed process cannot skip the
    count); a success resets the row.
    """

    __tablename__ = "auth_failure"

    project: str = Field(primary_key=True, max_length=64)
    role: str = Field(primary_key=True, max_length=16)
    failures: int = 0
    next_attempt: float = 0.0  # seconds since the epoch


class ProjectKeyRow(SQLModel, table=True):
    """The re-identification public key that a project's linkage records are sealed to.

    Writers check it in the transaction that stores records, so a run that opened the project
    before a key rotation cannot add records sealed to the old key; ``closed_at`` refuses any
    new record once the project was closed (also for another vault sharing this database).
    """

    __tablename__ = "project_key"

    project: str = Field(primary_key=True, max_length=64)
    public_key: str = Field(max_length=64)  # hex
    rotated_at: datetime | None = None
    closed_at: datetime | None = None


def upsert(
    session: Session,
    model: type[SQLModel],
    rows: Sequence[dict[str, Any]],
    *,
    keys: Sequence[str] = (),
    update: Sequence[str] = (),
) -> None:
    """Insert rows; on a unique ``keys`` conflict, update ``update`` columns (or skip the row).

    One statement executed for all rows (an "executemany", which SQLAlchemy batches into
    multi-row INSERTs and compiles once per process), safe against concurrent writers (SQLite
    and PostgreSQL).
    """
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):  # pragma: no cover - other back ends
        raise ConfigurationError(f"unsupported database back end {dialect!r}")
    if update:  # one row per key, the last (what a driver does with duplicates varies)
        rows = list({tuple(row[key] for key in keys): row for row in rows}.values())
    statement = _upsert_statement(dialect, model, tuple(keys), tuple(update))
    session.execute(statement, list(rows))


@functools.cache
def _upsert_statement(
    dialect: str, model: type[SQLModel], keys: tuple[str, ...], update: tuple[str, ...]
) -> PostgresInsert | SQLiteInsert:
    """The statement of :func:`upsert` (built once: statements are immutable)."""
    table = model.__table__  # type: ignore[attr-defined]
    statement: PostgresInsert | SQLiteInsert
    if dialect == "postgresql":  # imported here: a SQLite run need not load PostgreSQL's
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        statement = postgres_insert(table)
    else:
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table)
    if update:
        return statement.on_conflict_do_update(
            index_elements=list(keys),
            set_={column: getattr(statement.excluded, column) for column in update},
        )
    return statement.on_conflict_do_nothing()


def busy_timeout() -> float:
    """Seconds a SQLite writer waits for another writer's lock: ``$PSEUDO_DB_BUSY_TIMEOUT``
    (default 60), or :class:`ConfigurationError` if it is not a number in (0, 86400]."""
    text = os.environ.get(BUSY_TIMEOUT_VARIABLE, "").strip()
    if not text:
        return DEFAULT_BUSY_TIMEOUT
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MAX_BUSY_TIMEOUT:  # NaN fails too
        raise ConfigurationError(
            f"{BUSY_TIMEOUT_VARIABLE}={text[:40]!r}: expected the seconds a database writer "
            f"waits for another one's lock, a number above 0 and at most {MAX_BUSY_TIMEOUT:.0f} "
            f"(default {DEFAULT_BUSY_TIMEOUT:.0f})"
        )
    return seconds


def database_identity(url: str) -> str:
    """The database a URL names, spelled one way and without its password.

    The driver is left out (``postgresql+psycopg`` and ``postgresql`` reach the same database)
    and a SQLite path is made absolute, so that every spelling of one database gives the same
    string; the password (also one given as a query parameter) never appears in it.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"--db: not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            database = str(Path(database).expanduser().resolve())
        return f"sqlite:///{database}"
    query = "&".join(
        f"{key}={value}"
        for key, value in sorted(parsed.query.items())
        if key.lower() not in ("password", "passfile")
    )
    host = (parsed.host or "").lower()
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{backend}://{user}{host}{port}/{parsed.database or ''}" + (
        f"?{query}" if query else ""
    )


def database_digest(url: str) -> str:
    """A short SHA-256 digest of :func:`database_identity` (names per-database files)."""
    return hashlib.sha256(database_identity(url).encode("utf-8")).hexdigest()[:32]


def _configure_sqlite(engine: Engine, timeout: float) -> None:
    """Make SQLite safe for several processes: WAL, a busy timeout, and immediate write locks."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event emit BEGIN itself (the pysqlite recipe).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={max(1, round(timeout * 1000))}")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def connect(url: str) -> Engine:
    """Open the linkage store at ``url`` and create its tables if they are missing.

    A SQLite writer waits :func:`busy_timeout` seconds for another writer's lock, then fails
    with :class:`DatabaseError` ("database is locked").
    """
    timeout = busy_timeout()
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"--db: not a database URL: {url!r}") from exc
    try:
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(url, connect_args={"timeout": timeout})
            _configure_sqlite(engine, timeout)
        else:
            engine = create_engine(url, pool_pre_ping=True)
        SQLModel.metadata.create_all(engine)
        with Session(engine) as session:
            upsert(session, AuditHead, [{"id": 1, "seq": 0, "hash": "0" * 64}])
            session.commit()
    except SQLAlchemyError as exc:
        raise DatabaseError(
            f"cannot open the linkage store {parsed!r}: {_first_line(exc)}"
        ) from exc
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"no driver for {parsed.get_backend_name()}: install pseudo[postgres] ({exc.name})"
        ) from exc
    return engine


def _locked(exc: BaseException) -> str | None:
    """The one-line explanation of a SQLite lock that outlasted the busy timeout, else None."""
    text = str(getattr(exc, "orig", None) or "")
    if "database is locked" not in text and "database table is locked" not in text:
        return None
    try:
        waited = f"{busy_timeout():g} s"
    except ConfigurationError:
        waited = "the busy timeout"
    return (
        f"the database is locked: another writer held it longer than {waited} "
        f"(${BUSY_TIMEOUT_VARIABLE})"
    )


def failure(exc: BaseException) -> str:
    """What a database error was, in words that carry no value of any row."""
    return _locked(exc) or exc.__class__.__name__


def _first_line(exc: BaseException) -> str:
    locked = _locked(exc)
    if locked:
        return locked
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
