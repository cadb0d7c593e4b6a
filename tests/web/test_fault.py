"""kill -9 during load: every acknowledged judgement survives, and no item goes past its overlap."""

from __future__ import annotations

import asyncio
import signal
import time

from bench.annotate_load import Tally, clinician, free_port, prepare, sign_in, start_server, stored
from clinalign.audit import verify_chain
from clinalign.store import Store


def test_a_killed_server_loses_no_acknowledged_judgement(tmp_path):
    url = f"sqlite:///{tmp_path / 'fault.db'}"
    campaign = prepare(url, tmp_path, clinicians=20, prompts=400, overlap=2)
    port = free_port()
    server = start_server(url, tmp_path, port)
    tally = Tally()
    restarted = {}

    async def scenario():
        base = f"http://127.0.0.1:{port}"
        clients = await asyncio.gather(*(sign_in(base, f"load{n:03d}") for n in range(20)))
        until = time.monotonic() + 8
        work = [
            asyncio.create_task(clinician(c, campaign, until, (0.02, 0.1), tally, n)) for n, c in enumerate(clients)
        ]
        await asyncio.sleep(3)
        before = len(tally.acked)
        server.send_signal(signal.SIGKILL)  # no shutdown, no flush: as a power cut to the process
        server.wait()
        restarted["server"] = await asyncio.to_thread(start_server, url, tmp_path, port)
        restarted["acked_before_kill"] = before
        await asyncio.gather(*work)
        for c in clients:
            await c.aclose()

    try:
        asyncio.run(scenario())
    finally:  # whatever failed, no server outlives the test
        for process in (server, restarted.get("server")):
            if process is not None and process.poll() is None:
                process.terminate()
                process.wait(timeout=30)
    judged, over = stored(url, campaign)
    assert restarted["acked_before_kill"] > 20 and len(tally.acked) > restarted["acked_before_kill"]  # work went on
    assert tally.acked <= judged  # every acknowledged judgement is in the database
    assert over == 0
    chain = verify_chain(Store.open(url, migrate=False))
    # The killed server's last events were sealed by its successor, whose own shutdown sealed the rest.
    assert chain.ok and chain.events > len(tally.acked) and chain.pending == 0
