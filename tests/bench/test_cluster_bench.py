"""Cluster mode from 2 to 20 hosts (a lab with Linux overlays, no OVS, etcd
in the fabric namespace): how long from a new agent's start until every
other host can ping a guest on it, as the cluster grows; and how many
attaches per second the cluster allocates addresses for.

Allocation: PER_HOST attaches on every host at once (a thread and a client
each), timed until all have their addresses; then they are detached. An
attach answered UNAVAILABLE (etcd did not answer within the agent's 3 s) is
tried again, up to RETRIES times, and counted.

Growth: every host has a guest on the network "bench"; every agent but
h1's is killed and its registration left to expire (TTL 3 s). Then, for
n = 2..HOSTS, 2 s after the last one, host n's agent starts (timed from
just before the exec): when it serves ("ready"), a new guest is attached on
it ("attached"), and every host 1..n-1 pings that guest from its own guest
(one ``ping -i 0.05 -w 30 -c 1`` each, all at once) until every one has had
a reply ("full mesh").

Run on demand (``make bench``); figures printed and written to
bench/out/cluster.json; nothing asserts a timing. Target (issue 6): at most
5 s to a full mesh at 20 hosts.

Knobs: NETPLUMB_BENCH_CLUSTER_HOSTS (default 20), NETPLUMB_BENCH_CLUSTER_PER_HOST
(attaches per host for the throughput run, default 10).
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
from typing import Any

from fixtures.benchio import figure, print_figures, write
from fixtures.etcd import require_etcd
from fixtures.host import run, unique
from fixtures.lab import lab_up, require_lab
from netplumb.cli.client import NetplumbError
from netplumb.cli.codes import Code

HOSTS = int(os.environ.get("NETPLUMB_BENCH_CLUSTER_HOSTS", "20"))
PER_HOST = int(os.environ.get("NETPLUMB_BENCH_CLUSTER_PER_HOST", "10"))
TTL = 3  # the agents' registration TTL (s)
RETRIES = 3  # per attach, after UNAVAILABLE
SETTLE = 2.0  # s between two hosts joining
TARGET_MESH_S = 5.0


def test_join_time_and_allocation_throughput() -> None:
    require_lab(ovs=False)
    require_etcd()
    made: list[str] = []
    steps: list[dict[str, float]] = []
    report: dict[str, Any] = {}
    with lab_up(HOSTS, ovs=False, cluster=True, cluster_ttl=TTL) as lab:
        try:
            setup_s = lab.timings.get("up", 0.0)
            res = lab.netplumb(
                "h1", "network", "create", "bench", "--subnet", "198.19.0.0/16", "--vni", "4242"
            )
            assert res.returncode == 0, res.stderr

            def guest(host: str) -> tuple[str, str]:
                ns = unique(f"{lab.prefix}b")
                run("ip", "netns", "add", ns)
                run("ip", "-n", ns, "link", "set", "lo", "up")
                made.append(ns)
                deadline = time.monotonic() + 30
                while True:
                    r = lab.netplumb(host, "--json", "attach", "bench", f"netns:{ns}")
                    if r.returncode == 0:
                        return ns, json.loads(r.stdout)["addresses"][0].split("/")[0]
                    assert time.monotonic() < deadline, f"{host}: {r.stderr}"
                    time.sleep(0.05)  # the network's bridge is not built yet

            sources = [guest(h.name)[0] for h in lab.hosts]

            # Allocation throughput: PER_HOST attaches on every host at once,
            # then detached (their addresses released) before the growth run.
            jobs = [(h.name, unique(f"{lab.prefix}t")) for h in lab.hosts for _ in range(PER_HOST)]
            for _, ns in jobs:
                run("ip", "netns", "add", ns)
                made.append(ns)
            t1 = time.monotonic()
            retried: list[str] = []

            def attach(c: Any, ns: str) -> Any:
                # UNAVAILABLE (etcd did not answer in time) says "try again":
                # a client would, so do we, and count it.
                for _ in range(RETRIES):
                    try:
                        return c.attach("bench", f"netns:{ns}")
                    except NetplumbError as e:
                        if e.code != Code.UNAVAILABLE:
                            raise
                        retried.append(f"{ns}: {e.message}")
                return c.attach("bench", f"netns:{ns}")

            got = concurrently(lab, jobs, attach)
            alloc_s = time.monotonic() - t1
            if retried:
                print(f"  {len(retried)} attaches retried after UNAVAILABLE, e.g. {retried[0]}")
            assert len({ep.addresses[0] for ep in got}) == len(jobs), "an address given twice"
            concurrently(lab, jobs, lambda c, ns: c.detach(f"netns:{ns}"))

            # Every agent but h1's stops; the others drop them when their
            # registrations expire. Then they come back one by one.
            for h in lab.hosts[1:]:
                lab.stop_agent(h.name, signal.SIGKILL)
            time.sleep(TTL + 1)
            for n in range(2, HOSTS + 1):
                new = lab.hosts[n - 1].name
                time.sleep(SETTLE)  # the others are done with the last one's arrival
                t0 = time.monotonic()
                lab.start_agent(new)
                ready = time.monotonic() - t0
                _, ip_new = guest(new)
                attached = time.monotonic() - t0
                mesh = reach_all(sources[: n - 1], ip_new) - t0
                steps.append({"hosts": n, "ready_s": ready, "attached_s": attached, "mesh_s": mesh})
                print(
                    f"  {n:2d} hosts: ready {ready:.2f} s, guest attached {attached:.2f} s, "
                    f"full mesh {mesh:.2f} s"
                )
            last = steps[-1]
            report = {
                "hosts": HOSTS,
                "lab_up_s": round(setup_s, 2),
                "new_agent_ready_s": round(last["ready_s"], 2),
                "new_agent_ready_and_guest_attached_s": round(last["attached_s"], 2),
                "new_agent_start_to_full_mesh_s": round(last["mesh_s"], 2),
                "target_full_mesh_s": TARGET_MESH_S,
                "steps": [{k: round(v, 3) for k, v in s.items()} for s in steps],
                "concurrent_attaches": len(jobs),
                "allocation_s": round(alloc_s, 2),
                "attaches_per_s": round(len(jobs) / alloc_s, 1),
                "attaches_retried": len(retried),
                "retried": retried[:20],
            }
        finally:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    mesh_all = [s["mesh_s"] for s in steps]
    figs = [
        figure(
            "mesh_at_n_s",
            f"cluster of {HOSTS}: new agent's start to full mesh",
            report["new_agent_start_to_full_mesh_s"],
            "s",
            target=TARGET_MESH_S,
            note=f"ready {report['new_agent_ready_s']} s, "
            f"its guest attached {report['new_agent_ready_and_guest_attached_s']} s",
        ),
        figure(
            "mesh_median_s",
            f"start to full mesh, median over 2..{HOSTS} hosts",
            statistics.median(mesh_all),
            "s",
        ),
        figure(
            "mesh_max_s", f"start to full mesh, worst over 2..{HOSTS} hosts", max(mesh_all), "s"
        ),
        figure(
            "lab_up_s", f"lab of {HOSTS} hosts up (agents serving, cluster joined)", setup_s, "s"
        ),
        figure(
            "attaches_per_s",
            f"cluster-wide allocation: {report['concurrent_attaches']} concurrent attaches",
            report["attaches_per_s"],
            "attaches/s",
            better="higher",
            note=f"{report['allocation_s']} s in all",
        ),
        figure(
            "attaches_retried",
            "of those, attaches retried after UNAVAILABLE (etcd timed out)",
            report["attaches_retried"],
            "attaches",
            note="a client retries UNAVAILABLE; counted, not hidden",
        ),
    ]
    series = {
        "join": {
            "x_label": "hosts in the cluster (the new one included)",
            "hosts": [s["hosts"] for s in steps],
            "ready_s": [round(s["ready_s"], 3) for s in steps],
            "attached_s": [round(s["attached_s"], 3) for s in steps],
            "mesh_s": [round(s["mesh_s"], 3) for s in steps],
        }
    }
    path = write("cluster", f"Cluster mode, 2 to {HOSTS} hosts", figs, series, **report)
    print_figures(f"cluster bench, 2..{HOSTS} hosts (Linux overlays, etcd)", figs)
    print(f"  written to {path}")


def concurrently(lab: Any, jobs: list[tuple[str, str]], call: Any) -> list[Any]:
    """``call(client, netns)`` for every (host, netns) job, each in its own
    thread with its own client, all at once; any failure fails the test."""
    errors: list[str] = []
    results: list[Any] = []
    lock = threading.Lock()

    def one(host: str, ns: str) -> None:
        try:
            with lab.client(host, timeout=120) as c:
                r = call(c, ns)
            with lock:
                results.append(r)
        except Exception as e:
            with lock:
                errors.append(f"{host}: {e}")

    threads = [threading.Thread(target=one, args=j) for j in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, f"{len(errors)} of {len(jobs)} calls failed: {errors[:3]}"
    return results


def reach_all(sources: list[str], address: str, timeout: float = 30) -> float:
    """Ping ``address`` from every source namespace at once, each until its
    first reply; the monotonic time when the last one had it."""
    ping = ["ping", "-n", "-q", "-c", "1", "-i", "0.05", "-w", f"{timeout:g}", address]
    procs = {
        ns: subprocess.Popen(
            ["ip", "netns", "exec", ns, *ping],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for ns in sources
    }
    last = time.monotonic()
    try:
        while procs:
            for ns, p in list(procs.items()):
                rc = p.poll()
                if rc is None:
                    continue
                assert rc == 0, f"{ns} got no reply from {address} within {timeout:g} s"
                last = time.monotonic()
                del procs[ns]
            time.sleep(0.005)
    finally:
        for p in procs.values():
            p.kill()
            p.wait()
    return last
