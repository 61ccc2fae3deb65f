"""Attach latency against ovs-docker: `netplumb attach`, the `pipework`
drop-in and Debian's `ovs-docker add-port`, all three putting identical
`--net none` containers on the same OVS bridge, alternating in one run
(round i runs the three in a rotated order, so drift and caches hit all
three alike).

Run on demand only (``make bench``). Nothing asserts a timing: medians and
the ratios to ovs-docker's median are printed and written to
bench/out/ovs_docker.json; only a failed attach fails the test.

Setup, not timed: a one-host lab (its own OVS, userspace datapath, and
netplumbd in a namespace), one OVS bridge, 3*N containers. Each command is
timed as a whole process, run inside the lab host's namespace the same way
for all three. Everything is removed at the end, also on failure.

Knob: NETPLUMB_BENCH_OVSDOCKER_N (default 30 attaches per tool).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time

import pytest
from fixtures.benchio import OUT_DIR, figure, percentile, write
from fixtures.docker import Containers, ensure_image
from fixtures.host import unique
from fixtures.lab import lab_up, require_lab

N = int(os.environ.get("NETPLUMB_BENCH_OVSDOCKER_N", "30"))
OUT = OUT_DIR / "ovs_docker.json"
TOOLS = ("netplumb", "pipework", "ovs-docker")


def test_attach_latency_against_ovs_docker() -> None:
    require_lab(ovs=True)
    if shutil.which("ovs-docker") is None:
        pytest.skip("ovs-docker (openvswitch-common) is not installed")
    image = ensure_image()
    containers = Containers(image)
    bridge = unique("obch")
    with lab_up(1, ovs=True) as lab:
        pw = lab.netplumb_cli.replace("netplumb", "pipework")
        assert lab.netplumb("h1", "bridge", "add", bridge, "--kind", "ovs").returncode == 0
        done: dict[str, list[str]] = {t: [] for t in TOOLS}
        samples: dict[str, list[float]] = {t: [] for t in TOOLS}
        try:
            names = [containers.run()[0] for _ in range(3 * N)]
            for i in range(N):
                order = TOOLS[i % 3 :] + TOOLS[: i % 3]
                for j, tool in enumerate(order):
                    name = names[3 * i + j]
                    address = f"198.18.{1 + (3 * i + j) // 250}.{1 + (3 * i + j) % 250}/16"
                    argv = {
                        "netplumb": [lab.netplumb_cli, "attach", bridge, name, address],
                        "pipework": [pw, bridge, name, address],
                        "ovs-docker": [
                            "ovs-docker",
                            "add-port",
                            bridge,
                            "eth1",
                            name,
                            f"--ipaddress={address}",
                        ],
                    }[tool]
                    env = {**os.environ, **lab.env("h1")}
                    start = time.perf_counter()
                    res = subprocess.run(
                        lab.exec_argv("h1", argv),
                        capture_output=True,
                        text=True,
                        env=env,
                        timeout=60,
                    )
                    took = time.perf_counter() - start
                    assert res.returncode == 0, f"{tool} {name}: {res.stderr}"
                    done[tool].append(name)
                    samples[tool].append(took)
            check = subprocess.run(
                ["docker", "exec", done["ovs-docker"][0], "ip", "-o", "link", "show", "eth1"],
                capture_output=True,
                text=True,
            )
            assert check.returncode == 0, "ovs-docker did not plumb its container"
        finally:
            env = {**os.environ, **lab.env("h1")}
            for name in done["ovs-docker"]:
                subprocess.run(
                    lab.exec_argv("h1", ["ovs-docker", "del-ports", bridge, name]),
                    capture_output=True,
                    env=env,
                )
            for name in done["netplumb"] + done["pipework"]:
                lab.netplumb("h1", "detach", name)
            containers.cleanup()
            lab.netplumb("h1", "bridge", "del", bridge)
    medians = {t: statistics.median(samples[t]) * 1000 for t in TOOLS}
    base = medians["ovs-docker"]
    p90 = {t: percentile([x * 1000 for x in samples[t]], 90) for t in TOOLS}
    report = {
        "attaches_per_tool": N,
        "median_ms": medians,
        "p90_ms": p90,
        "ratio_to_ovs_docker": {t: medians[t] / base for t in TOOLS},
        "target": "netplumb and pipework medians at or below ovs-docker's",
    }
    figs = [
        figure(
            f"{t}_median_ms",
            f"attach a container to OVS, {t}: median",
            medians[t],
            "ms",
            target=None if t == "ovs-docker" else base,
            note="target: ovs-docker's median" if t != "ovs-docker" else f"p90 {p90[t]:.0f} ms",
        )
        for t in TOOLS
    ]
    series = {
        f"{t}_ms": {"label": f"{t} (whole command)", "y": [round(x * 1000, 3) for x in samples[t]]}
        for t in TOOLS
    }
    title = f"Attach a container to OVS: netplumb, pipework, ovs-docker ({N} each)"
    write("ovs_docker", title, figs, series, **report)
    print()
    print(f"attach latency, {N} attaches each, same OVS bridge (userspace datapath)")
    for t in TOOLS:
        ok = (
            ""
            if t == "ovs-docker"
            else ("  meets target" if medians[t] <= base else "  MISSES target")
        )
        print(
            f"  {t:<11} median {medians[t]:7.1f} ms  p90 {report['p90_ms'][t]:7.1f} ms"
            f"  ratio {medians[t] / base:5.2f}{ok}"
        )
    print(f"  written to {OUT}")
