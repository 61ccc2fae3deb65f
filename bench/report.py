#!/usr/bin/env python3
"""Write bench/REPORT.md and its plots (bench/*.png) from the figures the
benchmarks recorded in bench/out/*.json.

``make bench`` runs it after the benchmarks; it also runs alone on the JSON
of an earlier run (only matplotlib is needed, from the ``bench`` extra):

    .venv/bin/python bench/report.py                 # bench/out -> bench/REPORT.md
    .venv/bin/python bench/report.py --out-dir DIR --report FILE

Every benchmark writes one document through tests/fixtures/benchio.py: the
machine, the time and commit, ``figures`` (value, unit, target, which way
is better) and ``series`` (raw samples for the plots). The report shows
every figure with its target and "met" or "missed by"; a plot whose data
is missing (that benchmark did not run) is left out and said so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# In report order; any other document found comes after these.
ORDER = ("scale", "attach", "ovs_docker", "overlay", "cluster", "store")
SECTION = {
    "scale": "One agent with 1000 endpoints: attach growth, memory, restarts",
    "attach": "Attach latency, gRPC and CLI",
    "ovs_docker": "Attach a container to OVS, next to ovs-docker",
    "overlay": "Throughput per backend against the underlay; peers",
    "cluster": "Cluster mode: peers against the time to a full mesh",
    "store": "State file writes",
}


# ----------------------------------------------------------------- loading


def load(out_dir: Path) -> dict[str, dict[str, Any]]:
    """The documents in ``out_dir`` that carry figures, by benchmark name."""
    docs: dict[str, dict[str, Any]] = {}
    for path in sorted(out_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            print(f"report: skipping {path}: {e}", file=sys.stderr)
            continue
        if not isinstance(doc, dict) or "figures" not in doc:
            print(
                f"report: skipping {path}: no figures (written by an older benchmark; "
                "run `make bench` again)",
                file=sys.stderr,
            )
            continue
        docs[str(doc.get("benchmark") or path.stem)] = doc
    known = [n for n in ORDER if n in docs]
    return {n: docs[n] for n in known + sorted(set(docs) - set(known))}


# --------------------------------------------------------------- numbers


def num(x: float | None) -> str:
    """A figure to 3 significant digits, without exponents."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if float(x).is_integer():
        return f"{int(x):,}"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def verdict(fig: dict[str, Any]) -> str:
    value, target = fig.get("value"), fig.get("target")
    if value is None:
        return "not measured"
    if target is None:
        return ""
    lower = fig.get("better", "lower") == "lower"
    if (value <= target) if lower else (value >= target):
        return "**met**"
    gap = abs(value - target)
    pct = f" ({100 * gap / abs(target):.0f} %)" if target else ""
    return f"**missed** by {num(gap)} {fig.get('unit', '')}{pct}"


def target_text(fig: dict[str, Any]) -> str:
    t = fig.get("target")
    if t is None:
        return ""
    return ("≤ " if fig.get("better", "lower") == "lower" else "≥ ") + f"{t:.4g} {fig['unit']}"


def md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def series(docs: dict[str, dict[str, Any]], bench: str, key: str) -> Any:
    return docs.get(bench, {}).get("series", {}).get(key)


def rolling(values: Sequence[float], window: int, q: float) -> list[float]:
    """The q-quantile of the last ``window`` values, at every index."""
    out = []
    for i in range(len(values)):
        xs = sorted(values[max(0, i - window + 1) : i + 1])
        pos = (len(xs) - 1) * q
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
    return out


# ------------------------------------------------------------------ plots


def _plt() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit(
            "report: matplotlib is missing; install the bench extra: "
            ".venv/bin/python -m pip install -e '.[bench]' (make bench does it)"
        )
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"figure.dpi": 110, "axes.grid": True, "grid.alpha": 0.3, "font.size": 9})
    return plt


