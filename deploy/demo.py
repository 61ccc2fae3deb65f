#!/usr/bin/env python3
"""netplumb demo: one L2 network across three hosts.

Builds a 3-host lab (deploy/lab), an OVS overlay bridge bri0 (VNI 100) on
every host through each host's own netplumbd, a full mesh of peers, two
guests per host; prints an all-pairs ping matrix and an iperf3 table; then
takes the lab down (--keep leaves it up for exploring, `lab.py down --prefix
npdemo` removes it). Run as root after `make setup`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy" / "lab"))

from lab import Lab, LabExists  # noqa: E402

PREFIX = "npdemo"


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    p.add_argument("--tunnel", choices=["vxlan", "geneve", "gre"], default="vxlan")
    p.add_argument("--iperf-seconds", type=float, default=3.0)
    args = p.parse_args()

    lab = Lab(PREFIX, 3, ovs=True)
    try:
        step("lab up: 3 hosts, each with its own OVS (userspace datapath) and netplumbd")
        lab.up()
    except LabExists:
        print(
            f"a lab '{PREFIX}' is up already: python3 deploy/lab/lab.py down --prefix {PREFIX}",
            file=sys.stderr,
        )
        return 1
    guests: list[tuple[str, str, str]] = []  # (host, netns, address)
    try:
        for h in lab.hosts:
            show(
                lab,
                h.name,
                "bridge",
                "add",
                "bri0",
                "--kind",
                "ovs",
                "--vni",
                "100",
                "--tunnel",
                args.tunnel,
            )
        for a, b in itertools.permutations(lab.hosts, 2):
            show(lab, a.name, "peer", "add", b.underlay_address, "--name", b.name, quiet=True)
        show(lab, "h1", "peer", "ls")
        for i, h in enumerate(lab.hosts, start=1):
            for n in (1, 2):
                ns = f"{PREFIX}-g{i}{n}"
                subprocess.run(["ip", "netns", "add", ns], check=True)
                subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
                address = f"198.19.100.{i * 10 + n}"
                guests.append((h.name, ns, address))
                show(lab, h.name, "attach", "bri0", f"netns:{ns}", f"{address}/24", quiet=True)
        show(lab, "h1", "ls")

        step("all-pairs ping (guest -> guest; 'ok' with the round trip in ms)")
        names = [f"{ns.split('-')[-1]}@{h}" for h, ns, _ in guests]
        print("from\\to   " + "".join(f"{n:>11}" for n in names))
        failures = 0
        for (_ha, nsa, _), na in zip(guests, names, strict=True):
            cells = []
            for _hb, nsb, addr in guests:
                if nsa == nsb:
                    cells.append(f"{'-':>11}")
                    continue
                rtt = ping(nsa, addr)
                failures += rtt is None
                cells.append(f"{'FAIL' if rtt is None else f'ok {rtt:.2f}':>11}")
            print(f"{na:10}" + "".join(cells))

        step(f"iperf3, one TCP stream, {args.iperf_seconds:g} s (overlay MTU {mtu(lab)})")
        print(f"{'from':12}{'to':12}{'Gbit/s':>8}{'retransmits':>13}")
        for src, dst in ((guests[0], guests[2]), (guests[0], guests[4]), (guests[2], guests[5])):
            gbps, retr = iperf(src[1], dst[1], dst[2], args.iperf_seconds)
            print(
                f"{src[1].split('-')[-1] + '@' + src[0]:12}{dst[1].split('-')[-1] + '@' + dst[0]:12}{gbps:8.2f}{retr:13d}"
            )
        underlay = lab.iperf("h1", "h2", seconds=args.iperf_seconds)
        print(
            f"{'h1 underlay':12}{'h2 underlay':12}{underlay['gbps']:8.2f}{int(underlay['retransmits']):13d}"
        )
        if failures:
            print(f"\n{failures} ping(s) failed", file=sys.stderr)
            return 1
        if args.keep:
            print(
                f"\nthe lab stays up: python3 deploy/lab/lab.py exec --prefix {PREFIX} h1 -- netplumb ls"
            )
            print(f"remove it with:   python3 deploy/lab/lab.py down --prefix {PREFIX}")
        return 0
    finally:
        if not args.keep:
            step("lab down")
            for _, ns, _ in guests:
                subprocess.run(["ip", "netns", "del", ns], check=False)
            lab.down()


def step(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m")


def show(lab: Lab, host: str, *args: str, quiet: bool = False) -> None:
    if not quiet:
        print(f"\033[1m[{host}]$ netplumb {' '.join(args)}\033[0m")
    res = lab.netplumb(host, *args)
    if res.returncode != 0:
        raise SystemExit(f"{host}: netplumb {' '.join(args)} failed:\n{res.stderr}")
    if not quiet:
        print(res.stdout.rstrip())


def ping(ns: str, address: str) -> float | None:
    for _ in range(3):  # the first packet to a new tunnel peer may be dropped
        res = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-n", "-c1", "-W1", address],
            capture_output=True,
            text=True,
        )
        if res.returncode == 0:
            for word in res.stdout.split():
                if word.startswith("time="):
                    return float(word[5:])
            return 0.0
    return None


def mtu(lab: Lab) -> int:
    res = lab.netplumb("h1", "--json", "ls")
    eps = json.loads(res.stdout)["endpoints"]
    return int(eps[0]["mtu"]) if eps else 0


def iperf(src_ns: str, dst_ns: str, dst_addr: str, seconds: float) -> tuple[float, int]:
    srv = subprocess.Popen(
        ["ip", "netns", "exec", dst_ns, "iperf3", "-s", "-1", "-B", dst_addr],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.3)
        res = subprocess.run(
            ["ip", "netns", "exec", src_ns, "iperf3", "-J", "-c", dst_addr, "-t", f"{seconds:g}"],
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        )
        end = json.loads(res.stdout)["end"]
        return end["sum_received"]["bits_per_second"] / 1e9, int(
            end["sum_sent"].get("retransmits", 0)
        )
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    sys.exit(main())
