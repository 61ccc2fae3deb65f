"""FileStore flush benchmark: the cost of one durable write with 10, 100 and
1000 endpoints in the store.

Run on demand only (``make bench``, or ``pytest -s tests/bench/test_store_bench.py``).
Nothing here asserts a timing: the figures are printed and written to
bench/out/store.json. Each row times
put_endpoint of an existing endpoint (the state size stays N), which is the
encode of one record plus one whole-file flush. Two columns: with the real
fsyncs (what an attach pays, dominated by the disk under the state dir) and
with os.fsync stubbed out (the CPU part: encoding and writing the document).

Setup, not timed: the state file is written directly and loaded, so that
filling the store does not cost N flushes.

Environment knobs: NETPLUMB_STORE_BENCH_ROUNDS (default 50 writes per size).
"""

from __future__ import annotations

import ipaddress
import json
import os
import statistics
import time
from pathlib import Path

import pytest
from fixtures.benchio import figure, write
from netplumb.agent import store as store_module
from netplumb.agent.core.model import (
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    RouteSpec,
)
from netplumb.agent.store import SCHEMA_VERSION, FileStore, endpoint_to_json

SIZES = (10, 100, 1000)
ROUNDS = int(os.environ.get("NETPLUMB_STORE_BENCH_ROUNDS", "50"))


def endpoint(k: int) -> EndpointRecord:
    """A typical attach: one IPv4 and one IPv6 address, a default gateway."""
    h = 0x100 + k + 1
    eid = f"{k:016x}"
    return EndpointRecord(
        spec=EndpointSpec(
            bridge="br0",
            guest=GuestRef(GuestKind.NETNS, f"bench-{k}"),
            ifname="eth0",
            addresses=(
                ipaddress.ip_interface(f"198.18.{h >> 8}.{h & 0xFF}/16"),
                ipaddress.ip_interface(f"2001:db8::{h:x}/64"),
            ),
            gateways=(ipaddress.ip_address("198.18.0.1"),),
            routes=(RouteSpec(ipaddress.ip_network("198.18.150.0/24")),),
        ),
        id=eid,
        host_ifname=f"np{eid[:12]}",
        mac=f"02:00:00:00:{(k >> 8) & 0xFF:02x}:{k & 0xFF:02x}",
        mtu=1500,
        netns_id=(4, 4026532000 + k),
        netns_path=f"/run/netns/bench-{k}",
    )


def filled_store(state_dir: Path, n: int) -> FileStore:
    state_dir.mkdir(parents=True)
    doc = {
        "version": SCHEMA_VERSION,
        "agent_id": "benchagent",
        "bridges": [],
        "endpoints": [endpoint_to_json(endpoint(k)) for k in range(n)],
    }
    (state_dir / "state.json").write_text(json.dumps(doc, indent=1, sort_keys=True))
    s = FileStore(str(state_dir))
    assert len(s.endpoints()) == n
    return s


def p50_ms(s: FileStore, n: int) -> float:
    samples = []
    for i in range(ROUNDS):
        rec = endpoint(i % n)
        t0 = time.perf_counter()
        s.put_endpoint(rec)
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1000


def test_store_flush(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = []
    for n in SIZES:
        real = p50_ms(filled_store(tmp_path / f"real{n}", n), n)
        with monkeypatch.context() as m:
            m.setattr(store_module.os, "fsync", lambda fd: None)
            cpu = p50_ms(filled_store(tmp_path / f"cpu{n}", n), n)
        size = os.stat(tmp_path / f"real{n}" / "state.json").st_size
        rows.append((n, real, cpu, size))
    print()
    print(f"FileStore flush p50 over {ROUNDS} put_endpoint each (state dir: {tmp_path})")
    print(f"{'endpoints':>9}  {'p50 ms':>8}  {'no-fsync p50 ms':>15}  {'file bytes':>10}")
    for n, real, cpu, size in rows:
        print(f"{n:>9}  {real:>8.3f}  {cpu:>15.3f}  {size:>10}")
    figs = []
    for n, real, cpu, size in rows:
        figs.append(
            figure(
                f"flush_{n}_ms",
                f"state write at {n} endpoints: p50",
                real,
                "ms",
                note=f"{size} bytes",
            )
        )
        figs.append(
            figure(f"flush_{n}_cpu_ms", f"state write at {n} endpoints, no fsync: p50", cpu, "ms")
        )
    write("store", f"State file writes (put_endpoint, p50 of {ROUNDS})", figs, rounds=ROUNDS)