def plot_attach_distribution(docs: dict[str, dict[str, Any]], plt: Any, path: Path) -> str | None:
    """Empirical CDF of every set of attach latencies we have."""
    curves = []
    for bench, key, label in (
        ("attach", "grpc_attach_ms", "gRPC Attach, persistent channel (0→{n})"),
        ("scale", "attach_ms", "gRPC Attach, one agent growing 0→{n}"),
        ("attach", "cli_attach_ms", "`netplumb attach`, whole command (0→{n})"),
        ("ovs_docker", "netplumb_ms", "`netplumb attach` docker → OVS ({n})"),
        ("ovs_docker", "pipework_ms", "`pipework` docker → OVS ({n})"),
        ("ovs_docker", "ovs-docker_ms", "`ovs-docker add-port` → OVS ({n})"),
    ):
        s = series(docs, bench, key)
        if s and s.get("y"):
            ys = sorted(s["y"])
            curves.append((label.format(n=len(ys)), ys))
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(8, 5.4))
    for label, ys in curves:
        frac = [(i + 1) / len(ys) for i in range(len(ys))]
        ax.step(ys, frac, where="post", label=label)
    ax.axvline(15, color="grey", linestyle="--", linewidth=0.8, label="target: gRPC p50 15 ms")
    ax.axvline(90, color="grey", linestyle=":", linewidth=1, label="target: CLI p50 90 ms")
    ax.axhline(0.5, color="grey", linewidth=0.5)
    ax.axhline(0.99, color="grey", linewidth=0.5)
    ax.set_xscale("log")
    ax.set_xlabel("attach latency (ms, log scale)")
    ax.set_ylabel("fraction of attaches at most this long")
    ax.set_title("Attach latency distribution")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return (
        "Empirical distribution of attach latency: the gRPC call seen by a client on "
        "a persistent channel, the whole `netplumb` command (a process per attach), "
        "and attaching Docker containers to OVS next to `ovs-docker`. Horizontal "
        "lines: p50 and p99."
    )


def plot_attach_growth(docs: dict[str, dict[str, Any]], plt: Any, path: Path) -> str | None:
    lat, rss = series(docs, "scale", "attach_ms"), series(docs, "scale", "rss_mb")
    if not lat or not lat.get("y"):
        return None
    ys = lat["y"]
    xs = list(range(len(ys)))
    fig, (ax, ax2) = plt.subplots(
        2, 1, figsize=(8, 6), sharex=True, gridspec_kw={"height_ratios": [3, 2]}
    )
    ax.scatter(xs, ys, s=3, alpha=0.35, color="tab:blue", label="one attach")
    w = 50
    ax.plot(xs, rolling(ys, w, 0.5), color="tab:blue", label=f"median of the last {w}")
    ax.plot(xs, rolling(ys, w, 0.9), color="tab:red", linewidth=1, label=f"p90 of the last {w}")
    ax.set_yscale("log")
    ax.set_ylabel("attach latency (ms, log scale)")
    ax.set_title(f"Attach latency and agent memory as endpoints grow to {len(ys)}")
    ax.legend(fontsize=7, loc="upper left")
    if rss and rss.get("y"):
        ax2.plot(rss["x"], rss["y"], marker="o", markersize=3, color="tab:green", label="VmRSS")
        ax2.axhline(100, color="tab:red", linestyle="--", linewidth=0.9, label="target 100 MB")
        ax2.set_ylim(0, max(110, max(rss["y"]) * 1.1))
        ax2.legend(fontsize=7, loc="upper left")
    ax2.set_ylabel("agent RSS (MB)")
    ax2.set_xlabel("endpoints already attached (one agent, one Linux bridge)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return (
        "Top: every attach of the scale benchmark by how many endpoints the agent "
        "already had (one client, one after the other). Bottom: the agent's resident "
        "memory (VmRSS from /proc) on the way."
    )


