"""The store: SQLAlchemy 2 tables every stage reads and writes, and small named queries.

SQLite (WAL, foreign keys on) by default; PostgreSQL through ``DATABASE_URL`` unchanged. The schema
is owned by Alembic migrations (``clinalign/migrations``); ``Store.open`` brings a database up to date.

PHI rule: ``RawRecord`` is the quarantine. Only ``ingest`` writes it and only ``deidentify`` reads
it; every later stage reads ``Record`` through ``deidentified_records()``, which is the PHI gate.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import os
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Select, create_engine, event, func, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.orm import Session, sessionmaker

from clinalign.schemas import ClinalignError
from clinalign.store.serving import ApiKey, Flag, Interaction  # noqa: F401 - the serving tables
from clinalign.store.tables import (  # noqa: F401 - the tables, where every stage finds them
    DEIDENTIFIED,
    QUARANTINED,
    REJECTED,
    Adjudication,
    AiJudgement,
    Artifact,
    Assignment,
    AuditEvent,
    AuditHead,
    AuditPending,
    Base,
    Campaign,
    Candidate,
    Judgement,
    JudgementRevision,
    LoginAttempt,
    Prompt,
    RawRecord,
    Record,
    Run,
    RunIO,
    Task,
    User,
    WebSession,
    aware,
    utcnow,
)


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    dbapi_connection.isolation_level = None  # the driver's own BEGIN is replaced by _sqlite_begin's
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


def _sqlite_begin(connection) -> None:
    # Every transaction takes SQLite's write lock up front. A deferred transaction that reads and
    # then writes fails at once (SQLITE_BUSY, no waiting) when another writer committed in between,
    # which under a department's concurrent clicks would be an error page; IMMEDIATE waits its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


class _WriterQueue:
    """SQLite's write transactions take turns: threads of one process on a lock, and processes (web
    workers, the CLI) on an advisory lock of a file beside the database; the kernel hands both over
    as soon as they are free. SQLite has one writer at a time anyway, and its own busy handler waits
    by sleeping (up to 100 ms a try). PostgreSQL writers need no queue: its row locks order them."""

    def __init__(self, url: URL):
        sqlite = url.get_backend_name() == "sqlite"
        self._threads = threading.Lock() if sqlite else None
        self._path = f"{url.database}.write-lock" if sqlite and url.database not in (None, "", ":memory:") else None
        self._file = None

    def __enter__(self):
        if self._threads is None:
            return self
        self._threads.acquire()
        if self._path:
            if self._file is None:
                self._file = open(self._path, "a")  # noqa: SIM115 - held for the life of the store
            fcntl.flock(self._file, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self._threads is None:
            return
        if self._path:
            fcntl.flock(self._file, fcntl.LOCK_UN)
        self._threads.release()


def _key_file(path: Path) -> bytes:
    """The key in ``path``, made (mode 0600) if absent; two processes making it at once agree on one."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        draft.touch(mode=0o600)
        draft.write_text(secrets.token_hex(32))
        try:
            os.link(draft, path)  # atomic, and refuses to replace a key another process made first
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip().encode()


