"""Shared fixtures: stores (SQLite, and PostgreSQL when CLINALIGN_TEST_POSTGRES_URL names one), a
helper that runs one stage exactly as the CLI does, and one miniature run of the whole loop."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from clinalign import stages  # noqa: E402
from clinalign.ingest import BUNDLED_SCENARIOS  # noqa: E402
from clinalign.store import Store  # noqa: E402

PG_URL = os.environ.get("CLINALIGN_TEST_POSTGRES_URL")


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store.open(f"sqlite:///{tmp_path / 'test.db'}")


@pytest.fixture(scope="session")
def pg_server_url() -> str:
    if not PG_URL:
        pytest.skip("CLINALIGN_TEST_POSTGRES_URL is not set (.ci/run sets it)")
    return PG_URL


@pytest.fixture
def pg_store(pg_server_url: str):
    """A fresh PostgreSQL database per test, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"clinalign_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    store = Store.open(make_url(pg_server_url).set(database=name).render_as_string(hide_password=False))
    yield store
    store.engine.dispose()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_store(request, tmp_path: Path):
    """The same test against SQLite and against PostgreSQL."""
    if request.param == "sqlite":
        return Store.open(f"sqlite:///{tmp_path / 'test.db'}")
    return request.getfixturevalue("pg_store")


def run_stage(store: Store, data_dir: Path, stage: str, **overrides) -> dict:
    """Run one stage as the CLI does (``stages.run_stage``); its figures."""
    return stages.run_stage(stage, store, data_dir, overrides).metrics


def newest(session, kind: str):
    """The newest artifact of ``kind`` (test stores hold one loop)."""
    from clinalign.store import artifacts_of_kind

    return artifacts_of_kind(session, kind)[0]


def loop_evaluation(session):
    """The newest evaluation of the loop itself (``clinalign evaluate``), not of a benchmark suite."""
    from clinalign.audit import loop_evaluation as is_loop
    from clinalign.store import artifacts_of_kind

    return next(a for a in artifacts_of_kind(session, "eval_report") if is_loop(a))


def ingest_bundled(store: Store, data_dir: Path) -> dict:
    return run_stage(store, data_dir, "ingest", path=str(BUNDLED_SCENARIOS))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny Llama-architecture model with a tokenizer trained on the bundled cases (random weights)."""
    from tests.tiny_model import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def loop(tmp_path_factory, tiny_model) -> Path:
    """One miniature run of the whole loop (``clinalign demo`` on the tiny model), shared by the tests
    that check its outputs: about a minute on two cores."""
    from clinalign import demo
    from tests.tiny_model import TINY_LOOP

    workspace = tmp_path_factory.mktemp("loop") / "demo"
    demo.run(workspace, base=str(tiny_model), sizes=TINY_LOOP)
    return workspace


@pytest.fixture
def loop_copy(loop: Path, tmp_path: Path) -> tuple[Store, Path]:
    """A private copy of the miniature loop (its store, key and files), for tests that add to it."""
    import shutil

    target = tmp_path / "loop"
    shutil.copytree(loop, target)
    return Store.open(f"sqlite:///{target / 'clinalign.db'}"), target


@pytest.fixture(scope="session")
def loop_store(loop: Path) -> Store:
    return Store.open(f"sqlite:///{loop / 'clinalign.db'}")