def plot_throughput(docs: dict[str, dict[str, Any]], plt: Any, path: Path) -> str | None:
    tp = series(docs, "overlay", "throughput")
    if not tp:
        return None
    labs = [
        (lab, title, sorted((k for k, v in tp.items() if v["lab"] == lab), key=order))
        for lab, title in (
            ("plain", "2 hosts, no OVS (underlay address on eth0)"),
            ("ovs", "2 hosts, OVS userspace datapath (underlay address on br-phy)"),
        )
    ]
    labs = [x for x in labs if x[2]]
    fig, axes = plt.subplots(
        len(labs),
        1,
        figsize=(8, 0.42 * sum(len(k) for _, _, k in labs) + 1.2 * len(labs)),
        gridspec_kw={"height_ratios": [len(k) for _, _, k in labs]},
        squeeze=False,
    )
    colors = {"underlay": "tab:gray", "netplumb": "tab:blue", "twin": "tab:orange"}
    for ax, (lab, title, keys) in zip(axes[:, 0], labs, strict=True):
        under = tp.get(f"{lab}/underlay")
        top = max((tp[k]["max_gbps"] or 0) for k in keys) or 1
        for i, k in enumerate(keys):
            d, kind = tp[k], k.split("/")[1]
            y = len(keys) - 1 - i
            med = d["median_gbps"]
            err = [[med - (d["min_gbps"] or med)], [(d["max_gbps"] or med) - med]]
            ax.barh(y, med, color=colors.get(kind, "tab:blue"), xerr=err, capsize=2)
            rel = ""
            if under and under["median_gbps"] and kind != "underlay":
                rel = f"  ({med / under['median_gbps']:.2f} x underlay)"
            ax.text(
                (d["max_gbps"] or med) + top * 0.01, y, f"{med:.2f}{rel}", va="center", fontsize=7
            )
        ax.set_yticks(range(len(keys)), list(reversed(keys)), fontsize=8)
        ax.set_xlim(0, top * 1.4)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("Gbit/s (iperf3, one TCP stream; median, bars min-max)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    axes[0, 0].legend(
        handles, ["underlay", "built by netplumb", "hand-built twin"], fontsize=7, loc="lower right"
    )
    fig.suptitle("Throughput per backend against the underlay")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return (
        "iperf3 from a guest on one host to a guest on the other (one-host bridges: "
        "between two guests on h1; underlay: host to host). Each netplumb overlay next "
        "to the same datapath built by hand, each next to its lab's underlay. The two "
        "labs have their own scales: OVS here runs the userspace (netdev) datapath."
    )


def order(key: str) -> tuple[int, str]:
    """Underlay first, then one-host bridges, then overlays (netplumb, twin)."""
    backend, kind = key.split("/")
    rank = 0 if kind == "underlay" else 1 if backend.endswith("bridge") else 2
    return rank, key


def plot_cluster(docs: dict[str, dict[str, Any]], plt: Any, path: Path) -> str | None:
    join = series(docs, "cluster", "join")
    if not join or not join.get("hosts"):
        return None
    fig, ax = plt.subplots(figsize=(8, 4))
    h = join["hosts"]
    ax.plot(h, join["ready_s"], marker="o", markersize=3, label="agent serving")
    ax.plot(h, join["attached_s"], marker="o", markersize=3, label="a guest attached on it")
    ax.plot(h, join["mesh_s"], marker="o", markersize=3, label="every other host pings that guest")
    ax.axhline(5, color="tab:red", linestyle="--", linewidth=0.9, label="target 5 s (at 20 hosts)")
    ax.set_ylim(0, max(6, max(join["mesh_s"]) * 1.15))
    ax.set_xticks(h)
    ax.set_xlabel("hosts in the cluster, the new one included")
    ax.set_ylabel("seconds from the new agent's start")
    ax.set_title("Cluster mode: a host joins, time to a full mesh")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return (
        "A lab of Linux overlays with etcd; agents are started one by one, each "
        "joining the n-1 already there: when it serves, when a guest is attached on "
        "it, and when every other host has a ping reply from that guest."
    )


