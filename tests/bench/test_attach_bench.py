"""Attach benchmark: N attaches over one persistent gRPC channel, then N
attaches through the real ``netplumb`` CLI (a subprocess per attach).

Run on demand only (``make bench``). Nothing here asserts a timing: the
figures are printed as a table, compared with the targets, and written to
bench/out/attach.json. Only functional failures (an attach that does not
succeed) fail the test.

Setup, not timed: a private netplumbd, one bridge with 198.18.0.1/16 and
2001:db8::1/64, and 2*N named namespaces, so that every attach goes to a
namespace of its own. Each attach gives the guest one IPv4 address with the
bridge as default gateway and one IPv6 address. The gRPC endpoints are
detached (timed) before the CLI run, so both runs grow the bridge from 0 to N
ports. Everything is removed at the end, also on failure.

Environment knobs (for quick iterations): NETPLUMB_BENCH_N (default 200).
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.benchio import OUT_DIR, figure, write
from fixtures.host import NETPLUMB, Daemon, Namespaces, delete_links, link, require_root, unique

N = int(os.environ.get("NETPLUMB_BENCH_N", "200"))
WINDOW = 50  # first/last window for the growth ratio
REPO = Path(__file__).resolve().parents[2]
OUT = OUT_DIR / "attach.json"

BRIDGE_V4 = "198.18.0.1/16"
BRIDGE_V6 = "2001:db8::1/64"
GATEWAY_V4 = "198.18.0.1"

# Targets on the reference machine (from the issue). Reported, never asserted.
TARGET_GRPC_P50_MS = 15.0
TARGET_CLI_P50_MS = 90.0
TARGET_GROWTH = 1.3


def guest_addresses(k: int) -> tuple[str, str]:
    """The k-th guest's IPv4 (198.18.1.1 upwards) and IPv6 addresses."""
    h = 0x100 + k + 1
    return f"198.18.{h >> 8}.{h & 0xFF}/16", f"2001:db8::{h:x}/64"


# ------------------------------------------------------------------ stats


def percentile(samples: list[float], p: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    xs = sorted(samples)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(samples_s: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in samples_s]
    w = min(WINDOW, len(ms) // 2) or 1
    first, last = statistics.fmean(ms[:w]), statistics.fmean(ms[-w:])
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
        "mean_ms": statistics.fmean(ms),
        "window": w,
        "mean_first_ms": first,
        "mean_last_ms": last,
        "growth": last / first if first else math.nan,
        "samples_ms": [round(x, 3) for x in ms],
    }


COLUMNS = (
    ("count", "count", "{:d}"),
    ("p50", "p50_ms", "{:.1f}"),
    ("p90", "p90_ms", "{:.1f}"),
    ("p99", "p99_ms", "{:.1f}"),
    ("max", "max_ms", "{:.1f}"),
    ("first{w}", "mean_first_ms", "{:.1f}"),
    ("last{w}", "mean_last_ms", "{:.1f}"),
    ("ratio", "growth", "{:.2f}"),
)


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    w = rows[0][1]["window"] if rows else WINDOW
    head = ["run (ms)"] + [c[0].format(w=w) for c in COLUMNS]
    body = [[name] + [fmt.format(s[key]) for _, key, fmt in COLUMNS] for name, s in rows]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells)
        )

    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, body)])


