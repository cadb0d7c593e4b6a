"""Load on the clinician web app: many clinicians labelling at once, against SQLite and PostgreSQL.

Starts ``clinalign web`` on 127.0.0.1 as its own process, signs in N simulated clinicians (before the
clock starts: Argon2 is slow by design), then for a bounded time each one loops: ask for the next
item, think, submit. Prints p50/p95/p99 of both (and of the server's own time per request, from its
Server-Timing header), errors, and judgements acknowledged (a 303 after submit) against judgements
found in the database afterwards, and whether any item went past its overlap.

    .venv/bin/python bench/annotate_load.py                     # both databases, 200 clients, 45 s each
    .venv/bin/python bench/annotate_load.py --db sqlite --clients 50 --seconds 20

"next item" is the page a clinician waits for after "save and next" (the next item itself).
The think time (default: uniform 3-9 s between seeing an item and submitting it) is far shorter than
a clinician's (reading two answers and rating six axes on each takes a minute or more), so 200
clients here load the server like a thousand or more real ones. ``--think-min 0.5 --think-max 1.5``
is a stress run that finds where the server saturates.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinalign.schemas import AXES  # noqa: E402
from clinalign.stages import run_stage  # noqa: E402
from clinalign.store import Store  # noqa: E402
from tests.web.seed import PASSWORD, seed  # noqa: E402

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
ITEM = re.compile(r'action="/items/(\d+)"')


@dataclass
class Tally:
    next_ms: list[float] = field(default_factory=list)
    # the server's own time (its Server-Timing header) for the same requests: the rest is queueing and network
    next_app_ms: list[float] = field(default_factory=list)
    submit_app_ms: list[float] = field(default_factory=list)
    submit_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    acked: set[int] = field(default_factory=set)  # assignment ids whose submission was acknowledged


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(url: str, data_dir: Path, clinicians: int, prompts: int, overlap: int) -> int:
    """A store with ``prompts`` items (pairs), a campaign over them, and loadNNN accounts."""
    store = Store.open(url)
    candidates = seed(store, data_dir, prompts=prompts, clinicians=clinicians)
    settings = {"name": "load", "candidates": candidates, "overlap": overlap}
    campaign = run_stage("annotate.campaign", store, data_dir, settings, actor="bench").metrics["campaign"]
    store.engine.dispose()
    return campaign


def start_server(url: str, data_dir: Path, port: int, workers: int = 1) -> subprocess.Popen:
    env = {**os.environ, "CLINALIGN_DATABASE_URL": url, "CLINALIGN_DATA_DIR": str(data_dir)}
    binary = Path(sys.executable).with_name("clinalign")
    server = subprocess.Popen(
        [str(binary), "web", "--port", str(port), "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise RuntimeError("the web server did not start: " + server.stderr.read().decode()[-2000:])


async def sign_in(base: str, username: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=30, follow_redirects=False)
    page = await client.get("/login")
    token = CSRF.search(page.text).group(1)
    response = await client.post("/login", data={"username": username, "password": PASSWORD, "csrf": token})
    if response.status_code != 303:
        raise RuntimeError(f"sign-in failed for {username}: {response.status_code}")
    return client


def app_time(response: httpx.Response) -> float:
    return float(response.headers.get("server-timing", "app;dur=nan").split("dur=")[1])


def vote(page: str, rng: random.Random) -> dict:
    form = {"csrf": CSRF.search(page).group(1), "choice": rng.choice(["A", "B", "A", "tie"]), "rationale": "load test"}
    for side in "ab":
        for axis in AXES:
            form[f"{side}_{axis}"] = str(rng.randint(2, 5))
    return form


async def clinician(client: httpx.AsyncClient, campaign: int, until: float, think: tuple, tally: Tally, seed: int):
    rng = random.Random(seed)
    await asyncio.sleep(rng.uniform(0, think[1]))  # arrivals spread out, as people's are
    while time.monotonic() < until:
        try:
            started = time.perf_counter()
            page = await client.get(f"/work/{campaign}/next")
            tally.next_ms.append(1000 * (time.perf_counter() - started))
            tally.next_app_ms.append(app_time(page))
            if page.status_code == 200 and "Nothing left" in page.text:
                return
            found = ITEM.search(page.text)
            if page.status_code != 200 or not found:
                tally.errors.append(f"next {page.status_code}")
                return
            await asyncio.sleep(rng.uniform(*think))
            started = time.perf_counter()
            sent = await client.post(f"/items/{found.group(1)}", data=vote(page.text, rng))
            tally.submit_ms.append(1000 * (time.perf_counter() - started))
            tally.submit_app_ms.append(app_time(sent))
            if sent.status_code == 303:
                tally.acked.add(int(found.group(1)))
            else:
                tally.errors.append(f"submit {sent.status_code}")
        except httpx.HTTPError as err:
            tally.errors.append(type(err).__name__)
            await asyncio.sleep(0.5)


async def load(port: int, campaign: int, clients: int, seconds: float, think: tuple, tally: Tally, on_start) -> float:
    base = f"http://127.0.0.1:{port}"
    sessions = []
    for start in range(0, clients, 20):  # sign in 20 at a time, before the clock starts
        sessions += await asyncio.gather(
            *(sign_in(base, f"load{n:03d}") for n in range(start, min(clients, start + 20)))
        )
    on_start()
    began = time.monotonic()
    await asyncio.gather(*(clinician(c, campaign, began + seconds, think, tally, n) for n, c in enumerate(sessions)))
    elapsed = time.monotonic() - began
    for client in sessions:
        await client.aclose()
    return elapsed


def stored(url: str, campaign: int) -> tuple[set[int], int]:
    """(assignment ids holding a judgement, items past their overlap)."""
    from sqlalchemy import func, select

    from clinalign.store import Assignment, Judgement, Task

    store = Store.open(url, migrate=False)
    with store.session() as session:
        judged = set(session.scalars(select(Assignment.id).where(Assignment.judgement_id.is_not(None))))
        over = session.scalar(
            select(func.count()).select_from(
                select(Task.id)
                .join(Judgement, Judgement.task_id == Task.id)
                .where(Task.campaign_id == campaign)
                .group_by(Task.id, Task.overlap)
                .having(func.count(Judgement.id) > Task.overlap)
                .subquery()
            )
        )
    store.engine.dispose()
    return judged, over


def cpu_seconds(picks) -> float:
    """User + system CPU time of the live processes that ``picks(pid, parent pid, name)`` (Linux /proc)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except OSError:
            continue
        fields = tail.split()
        if picks(stat.parent.name, fields[1], head.split("(", 1)[1]):
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def server_and_database_cpu(server: int, postgres: bool) -> tuple[float, float]:
    """(the web server and its workers, PostgreSQL's processes; SQLite runs inside the server)."""
    return (
        cpu_seconds(lambda pid, parent, name: str(server) in (pid, parent)),
        cpu_seconds(lambda pid, parent, name: name == "postgres") if postgres else 0.0,
    )


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else float("nan")