def plot_restart(docs: dict[str, dict[str, Any]], plt: Any, path: Path) -> str | None:
    restarts = docs.get("scale", {}).get("restarts")
    if not restarts:
        return None
    n = docs["scale"].get("config", {}).get("endpoints", "N")
    repair = docs["scale"].get("config", {}).get("repair_deleted_veths", "some")
    cases = [
        ("empty", "0 endpoints"),
        ("intact", f"{n} endpoints,\ndata plane intact"),
        ("repair", f"{n} endpoints,\n{repair} veths deleted"),
    ]
    cases = [(k, label) for k, label in cases if restarts.get(k)]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    for i, (k, _) in enumerate(cases):
        runs = restarts[k]
        rec = statistics.median(r["reconciled_s"] for r in runs if "reconciled_s" in r)
        ready = statistics.median(r["ready_s"] for r in runs)
        ax.bar(
            i - 0.18,
            rec,
            width=0.36,
            color="tab:blue",
            label="'reconciled at start'" if not i else None,
        )
        ax.bar(
            i + 0.18,
            ready,
            width=0.36,
            color="tab:green",
            label="READY (serving)" if not i else None,
        )
        for dx, v in ((-0.18, rec), (0.18, ready)):
            ax.text(i + dx, v, f"{v:.2f}", ha="center", va="bottom", fontsize=7)
    ax.axhline(3, color="tab:red", linestyle="--", linewidth=0.9, label="target 3 s")
    ax.set_xticks(range(len(cases)), [label for _, label in cases])
    ax.set_ylabel("seconds from exec (median)")
    ax.set_title("Agent restart: time until reconciled and serving")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return (
        "SIGTERM, then a new netplumbd: from just before the exec to its log line "
        '"reconciled at start" and to READY=1 on a notify socket.'
    )


PLOTS = (
    ("attach_latency_distribution.png", "Attach latency distribution", plot_attach_distribution),
    ("attach_latency_growth.png", "Attach latency as endpoints grow", plot_attach_growth),
    ("restart.png", "Restart with 1000 endpoints", plot_restart),
    ("throughput.png", "Throughput per backend against the underlay", plot_throughput),
    ("cluster_join.png", "Peers against the time to a full mesh", plot_cluster),
)


# ----------------------------------------------------------------- report


def machine_lines(docs: dict[str, dict[str, Any]]) -> list[str]:
    hosts = [d["host"] for d in docs.values() if isinstance(d.get("host"), dict)]
    if not hosts:
        return ["(not recorded)"]
    h = hosts[-1]
    lines = [
        f"- CPUs: {h.get('cpus')} x {h.get('cpu_model', '?')}; memory {h.get('mem_gib', '?')} GiB",
        f"- kernel {h.get('kernel')}; Python {h.get('python')}",
        f"- Open vSwitch: {h.get('ovs') or 'not installed'}; datapath **{h.get('ovs_datapath')}**",
        f"- {h.get('iperf3') or 'iperf3 not installed'}",
    ]
    differing = {
        k for k in ("cpus", "kernel", "hostname") if len({str(x.get(k)) for x in hosts}) > 1
    }
    if differing:
        lines.append(
            f"- note: the benchmarks ran on different machines ({', '.join(sorted(differing))} "
            "differ); each run's row below says where"
        )
    return lines


