"""Crash consistency, measured: random operations against a lab host while its
netplumbd is killed with SIGKILL at random moments (mid-operation, and now
and then again while it starts) and started again.

Three workers send random attaches and detaches (netns guests, and Docker
containers when dockerd runs), bridge adds and deletes (Linux and OVS, with
and without an overlay VNI), peer adds and deletes and route adds and
deletes, each through a fresh client; a fourth thread kills netplumbd every
0.2-1.5 s and starts it again. An operation cut short by a kill may fail in
any way that says the daemon went away; every other failure must be a
sensible refusal (NOT_FOUND, ALREADY_EXISTS, FAILED_PRECONDITION,
INVALID_ARGUMENT) from the daemon.

Afterwards netplumbd is killed and started once more (it reconciles at
start), and the store and the host must agree exactly: no netplumb-tagged
link, OVS bridge, port or tunnel that no record wants (a leak), no record
without its objects, every endpoint with its addresses, MAC and routes,
passing packets to its bridge and to the other endpoints on it, and
``netplumb check`` finding nothing.

The random choices come from a seed, printed; ``NETPLUMB_CHAOS_SEED=N``
replays them (the kill moments race with the operations, so a replay is the
same sequence of operations and kill intervals, not the same interleaving).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fixtures.docker import Containers, ensure_image
from fixtures.host import Namespaces, unique
from fixtures.lab import Lab, LabError, agent_id, assert_gone, lab_up, ovsdb_rows, require_lab
from netplumb.cli.client import NetplumbError
from netplumb.cli.codes import Code
from netplumb.v1 import agent_pb2 as pb

SEED_ENV = "NETPLUMB_CHAOS_SEED"
MIN_OPS = 300  # issue 5
TARGET_OPS = 600
MIN_KILLS = 25
OP_PHASE = 100.0  # seconds at most for the random operations
WORKERS = 3
HUNG = 10.0  # seconds: no operation takes this long; a kill does not excuse it
NETNS_GUESTS = 10
CONTAINERS = 3

# name: (kind, vni, third octet of its subnet); eth1 goes to the first two,
# eth2 to the last two, so a guest never has two interfaces in one subnet.
BRIDGES = {
    "xl0": ("linux", 0, 80),
    "xo0": ("ovs", 0, 82),
    "xl1": ("linux", 5001, 81),
    "xo1": ("ovs", 5002, 83),
}
BRIDGES_OF = {"eth1": ("xl0", "xo0"), "eth2": ("xl1", "xo1")}
PEERS = ("198.18.0.50", "198.18.0.51", "198.18.0.52")  # no such hosts: tunnels only
ROUTES = ("198.19.90.0/24", "198.19.91.0/24", "198.19.92.0/24")
SENSIBLE = {Code.NOT_FOUND, Code.ALREADY_EXISTS, Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT}
# Failures the client makes up when the daemon is not there to answer.
NOT_FROM_DAEMON = ("", "daemon-unavailable", "timeout")


def gateway(bridge: str) -> str:
    return f"198.19.{BRIDGES[bridge][2]}.1"


@dataclass
class Result:
    worker: int
    op: str
    outcome: str  # ok, refused, interrupted, bad
    detail: str = ""


class Chaos:
    """The operations, the killer, and what happened."""

    def __init__(self, lab: Lab, guests: list[str], seed: int) -> None:
        self.lab = lab
        self.host = lab.hosts[0]
        self.guests = guests  # "netns:NAME" / "docker:NAME"
        self.seed = seed
        self.mu = threading.Lock()
        self.up = threading.Event()
        self.up.set()
        self.stop = threading.Event()
        self.epoch = 0  # changes at every kill and every restart
        self.kills = 0
        self.startup_kills = 0
        self.results: list[Result] = []
        self.fatal: list[str] = []
        self.bridge_of: dict[tuple[str, str], str] = {}  # last attach that succeeded

    # -- operations

    def pick(self, rng: random.Random) -> tuple[str, Callable[[Any], Any]]:
        guest = rng.choice(self.guests)
        ifname = rng.choice(("eth1", "eth2"))
        gi = self.guests.index(guest)
        kinds = ("attach", "detach", "bridge add", "bridge del")
        kinds += ("route add", "route del", "peer add", "peer del")
        kind = rng.choices(kinds, weights=[30, 14, 9, 8, 12, 8, 10, 9])[0]
        if kind == "attach":
            bridge = rng.choice(BRIDGES_OF[ifname])
            address = f"198.19.{BRIDGES[bridge][2]}.{10 + gi * 2 + (ifname == 'eth2')}/24"

            def attach(c: Any) -> None:
                c.attach(bridge, guest, addresses=[address], ifname=ifname)
                with self.mu:
                    self.bridge_of[(guest, ifname)] = bridge

            return f"attach {bridge} {guest} {ifname} {address}", attach
        if kind == "detach":
            which = rng.choice((ifname, ""))
            return f"detach {guest} {which or '(all)'}", lambda c: c.detach(guest, which)
        if kind == "bridge add":
            name = rng.choice(list(BRIDGES))
            bkind, vni, octet = BRIDGES[name]
            return f"bridge add {name}", lambda c: c.create_bridge(
                name, kind=bkind, vni=vni, addresses=[f"198.19.{octet}.1/24"]
            )
        if kind == "bridge del":
            name = rng.choice(list(BRIDGES))
            return f"bridge del {name}", lambda c: c.delete_bridge(name)
        if kind == "route add":
            dest = rng.choice(ROUTES)
            with self.mu:
                bridge = self.bridge_of.get((guest, ifname))
            via = gateway(bridge) if bridge and rng.random() < 0.5 else ""
            return f"route add {guest} {dest} via {via or '(on-link)'} {ifname}", (
                lambda c: c.add_route(guest, dest, via=via, ifname=ifname)
            )
        if kind == "route del":
            dest = rng.choice(ROUTES)
            return f"route del {guest} {dest} {ifname}", (
                lambda c: c.delete_route(guest, dest, ifname=ifname)
            )
        peer = rng.choice(PEERS)
        if kind == "peer add":
            return f"peer add {peer}", lambda c: c.add_peer(peer, name=f"p{peer.split('.')[-1]}")
        return f"peer del {peer}", lambda c: c.remove_peer(peer)

    def worker(self, index: int) -> None:
        rng = random.Random(f"{self.seed}/worker{index}")
        while not self.stop.is_set():
            if not self.up.wait(0.5):
                continue
            what, call = self.pick(rng)
            with self.mu:
                before = self.epoch
            started = time.monotonic()
            try:
                with self.lab.client(self.host, timeout=30) as c:
                    call(c)
                result = Result(index, what, "ok")
            except NetplumbError as e:
                with self.mu:
                    killed = self.epoch != before or not self.up.is_set()
                detail = f"{e.code.name} {e.reason}: {e.message}"
                took = time.monotonic() - started
                if e.reason in NOT_FROM_DAEMON and killed and took < HUNG:
                    result = Result(index, what, "interrupted", detail)
                elif e.reason in NOT_FROM_DAEMON:
                    result = Result(index, what, "bad", f"{detail} (after {took:.1f} s)")
                elif e.code in SENSIBLE:
                    result = Result(index, what, "refused", detail)
                else:
                    result = Result(index, what, "bad", detail)
            except Exception as e:  # anything else is a finding
                result = Result(index, what, "bad", f"{type(e).__name__}: {e}")
            with self.mu:
                self.results.append(result)

    # -- the killer

    def _kill(self) -> None:
        with self.mu:
            self.epoch += 1
            self.up.clear()
        self.lab.stop_agent(self.host, signal.SIGKILL)
        self.kills += 1

    def killer(self) -> None:
        rng = random.Random(f"{self.seed}/killer")
        while not self.stop.wait(rng.uniform(0.2, 1.5)):
            self._kill()
            try:
                if rng.random() < 0.2:
                    # Once more while it starts: mid start-up reconcile.
                    self.lab.start_agent(self.host, wait=False)
                    time.sleep(rng.uniform(0.1, 0.9))
                    self._kill()
                    self.startup_kills += 1
                self.lab.start_agent(self.host)
            except LabError as e:
                self.fatal.append(f"netplumbd did not start again: {e}")
                self.stop.set()
                return
            with self.mu:
                self.epoch += 1
                self.up.set()

    def run(self) -> float:
        threads = [threading.Thread(target=self.worker, args=(i,)) for i in range(WORKERS)]
        threads.append(threading.Thread(target=self.killer))
        started = time.monotonic()
        for t in threads:
            t.start()
        try:
            while time.monotonic() - started < OP_PHASE and not self.stop.is_set():
                with self.mu:
                    done = len(self.results) >= TARGET_OPS and self.kills >= MIN_KILLS
                if done:
                    break
                time.sleep(0.1)
        finally:
            self.stop.set()
            for t in threads:
                t.join(120)
        return time.monotonic() - started


# -- the host, seen without netplumb


def guest_netns_path(guest: dict[str, str]) -> str | None:
    if guest["kind"] == "netns":
        return f"/run/netns/{guest['value']}"
    if guest["kind"] == "docker":
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", guest["value"]],
            capture_output=True,
            text=True,
            timeout=30,
        )
        pid = int(out.stdout.strip() or 0) if out.returncode == 0 else 0
        return f"/proc/{pid}/ns/net" if pid > 0 else None
    raise AssertionError(f"unexpected guest {guest}")


def nsenter(path: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net={path}", *argv], capture_output=True, text=True, timeout=timeout
    )


def links(run: Callable[..., subprocess.CompletedProcess[str]]) -> dict[str, dict[str, Any]]:
    out = run("ip", "-d", "-j", "addr", "show").stdout
    return {link["ifname"]: link for link in json.loads(out or "[]")}


def global_addresses(link: dict[str, Any]) -> set[str]:
    return {
        f"{a['local']}/{a['prefixlen']}"
        for a in link.get("addr_info", [])
        if a.get("scope") == "global"
    }


def verify(lab: Lab, guests: list[str]) -> tuple[list[str], list[str], int]:
    """(leaks, missing, pings): objects tagged as this agent's that no record
    wants; records without their objects (or packets); pings that passed."""
    h = lab.hosts[0]
    state = json.loads((Path(h.state_dir) / "state.json").read_text())
    me = state["agent_id"]
    bridges = {b["name"]: b for b in state["bridges"]}
    eps = {e["id"]: e for e in state["endpoints"]}
    peers = {p["address"] for p in state["peers"]}
    leaks: list[str] = []
    missing: list[str] = []

    # The API serves what the file holds.
    with lab.client(h) as c:
        listed = {e.id: e for e in c.list_endpoints()}
        if set(listed) != set(eps):
            missing.append(f"ListEndpoints {sorted(listed)} != state.json {sorted(eps)}")
        if {b.spec.name for b in c.list_bridges()} != set(bridges):
            missing.append("ListBridges differs from state.json")
        if {p.address for p in c.list_peers()} != peers:
            missing.append("ListPeers differs from state.json")
        missing += [
            f"endpoint {e.id} is not ready: {e.state_detail}"
            for e in listed.values()
            if e.state != pb.ENDPOINT_STATE_READY
        ]
        drift = c.check()
    for d in drift:
        text = f"netplumb check: {d.object} {d.name}: {d.detail}: {list(d.repair)}"
        rec = eps.get(d.name)
        if rec is not None:  # what the record says, and what the guest has
            path = guest_netns_path(rec["spec"]["guest"])
            routes = nsenter(path, "ip", "route", "show").stdout if path else "-"
            text += f"\n  record {json.dumps(rec)}\n  guest routes:\n{routes}"
        missing.append(text)

    # Host links: every netplumb-tagged one is wanted by a record.
    host = links(lambda *a: lab.exec(h, list(a)))
    vnis = {b["vni"]: n for n, b in bridges.items() if b["vni"] and b["kind"] == "linux"}
    for name, link in host.items():
        alias = link.get("ifalias", "")
        if not alias.startswith("netplumb:"):
            continue
        parts = alias.split(":")
        if parts[-1] != me:
            leaks.append(f"link {name} is tagged for another agent: {alias}")
        elif parts[1] == "ep":
            rec = eps.get(parts[2])
            if rec is None:
                leaks.append(f"veth {name} is tagged for endpoint {parts[2]}, which has no record")
            elif rec["host_ifname"] != name:
                leaks.append(
                    f"veth {name} is tagged for {parts[2]}, whose veth is {rec['host_ifname']}"
                )
        elif parts[1] == "br":
            if name not in bridges or bridges[name]["kind"] != "linux":
                leaks.append(f"Linux bridge {name} is tagged but has no record")
            elif not bridges[name]["owned"]:
                leaks.append(f"Linux bridge {name} is tagged as ours, but recorded as adopted")
        elif parts[1] == "vx":
            vni = int(name[4:]) if name[4:].isdigit() else -1
            if vni not in vnis:
                leaks.append(f"VXLAN device {name} belongs to no bridge")
        else:
            leaks.append(f"link {name} has an unknown netplumb tag {alias}")

    # OVSDB: every row tagged with this agent is wanted by a record.
    br_rows = ovsdb_rows(lab, h, "Bridge", ["name", "external_ids", "ports"])
    port_rows = ovsdb_rows(lab, h, "Port", ["_uuid", "name", "external_ids", "tag"])
    if_rows = {
        r["name"]: r for r in ovsdb_rows(lab, h, "Interface", ["name", "type", "options", "error"])
    }
    port_by_uuid = {p["_uuid"]: p for p in port_rows}
    bridge_of_port: dict[str, str] = {}
    for b in br_rows:
        uuids = b["ports"] if isinstance(b["ports"], list) else [b["ports"]]
        for u in uuids:
            if u in port_by_uuid:
                bridge_of_port[port_by_uuid[u]["name"]] = b["name"]
        if b["external_ids"].get("netplumb-owner") == me:
            if b["name"] not in bridges or bridges[b["name"]]["kind"] != "ovs":
                leaks.append(f"OVS bridge {b['name']} is tagged but has no record")
            elif not bridges[b["name"]]["owned"]:
                leaks.append(f"OVS bridge {b['name']} is tagged as ours, but recorded as adopted")
    for p in port_rows:
        ids, name = p["external_ids"], p["name"]
        on = bridge_of_port.get(name, "")
        if ids.get("netplumb-owner") != me:
            if name.startswith(("np", "nt")) and name not in bridges:
                leaks.append(f"OVS port {name} on {on or '(no bridge)'} has no netplumb tag")
            continue
        if "netplumb-endpoint" in ids:
            rec = eps.get(ids["netplumb-endpoint"])
            if rec is None or rec["host_ifname"] != name or rec["spec"]["bridge"] != on:
                leaks.append(
                    f"OVS port {name} on {on} is for endpoint {ids['netplumb-endpoint']}, which has no such record"
                )
        elif "netplumb-peer" in ids:
            b = bridges.get(ids.get("netplumb-bridge", ""))
            if ids["netplumb-peer"] not in peers or b is None or not b["vni"] or on != b["name"]:
                leaks.append(
                    f"tunnel {name} on {on} to {ids['netplumb-peer']} is for no current peer or overlay"
                )
    tunnels = Counter(
        (bridge_of_port.get(p["name"], ""), p["external_ids"].get("netplumb-peer"))
        for p in port_rows
        if p["external_ids"].get("netplumb-owner") == me and "netplumb-peer" in p["external_ids"]
    )

    # Every record has its objects.
    for name, b in bridges.items():
        link = host.get(name)
        if link is None:
            missing.append(f"bridge {name} has no link")
            continue
        if not set(b["addresses"]) <= global_addresses(link):
            missing.append(f"bridge {name} lacks {b['addresses']}: {global_addresses(link)}")
        if b["kind"] == "ovs" and not any(r["name"] == name for r in br_rows):
            missing.append(f"OVS bridge {name} has no OVSDB row")
        if b["vni"] and b["kind"] == "linux":
            vx = host.get(f"npvx{b['vni']}")
            if vx is None or vx.get("master") != name:
                missing.append(f"bridge {name}: VXLAN device npvx{b['vni']} missing or elsewhere")
            else:
                fdb = json.loads(
                    lab.exec(h, ["bridge", "-j", "fdb", "show", "dev", vx["ifname"]]).stdout or "[]"
                )
                flood = {e.get("dst") for e in fdb if e.get("mac") == "00:00:00:00:00:00"}
                if flood != peers:
                    missing.append(
                        f"bridge {name}: floods to {sorted(flood)}, peers are {sorted(peers)}"
                    )
        if b["vni"] and b["kind"] == "ovs":
            for peer in peers:
                if tunnels[(name, peer)] != 1:
                    missing.append(
                        f"bridge {name}: {tunnels[(name, peer)]} tunnels to {peer}, not 1"
                    )
    paths: dict[str, str | None] = {}
    for eid, rec in sorted(eps.items()):
        spec = rec["spec"]
        host_link = host.get(rec["host_ifname"])
        if host_link is None:
            missing.append(f"endpoint {eid}: no host veth {rec['host_ifname']}")
            continue
        bridge = bridges.get(spec["bridge"])
        if bridge is None:
            missing.append(f"endpoint {eid}: its bridge {spec['bridge']} has no record")
            continue
        if bridge["kind"] == "linux" and host_link.get("master") != spec["bridge"]:
            missing.append(f"endpoint {eid}: {rec['host_ifname']} not a port of {spec['bridge']}")
        if bridge["kind"] == "ovs":
            if bridge_of_port.get(rec["host_ifname"]) != spec["bridge"]:
                missing.append(
                    f"endpoint {eid}: {rec['host_ifname']} not an OVS port of {spec['bridge']}"
                )
            elif if_rows.get(rec["host_ifname"], {}).get("error"):
                missing.append(f"endpoint {eid}: OVS says {if_rows[rec['host_ifname']]['error']}")
        key = json.dumps(spec["guest"], sort_keys=True)
        if key not in paths:
            paths[key] = guest_netns_path(spec["guest"])
        path = paths[key]
        if path is None:
            missing.append(f"endpoint {eid}: guest {spec['guest']} is not running")
            continue
        inside = links(lambda *a, p=path: nsenter(p, *a))  # type: ignore[misc]
        glink = inside.get(spec["ifname"])
        if glink is None:
            missing.append(f"endpoint {eid}: no {spec['ifname']} in {spec['guest']['value']}")
            continue
        if global_addresses(glink) != set(spec["addresses"]):
            missing.append(
                f"endpoint {eid}: {spec['ifname']} has {global_addresses(glink)}, not {spec['addresses']}"
            )
        if glink["address"] != rec["mac"]:
            missing.append(f"endpoint {eid}: MAC {glink['address']}, not {rec['mac']}")
        shown = nsenter(path, "ip", "-j", "route", "show", "dev", spec["ifname"]).stdout
        have = {(r["dst"], r.get("gateway", "")) for r in json.loads(shown or "[]")}
        for r in spec["routes"] + rec["extra_routes"]:
            if (r["destination"], r["via"]) not in have:
                missing.append(
                    f"endpoint {eid}: route {r['destination']} via {r['via'] or '-'} missing"
                )
    # Inside every guest, nothing tagged that no record wants.
    for g in guests:
        kind, _, value = g.partition(":")
        ref = {"kind": kind, "value": value}
        if kind == "docker":
            ref["value"] = subprocess.run(
                ["docker", "inspect", "-f", "{{.Id}}", value], capture_output=True, text=True
            ).stdout.strip()
        path = guest_netns_path(ref)
        if path is None:
            continue
        wanted = {e["spec"]["ifname"] for e in eps.values() if e["spec"]["guest"] == ref}
        for name, link in links(lambda *a, p=path: nsenter(p, *a)).items():  # type: ignore[misc]
            if link.get("ifalias", "").startswith("netplumb:") and name not in wanted:
                leaks.append(f"{g} has {name} tagged {link['ifalias']}, which no record wants")

    # Packets: each endpoint to its bridge and to the next endpoint on it.
    pairs: list[tuple[str, str, str]] = []
    by_bridge: dict[str, list[dict[str, Any]]] = {}
    for rec in sorted(eps.values(), key=lambda r: r["id"]):
        by_bridge.setdefault(rec["spec"]["bridge"], []).append(rec)
    for bridge, recs in by_bridge.items():
        for i, rec in enumerate(recs):
            path = paths.get(json.dumps(rec["spec"]["guest"], sort_keys=True))
            if path is None:
                continue
            src = f"{rec['id']} ({rec['spec']['guest']['value'][:16]} {rec['spec']['ifname']})"
            pairs.append((path, gateway(bridge), f"{src} -> {bridge}"))
            if len(recs) > 1:
                nxt = recs[(i + 1) % len(recs)]
                dst = nxt["spec"]["addresses"][0].split("/")[0]
                pairs.append((path, dst, f"{src} -> {nxt['id']} on {bridge}"))
    failed = pairs
    for _ in range(3):  # the first packets may wait for ARP
        procs = [
            (
                p,
                subprocess.Popen(
                    ["nsenter", f"--net={p[0]}", "ping", "-n", "-q", "-c1", "-W1", p[1]],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                ),
            )
            for p in failed
        ]
        failed = [p for p, proc in procs if proc.wait(30) != 0]
        if not failed:
            break
    missing += [f"no ping {what}" for _, _, what in failed]
    return leaks, missing, len(pairs) - len(failed)


# -- set-up


def docker_image() -> str | None:
    """The busybox test image (fixtures/docker.py), or None without a
    running dockerd."""
    if not shutil.which("docker") or not os.path.exists("/var/run/docker.sock"):
        return None
    if subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        return None
    return ensure_image()


@pytest.fixture
def guests() -> Iterator[list[str]]:
    """Named namespaces, and --net none containers when dockerd runs."""
    ns = Namespaces()
    names: list[str] = []
    try:
        refs = [f"netns:{ns.new('npch')}" for _ in range(NETNS_GUESTS)]
        image = docker_image()
        if image is None:
            if os.environ.get("CI"):
                pytest.fail("dockerd is not running (CI must run the chaos test with containers)")
            print("chaos: dockerd is not running: netns guests only")
        else:
            containers = Containers(image)
            for _ in range(CONTAINERS):
                name, _ = containers.run(unique("npch-"))
                names.append(name)
                refs.append(f"docker:{name}")
        yield refs
    finally:
        if names:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True, timeout=60)
        ns.cleanup()


def test_kill_9_during_random_operations_leaves_store_and_host_agreeing(
    guests: list[str],
) -> None:
    require_lab(ovs=True)
    seed = int(os.environ.get(SEED_ENV) or random.SystemRandom().randrange(1, 2**31))
    print(f"chaos: seed {seed} (replay with {SEED_ENV}={seed})")
    with lab_up(1, ovs=True) as lab:
        chaos = Chaos(lab, guests, seed)
        took = chaos.run()
        assert not chaos.fatal, chaos.fatal
        # The last word: one more kill, then a start that reconciles.
        if lab.hosts[0].agent_pid() is None:
            lab.start_agent("h1")
        lab.stop_agent("h1", signal.SIGKILL)
        lab.start_agent("h1")
        assert agent_id(lab, "h1")
        leaks, missing, pings = verify(lab, guests)
        log_tail = lab.agent_log("h1", tail=80)
    assert_gone(lab)
    outcomes = Counter(r.outcome for r in chaos.results)
    ops = len(chaos.results)
    bad = [r for r in chaos.results if r.outcome == "bad"]
    print(
        f"chaos: {ops} operations, {chaos.kills} kills "
        f"({chaos.startup_kills} during start-up), {len(leaks)} leaks in {took:.0f} s"
    )
    print(
        f"chaos: outcomes {dict(outcomes)}; {len(missing)} records without their objects; "
        f"{pings} pings passed at the end"
    )
    by_op = Counter(
        (" ".join(r.op.split()[: 1 if r.op[0] in "ad" else 2]), r.outcome) for r in chaos.results
    )
    print(
        "chaos: by operation: " + ", ".join(f"{op} {o} {n}" for (op, o), n in sorted(by_op.items()))
    )
    docker_ok = sum(1 for r in chaos.results if r.outcome == "ok" and " docker:" in r.op)
    print(
        f"chaos: guests: {sum(g.startswith('netns:') for g in guests)} namespaces, "
        f"{sum(g.startswith('docker:') for g in guests)} containers "
        f"({docker_ok} operations on containers succeeded)"
    )
    refusals = Counter(r.detail.split(":")[0] for r in chaos.results if r.outcome == "refused")
    print("chaos: refusals: " + ", ".join(f"{k} {n}" for k, n in refusals.most_common()))
    findings = [("leak", x) for x in leaks] + [("missing", x) for x in missing]
    findings += [("bad answer", f"worker {r.worker}: {r.op}: {r.detail}") for r in bad]
    # The product bugs this test found are fixed, each with a test of its
    # own below: every finding now fails the run.
    unknown = []
    for kind, text in findings:
        print(f"chaos: {kind}: {text}")
        unknown.append(f"{kind}: {text}")
    assert ops >= MIN_OPS, f"only {ops} operations ran"
    assert chaos.kills >= 10, f"only {chaos.kills} kills"
    assert outcomes["interrupted"] > 0, "no operation was interrupted by a kill"
    # A run where some kind of operation never succeeded tested little.
    never = {op for op, _ in by_op} - {op for op, o in by_op if o == "ok"}
    assert not never, f"never succeeded: {sorted(never)}"
    assert not unknown, (
        f"{len(unknown)} findings (seed {seed}):\n" + "\n".join(unknown) + "\n" + log_tail
    )


# -- the bugs chaos found, each on its own


@pytest.fixture(scope="module")
def lab1() -> Iterator[Lab]:
    require_lab(ovs=True)
    with lab_up(1, ovs=True) as lab:
        yield lab
    assert_gone(lab)


@pytest.fixture
def guest() -> Iterator[str]:
    ns = Namespaces()
    yield ns.new("npcb")
    ns.cleanup()


def guest_routes(netns: str) -> str:
    return subprocess.run(
        ["ip", "-n", netns, "route", "show"], capture_output=True, text=True, check=True
    ).stdout


def test_route_del_removes_an_on_link_route(lab1: Lab, guest: str) -> None:
    with lab1.client("h1") as c:
        c.create_bridge("rtb0", addresses=["198.19.95.1/24"])
        try:
            c.attach("rtb0", f"netns:{guest}", addresses=["198.19.95.10/24"])
            c.add_route(f"netns:{guest}", "198.19.96.0/24", ifname="eth1")  # on-link
            assert "198.19.96.0/24 dev eth1 proto 151 scope link" in guest_routes(guest)
            c.delete_route(f"netns:{guest}", "198.19.96.0/24", ifname="eth1")  # answers OK
            assert "198.19.96.0/24" not in guest_routes(guest), guest_routes(guest)
            assert c.check() == []
        finally:
            c.detach(f"netns:{guest}")
            c.delete_bridge("rtb0")


def test_an_attach_never_adopts_a_bridge_tagged_as_this_agents(lab1: Lab, guest: str) -> None:
    me = agent_id(lab1, "h1")
    lab1.exec("h1", ["ip", "link", "add", "orphbr1", "type", "bridge"])
    try:
        lab1.exec("h1", ["ip", "link", "set", "orphbr1", "alias", f"netplumb:br:{me}"])
        with lab1.client("h1") as c:
            try:
                c.attach("orphbr1", f"netns:{guest}", addresses=["198.19.68.10/24"])
            except NetplumbError:
                pass  # refusing it is fine
            adopted = [b.spec.name for b in c.list_bridges() if not b.owned]
            assert "orphbr1" not in adopted, "netplumb adopted its own bridge as foreign"
    finally:
        with lab1.client("h1") as c:
            for call in (lambda: c.detach(f"netns:{guest}"), lambda: c.delete_bridge("orphbr1")):
                try:
                    call()
                except NetplumbError:
                    pass
        lab1.exec("h1", ["ip", "link", "del", "orphbr1"], check=False)