@contextmanager
def fresh_postgres(server_url: str) -> Iterator[str]:
    """A new, empty database on the server for one run, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"clinalign_bench_{os.getpid()}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench(label: str, url: str, args) -> dict:
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        if url == "sqlite":
            url = f"sqlite:///{data_dir / 'bench.db'}"
        campaign = prepare(url, data_dir, args.clients, args.prompts, args.overlap)
        port = free_port()
        server = start_server(url, data_dir, port, args.workers)
        tally = Tally()
        cpu = {}
        try:
            elapsed = asyncio.run(
                load(
                    port,
                    campaign,
                    args.clients,
                    args.seconds,
                    (args.think_min, args.think_max),
                    tally,
                    on_start=lambda: cpu.update(
                        start=server_and_database_cpu(server.pid, url.startswith("postgresql")),
                        client=time.process_time(),
                    ),
                )
            )
            server_cpu, database_cpu = (  # the load only, not the sign-ins
                end - start
                for end, start in zip(
                    server_and_database_cpu(server.pid, url.startswith("postgresql")), cpu["start"], strict=True
                )
            )
            client_cpu = time.process_time() - cpu["client"]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
        judged, over = stored(url, campaign)
    lost = tally.acked - judged
    requests = len(tally.next_ms) + len(tally.submit_ms)
    print(
        f"\n{label}: {args.clients} clinicians for {elapsed:.0f} s, think {args.think_min}-{args.think_max} s, "
        f"{args.workers} server processes"
    )
    for name, values in (
        ("next item", tally.next_ms),
        ("  in app", tally.next_app_ms),
        ("submit", tally.submit_ms),
        ("  in app", tally.submit_app_ms),
    ):
        print(
            f"  {name:<10} n={len(values):>6}  p50 {percentile(values, 50):6.1f} ms"
            f"  p95 {percentile(values, 95):6.1f} ms"
            f"  p99 {percentile(values, 99):6.1f} ms"
        )
    print(
        f"  server CPU {1000 * server_cpu / max(requests, 1):.1f} ms per request"
        f" ({server_cpu / elapsed:.0%} of a core in all); the simulated clients used"
        f" {client_cpu / elapsed:.0%} of a core"
        + (f", PostgreSQL {database_cpu / elapsed:.0%} of a core" if database_cpu else "")
    )
    print(f"  requests/s {requests / elapsed:.0f}  errors {len(tally.errors)} {sorted(set(tally.errors))[:5]}")
    print(
        f"  judgements acknowledged {len(tally.acked)}, stored {len(judged & tally.acked)}, lost {len(lost)}; "
        f"items past their overlap: {over}"
    )
    return {"errors": len(tally.errors), "lost": len(lost), "over": over}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=45.0, help="load duration (at most 60)")
    parser.add_argument("--prompts", type=int, default=2000, help="items in the campaign")
    parser.add_argument("--overlap", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="server processes (clinalign web --workers)")
    parser.add_argument("--think-min", type=float, default=3.0, help="seconds between showing and submitting")
    parser.add_argument("--think-max", type=float, default=9.0)
    parser.add_argument(
        "--postgres",
        default=os.environ.get("CLINALIGN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
    )
    args = parser.parse_args()
    args.seconds = min(args.seconds, 60.0)
    if args.db in ("sqlite", "both"):
        bench("SQLite", "sqlite", args)
    if args.db in ("postgres", "both"):
        with fresh_postgres(args.postgres) as url:
            bench("PostgreSQL", url, args)


if __name__ == "__main__":
    main()