def render(docs: dict[str, dict[str, Any]], plots: list[tuple[str, str, str]]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# netplumb benchmark report",
        "",
        f"Generated {now} by `bench/report.py` from `bench/out/*.json` "
        "(`make bench` runs every benchmark in `tests/bench/`, then this). "
        "Benchmarks run on demand, never in CI, and assert no timing: a missed "
        "target is a finding, not a failure. On a small shared machine the figures "
        "move with whatever else runs: the load average at the end of each run is "
        "in the Runs table, and paths compared with each other were measured in the "
        "same run, interleaved.",
        "",
        "## Machine",
        "",
        *machine_lines(docs),
        "",
        "## Runs",
        "",
        "| benchmark | what | when (UTC) | commit | load avg (1 min) at the end |",
        "|---|---|---|---|---|",
    ]
    for name, d in docs.items():
        commit = d.get("commit", "?")[:12] + (" (uncommitted changes)" if d.get("dirty") else "")
        load = (d.get("host") or {}).get("loadavg") or ["?"]
        out.append(
            f"| {name} | {md_escape(d.get('title', ''))} | {str(d.get('time', '?')).replace('T', ' ')[:16]} "
            f"| {commit} | {load[0]} |"
        )
    missing = [n for n in ORDER if n not in docs]
    if missing:
        out += ["", f"Not in this report (no figures found): {', '.join(missing)}."]

    judged = [(n, f) for n, d in docs.items() for f in d["figures"] if f.get("target") is not None]
    met = sum(1 for _, f in judged if verdict(f) == "**met**")
    out += [
        "",
        "## Targets",
        "",
        f"{met} of {len(judged)} targets met.",
        "",
        "| benchmark | figure | value | target | verdict |",
        "|---|---|---|---|---|",
    ]
    for name, f in judged:
        out.append(
            f"| {name} | {md_escape(f['label'])} | {num(f['value'])} {f['unit']} "
            f"| {target_text(f)} | {verdict(f)} |"
        )

    out += ["", "## All figures"]
    for name, d in docs.items():
        out += [
            "",
            f"### {SECTION.get(name, d.get('title', name))}",
            "",
            f"`bench/out/{name}.json`, {md_escape(d.get('title', ''))}.",
            "",
            "| figure | value | target | verdict | note |",
            "|---|---|---|---|---|",
        ]
        for f in d["figures"]:
            out.append(
                f"| {md_escape(f['label'])} | {num(f['value'])} {f['unit']} | {target_text(f)} "
                f"| {verdict(f)} | {md_escape(f.get('note', ''))} |"
            )

    out += ["", "## Plots"]
    for file, title, caption in plots:
        out += ["", f"### {title}", "", f"![{title}]({file})", "", caption]
    skipped = [t for f, t, _ in PLOTS if f not in {p[0] for p in plots}]
    if skipped:
        out += ["", f"Not plotted (their benchmark did not record data): {', '.join(skipped)}."]
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Write the benchmark report (Markdown and PNG plots) from the figures "
        "the benchmarks recorded.",
        epilog="examples:\n  .venv/bin/python bench/report.py\n"
        "  .venv/bin/python bench/report.py --out-dir /tmp/run1 --report /tmp/run1/REPORT.md",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--out-dir", type=Path, default=HERE / "out", help="where the JSON is (bench/out)"
    )
    ap.add_argument(
        "--report",
        type=Path,
        default=HERE / "REPORT.md",
        help="the Markdown file to write; the PNGs go next to it (bench/REPORT.md)",
    )
    args = ap.parse_args(argv)
    docs = load(args.out_dir)
    if not docs:
        print(
            f"report: no benchmark figures in {args.out_dir}: run `make bench` first",
            file=sys.stderr,
        )
        return 1
    plt = _plt()
    folder = args.report.parent
    folder.mkdir(parents=True, exist_ok=True)
    plots = []
    for file, title, fn in PLOTS:
        png = folder / file
        caption = fn(docs, plt, png)
        if caption is not None:
            plots.append((file, title, caption))
        elif png.exists():
            png.unlink()  # a plot from an older run would not match this report
    args.report.write_text(render(docs, plots))
    print(f"report: wrote {args.report} and {len(plots)} plots ({', '.join(p[0] for p in plots)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