def verdicts(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []

    def check(what: str, run: str, key: str, target: float) -> None:
        if run in runs:
            value = runs[run][key]
            out.append(
                {
                    "target": what,
                    "run": run,
                    "value": value,
                    "limit": target,
                    "met": value <= target,
                }
            )

    check(
        f"server-side attach p50 <= {TARGET_GRPC_P50_MS:g} ms",
        "grpc_attach",
        "p50_ms",
        TARGET_GRPC_P50_MS,
    )
    check(
        f"CLI end-to-end attach p50 <= {TARGET_CLI_P50_MS:g} ms",
        "cli_attach",
        "p50_ms",
        TARGET_CLI_P50_MS,
    )
    check(
        f"gRPC attach mean last/first {runs.get('grpc_attach', {}).get('window')} <= {TARGET_GROWTH:g}",
        "grpc_attach",
        "growth",
        TARGET_GROWTH,
    )
    check(
        f"CLI attach mean last/first {runs.get('cli_attach', {}).get('window')} <= {TARGET_GROWTH:g}",
        "cli_attach",
        "growth",
        TARGET_GROWTH,
    )
    return out


def figures(runs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: p50 and p99 of every run, the growth ratios, with
    the targets where the issue sets them."""
    out = []
    targets = {"grpc_attach": TARGET_GRPC_P50_MS, "cli_attach": TARGET_CLI_P50_MS}
    for key, what in (
        ("grpc_attach", "attach, gRPC"),
        ("grpc_detach", "detach, gRPC"),
        ("cli_attach", "attach, CLI end to end"),
    ):
        if key not in runs:
            continue
        r = runs[key]
        out.append(
            figure(f"{key}_p50_ms", f"{what}: p50", r["p50_ms"], "ms", target=targets.get(key))
        )
        out.append(figure(f"{key}_p99_ms", f"{what}: p99", r["p99_ms"], "ms"))
        if key != "grpc_detach":
            out.append(
                figure(
                    f"{key}_growth",
                    f"{what}: mean of the last {r['window']} / first {r['window']}",
                    r["growth"],
                    "x",
                    target=TARGET_GROWTH,
                    note=f"{r['mean_first_ms']:.1f} ms -> {r['mean_last_ms']:.1f} ms",
                )
            )
    return out


LABELS = {
    "grpc_attach": "attach, gRPC (Attach RPC seen by the client, persistent channel)",
    "grpc_detach": "detach, gRPC (Detach RPC seen by the client, persistent channel)",
    "cli_attach": "attach, CLI end to end (subprocess of netplumb)",
}


# --------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    require_root()
    d = Daemon()
    try:
        d.start()
        yield d
    finally:
        rc = d.stop()
        if rc != 0:
            print(f"\nnetplumbd exited with {rc}; its log:\n{d.log()[-4000:]}")
        shutil.rmtree(d.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def namespaces() -> Iterator[list[str]]:
    require_root()
    ns = Namespaces()
    try:
        t0 = time.perf_counter()
        for _ in range(2 * N):
            ns.new("npbench")
        print(
            f"\ncreated {len(ns.names)} namespaces in {time.perf_counter() - t0:.1f} s (not timed)"
        )
        yield list(ns.names)
    finally:
        ns.cleanup()


@pytest.fixture(scope="module")
def client(daemon: Daemon) -> Iterator[Any]:
    c = daemon.client()
    try:
        c.status()  # the channel is connected before anything is timed
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def bridge(daemon: Daemon, client: Any) -> Iterator[str]:
    name = unique("npbb")
    try:
        client.create_bridge(name, addresses=[BRIDGE_V4, BRIDGE_V6])
        yield name
    finally:
        try:
            for ep in client.list_endpoints(bridge=name):
                client.detach(ep.guest, ep.ifname)
            client.delete_bridge(name)
        except Exception as e:  # cleanup goes on; deleting the namespaces removes the veths
            print(f"\ncleanup through netplumbd failed ({e}); deleting the bridge directly")
        delete_links([name])  # no-op when the daemon deleted it


@pytest.fixture(scope="module")
def report() -> Iterator[dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    yield runs
    if not runs:
        return
    doc = {
        "config": {
            "attaches_per_run": N,
            "window": WINDOW,
            "bridge_addresses": [BRIDGE_V4, BRIDGE_V6],
            "guest": "netns:NAME, one IPv4 /16 with the bridge as gateway, one IPv6 /64",
        },
        "labels": {k: v for k, v in LABELS.items() if k in runs},
        "runs": runs,
        "targets": verdicts(runs),
    }
    write(
        "attach",
        f"Attach and detach latency, {N} endpoints per run",
        figures(runs),
        {f"{k}_ms": {"label": LABELS[k], "y": runs[k]["samples_ms"]} for k in LABELS if k in runs},
        **doc,
    )
    print("\n\n=== netplumb attach benchmark ===")
    for key, label in LABELS.items():
        if key in runs:
            print(f"  {key}: {label}")
    print()
    print(table([(k, runs[k]) for k in LABELS if k in runs]))
    print()
    for v in doc["targets"]:
        mark = "MET   " if v["met"] else "MISSED"
        print(f"  {mark} {v['target']}: {v['value']:.2f}")
    print(f"\nfigures written to {OUT.relative_to(REPO)}")


# ----------------------------------------------------------------- timing


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


# Fixture order matters for teardown, which runs in reverse: the report is
# printed last, and the namespaces are deleted after the daemon has detached
# everything and deleted the bridge.


def test_grpc_attach_and_detach(
    report: dict[str, Any], namespaces: list[str], client: Any, bridge: str
) -> None:
    guests = namespaces[:N]
    attach_s: list[float] = []
    for k, ns in enumerate(guests):
        v4, v6 = guest_addresses(k)
        dt, ep = timed(
            lambda ns=ns, v4=v4, v6=v6: client.attach(
                bridge, f"netns:{ns}", addresses=[v4, v6], gateways=[GATEWAY_V4]
            )
        )
        attach_s.append(dt)
        if k in (0, len(guests) - 1):  # spot checks, not timed
            host = link(ep.host_ifname)
            assert host is not None and host["master"] == bridge
            assert link("eth1", ns) is not None
    assert len(client.list_endpoints(bridge=bridge)) == len(guests)
    report["grpc_attach"] = summarize(attach_s)

    detach_s: list[float] = []
    for ns in guests:
        dt, detached = timed(lambda ns=ns: client.detach(f"netns:{ns}"))
        assert len(detached) == 1
        detach_s.append(dt)
    assert client.list_endpoints(bridge=bridge) == []
    report["grpc_detach"] = summarize(detach_s)
    print(
        "\n"
        + table([("grpc_attach", report["grpc_attach"]), ("grpc_detach", report["grpc_detach"])])
    )


def test_cli_attach(
    report: dict[str, Any], namespaces: list[str], daemon: Daemon, bridge: str
) -> None:
    env = dict(os.environ, NETPLUMB_SOCKET=daemon.socket)
    guests = namespaces[N : 2 * N]
    attach_s: list[float] = []
    for k, ns in enumerate(guests, start=N):
        v4, v6 = guest_addresses(k)
        argv = [NETPLUMB, "attach", bridge, f"netns:{ns}", f"{v4}@{GATEWAY_V4}", v6]
        dt, res = timed(
            lambda argv=argv: subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=60
            )
        )
        assert res.returncode == 0, f"{' '.join(argv)} -> {res.returncode}: {res.stderr}"
        attach_s.append(dt)
    report["cli_attach"] = summarize(attach_s)
    print("\n" + table([("cli_attach", report["cli_attach"])]))
