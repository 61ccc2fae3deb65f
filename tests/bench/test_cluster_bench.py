"""Cluster mode at 20 hosts (a lab with Linux overlays, no OVS, etcd in the
fabric namespace): how long from a new agent's start until every other host
can ping a guest on it, and how many attaches per second the cluster
allocates addresses for.

Run on demand (``make bench``); figures printed and written to
bench/out/cluster.json; nothing asserts a timing. Target (issue 6): at most
5 s to a full mesh at 20 hosts.

Knobs: NETPLUMB_BENCH_CLUSTER_HOSTS (default 20), NETPLUMB_BENCH_CLUSTER_PER_HOST
(attaches per host for the throughput run, default 10).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import signal
import subprocess
import threading
import time
from pathlib import Path

from fixtures.etcd import require_etcd
from fixtures.host import run, unique
from fixtures.lab import lab_up, require_lab

HOSTS = int(os.environ.get("NETPLUMB_BENCH_CLUSTER_HOSTS", "20"))
PER_HOST = int(os.environ.get("NETPLUMB_BENCH_CLUSTER_PER_HOST", "10"))
OUT = Path(__file__).resolve().parents[2] / "bench" / "out" / "cluster.json"
TARGET_MESH_S = 5.0


def test_join_time_and_allocation_throughput() -> None:
    require_lab(ovs=False)
    require_etcd()
    made: list[str] = []
    report: dict[str, object] = {}
    with lab_up(HOSTS, ovs=False, cluster=True, cluster_ttl=3) as lab:
        try:
            setup_s = lab.timings.get("up", 0.0)
            res = lab.netplumb(
                "h1", "network", "create", "bench", "--subnet", "198.19.0.0/16", "--vni", "4242"
            )
            assert res.returncode == 0, res.stderr
            last = lab.hosts[-1].name
            others = [h.name for h in lab.hosts[:-1]]

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

            sources = [guest(h) for h in others]
            # The new host: its agent stops, the others drop it, then it starts.
            lab.stop_agent(last, signal.SIGKILL)
            time.sleep(4)  # its registration expires (TTL 3 s)
            t0 = time.monotonic()
            lab.start_agent(last)
            ready = time.monotonic() - t0
            _, ip_new = guest(last)
            attached = time.monotonic() - t0

            def reaches(src: str) -> bool:
                r = subprocess.run(
                    ["ip", "netns", "exec", src, "ping", "-c1", "-W1", ip_new], capture_output=True
                )
                return r.returncode == 0

            pending = {ns for ns, _ in sources}
            while pending:
                pending = {ns for ns in pending if not reaches(ns)}
                assert time.monotonic() - t0 < 60, f"{len(pending)} hosts cannot reach the new one"
            mesh = time.monotonic() - t0

            # Allocation throughput: PER_HOST attaches on every host at once.
            jobs = [(h.name, unique(f"{lab.prefix}t")) for h in lab.hosts for _ in range(PER_HOST)]
            for _, ns in jobs:
                run("ip", "netns", "add", ns)
                made.append(ns)
            errors: list[str] = []
            got: list[str] = []
            lock = threading.Lock()

            def attach(host: str, ns: str) -> None:
                try:
                    with lab.client(host, timeout=120) as c:
                        ep = c.attach("bench", f"netns:{ns}")
                    with lock:
                        got.append(ep.addresses[0])
                except Exception as e:
                    with lock:
                        errors.append(f"{host}: {e}")

            threads = [threading.Thread(target=attach, args=j) for j in jobs]
            t1 = time.monotonic()
            for t in threads:
                t.start()
            for t in threads:
                t.join(300)
            alloc_s = time.monotonic() - t1
            assert not errors, errors[:3]
            assert len(set(got)) == len(jobs)
            report = {
                "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
                "hosts": HOSTS,
                "lab_up_s": round(setup_s, 2),
                "new_agent_ready_s": round(ready, 2),
                "new_agent_ready_and_guest_attached_s": round(attached, 2),
                "new_agent_start_to_full_mesh_s": round(mesh, 2),
                "target_full_mesh_s": TARGET_MESH_S,
                "concurrent_attaches": len(jobs),
                "allocation_s": round(alloc_s, 2),
                "attaches_per_s": round(len(jobs) / alloc_s, 1),
            }
        finally:
            for ns in made:
                subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"cluster bench, {HOSTS} hosts (Linux overlays, etcd in the fabric namespace)")
    print(f"  lab up:                                 {report['lab_up_s']} s")
    print(f"  new agent: ready after                  {report['new_agent_ready_s']} s")
    print(
        f"  ... and its guest attached after        {report['new_agent_ready_and_guest_attached_s']} s"
    )
    mesh_s = float(report["new_agent_start_to_full_mesh_s"])  # type: ignore[arg-type]
    verdict = "meets" if mesh_s <= TARGET_MESH_S else "MISSES"
    print(
        f"  ... every other host pings it after     {mesh_s} s ({verdict} the {TARGET_MESH_S} s target)"
    )
    print(
        f"  allocation: {report['concurrent_attaches']} concurrent attaches in "
        f"{report['allocation_s']} s = {report['attaches_per_s']}/s cluster-wide"
    )
    print(f"  written to {OUT}")