class Store:
    """An engine plus a session factory; ``Store.open(url)`` also migrates the schema to head."""

    def __init__(self, engine: Engine, reader: Engine):
        self.engine = engine
        # ``info["store"]``: what records an audit event reaches the store's key through its session.
        self._sessions = sessionmaker(engine, expire_on_commit=False, info={"store": self})
        self._readers = sessionmaker(reader, expire_on_commit=False, info={"store": self})
        self._writer = _WriterQueue(engine.url)
        self._secret: bytes | None = None

    @classmethod
    def open(cls, url: str, migrate: bool = True) -> Store:
        if url.startswith("sqlite:///") and not url.endswith(":memory:"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Every web worker thread may hold a connection; the default pool (5 + 10) would make them queue.
        engine = create_engine(url, pool_size=40, max_overflow=20)
        # Readers run in autocommit: no BEGIN and ROLLBACK around their statements (two round trips
        # a page on PostgreSQL), and each statement sees the latest commit.
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
            event.listen(engine, "begin", _sqlite_begin)
            reader = create_engine(url, pool_size=40, max_overflow=20)  # no BEGIN IMMEDIATE on these
            event.listen(reader, "connect", _sqlite_pragmas)
        else:
            reader = engine.execution_options(isolation_level="AUTOCOMMIT")  # the same pool
        store = cls(engine, reader)
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        from alembic import command
        from alembic.config import Config

        cfg = Config()
        cfg.set_main_option("script_location", str(Path(__file__).parent.parent / "migrations"))
        with self.engine.begin() as connection:
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: committed when the block ends, rolled back whole on any error."""
        with self._writer, self._sessions() as session, session.begin():
            yield session

    def secret(self, purpose: str) -> bytes:
        """A key for ``purpose`` (the audit head's signature, pseudonyms, sign-in throttling), derived
        from the site's secret: ``CLINALIGN_SECRET_KEY`` when set (required when several machines share
        one database), else a random key kept in a file made on first use, readable by its owner only:
        beside a SQLite database, or in the data folder."""
        if self._secret is None:
            from clinalign.settings import Settings

            settings = Settings()
            if settings.secret_key:
                self._secret = settings.secret_key.encode()
            elif self.engine.url.get_backend_name() == "sqlite" and self.engine.url.database in (None, "", ":memory:"):
                self._secret = secrets.token_bytes(32)
            else:
                sqlite = self.engine.url.get_backend_name() == "sqlite"
                path = Path(f"{self.engine.url.database}.secret") if sqlite else settings.data_dir / "store.secret"
                self._secret = _key_file(path)
        return hmac.new(self._secret, purpose.encode(), hashlib.sha256).digest()

    @contextmanager
    def reading(self) -> Iterator[Session]:
        """Reads only, in autocommit, outside the write queue: each statement sees the latest commit,
        and SQLite readers in WAL mode never wait for a writer."""
        with self._readers() as session:  # closing (not rolling back) keeps loaded objects readable
            yield session


def deidentified() -> Select:
    """The PHI gate: records whose de-identification finished. Every read of cases after
    ``deidentify`` starts from this query."""
    return select(Record).where(Record.deid_status == DEIDENTIFIED)


def deidentified_records(session: Session, run_ids: list[int] | None = None) -> list[Record]:
    """The cases later stages may read (``run_ids``: from these deidentify runs only)."""
    query = deidentified()
    if run_ids is not None:
        query = query.where(Record.run_id.in_(run_ids))
    return list(session.scalars(query.order_by(Record.id)))


def not_deidentified(session: Session, prompt_ids: set[int]) -> int:
    """How many of these prompts come from a record that is not de-identified: the PHI gate's other
    side, for stages (campaigns) that take prompts rather than records."""
    clean = deidentified().with_only_columns(Record.id)
    return session.scalar(
        select(func.count()).select_from(Prompt).where(Prompt.id.in_(prompt_ids), Prompt.record_id.not_in(clean))
    )


def prompts(session: Session, dataset_version: str, split: str | None = None) -> list[Prompt]:
    query = select(Prompt).where(Prompt.dataset_version == dataset_version)
    if split is not None:
        query = query.where(Prompt.split == split)
    return list(session.scalars(query.order_by(Prompt.id)))


def campaign_by_name(session: Session, name: str) -> Campaign:
    campaign = session.scalar(select(Campaign).where(Campaign.name == name))
    if campaign is None:
        raise ClinalignError(f"no campaign named {name!r}")
    return campaign


# --- loops: every run continues one loop, named by the id of the run that began it ---------------


def loops(session: Session) -> list[int]:
    """Loops with at least one run that succeeded (a failed first ingest begins none)."""
    query = select(Run.loop_id).where(Run.loop_id.is_not(None), Run.status == "succeeded").distinct()
    return list(session.scalars(query.order_by(Run.loop_id)))


def loop_of(session: Session, run_id: int | None) -> int | None:
    return session.scalar(select(Run.loop_id).where(Run.id == run_id)) if run_id is not None else None


def loop_runs(session: Session, loop_id: int, stage: str | None = None) -> list[Run]:
    """The loop's succeeded runs, oldest first (of one stage when ``stage`` is given)."""
    query = select(Run).where(Run.loop_id == loop_id, Run.status == "succeeded")
    if stage is not None:
        query = query.where(Run.stage == stage)
    return list(session.scalars(query.order_by(Run.id)))


def loop_artifacts(session: Session, loop_id: int, kind: str) -> list[Artifact]:
    """Artifacts of ``kind`` made by the loop's succeeded runs, newest first."""
    query = (
        select(Artifact)
        .join(Run, Artifact.run_id == Run.id)
        .where(Artifact.kind == kind, Run.status == "succeeded", Run.loop_id == loop_id)
        .order_by(Artifact.id.desc())
    )
    return list(session.scalars(query))


def artifacts_of_kind(session: Session, kind: str) -> list[Artifact]:
    """Every artifact of ``kind`` from a succeeded run, in any loop, newest first: for a person to choose
    from (the campaign form), never for a stage to take by default."""
    query = (
        select(Artifact)
        .join(Run, Artifact.run_id == Run.id)
        .where(Artifact.kind == kind, Run.status == "succeeded")
        .order_by(Artifact.id.desc())
    )
    return list(session.scalars(query))
