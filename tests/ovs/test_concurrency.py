"""Concurrency: many clients attaching to one bridge at once, and the per-guest
lock (operations on one guest are serialised, on different guests they are
not), on a lab host with its own OVS and netplumbd.

The serialisation is shown without clocks: an attach to an OVS bridge is held
inside the daemon by stopping ovsdb-server (SIGSTOP: its transaction waits for
an answer, with the guest's lock held). While it is held, an attach of
another guest completes, and a second attach of the same guest does not
start; after SIGCONT both finish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fixtures.host import Namespaces
from fixtures.lab import Lab, agent_id
from netplumb.cli.client import NetplumbError

CLIENTS = 50


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    ns = Namespaces()
    yield ns
    ns.cleanup()


def host_links(lab: Lab, **filters: str) -> list[dict[str, Any]]:
    argv = ["ip", "-d", "-j", "link", "show"]
    for k, v in filters.items():
        argv += [k, v]
    out = lab.exec("h1", argv).stdout
    return json.loads(out) if out.strip() else []


def stored_endpoints(lab: Lab) -> list[dict[str, Any]]:
    state = Path(lab.hosts[0].state_dir) / "state.json"
    return list(json.loads(state.read_text())["endpoints"])


def ping_all(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Ping every (netns, address) at once; the pairs that got no answer."""
    procs = [
        (
            pair,
            subprocess.Popen(
                ["ip", "netns", "exec", pair[0], "ping", "-c1", "-W2", pair[1]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            ),
        )
        for pair in pairs
    ]
    return [pair for pair, p in procs if p.wait(30) != 0]


def remove(lab: Lab, bridge: str, guests: list[str]) -> None:
    with lab.client("h1") as c:
        for g in guests:
            try:
                c.detach(f"netns:{g}")
            except Exception:
                pass
        try:
            c.delete_bridge(bridge)
        except Exception:
            pass


@pytest.mark.parametrize("kind", ["linux", "ovs"])
def test_fifty_clients_attach_to_one_bridge_at_once(
    lab1: Lab, netns: Namespaces, kind: str
) -> None:
    bridge = f"cc{kind[0]}0"
    guests = [netns.new("npcc") for _ in range(CLIENTS)]
    address = {g: f"198.19.70.{10 + i}" for i, g in enumerate(guests)}
    with lab1.client("h1") as c:
        c.create_bridge(bridge, kind=kind, addresses=["198.19.70.1/24"])
    try:
        start = threading.Barrier(CLIENTS)

        def attach(g: str) -> Any:
            # Each client its own gRPC channel, all released at once.
            with lab1.client("h1", timeout=120) as c:
                start.wait(60)
                return c.attach(bridge, f"netns:{g}", addresses=[f"{address[g]}/24"])

        with ThreadPoolExecutor(CLIENTS) as pool:
            futures = {g: pool.submit(attach, g) for g in guests}
            t0 = time.monotonic()
            errors = {g: f.exception() for g, f in futures.items() if f.exception()}
            took = time.monotonic() - t0
            assert not errors, f"{len(errors)} attaches failed: {list(errors.values())[:3]}"
            eps = {g: f.result() for g, f in futures.items()}
        print(
            f"concurrency: {CLIENTS} clients attached to one {kind} bridge at once in {took:.2f}s"
        )

        # Distinct interfaces, each the one asked for.
        assert len({ep.host_ifname for ep in eps.values()}) == CLIENTS
        assert len({ep.id for ep in eps.values()}) == CLIENTS
        assert len({ep.mac for ep in eps.values()}) == CLIENTS
        for g, ep in eps.items():
            assert ep.guest == f"netns:{g}" and list(ep.addresses) == [f"{address[g]}/24"]

        # The store: exactly these 50 records on this bridge.
        stored = [r for r in stored_endpoints(lab1) if r["spec"]["bridge"] == bridge]
        assert sorted(r["id"] for r in stored) == sorted(ep.id for ep in eps.values())
        assert {r["host_ifname"] for r in stored} == {ep.host_ifname for ep in eps.values()}
        with lab1.client("h1") as c:
            assert len(c.list_endpoints(bridge=bridge)) == CLIENTS
            assert c.check() == []

        # The host: 50 tagged veths, all ports of the bridge.
        me = agent_id(lab1, "h1")
        tagged = {
            link["ifname"]: link.get("ifalias", "")
            for link in host_links(lab1, type="veth")
            if link.get("ifalias", "").startswith("netplumb:ep:")
            and link["ifalias"].endswith(f":{me}")
        }
        ours = {ep.host_ifname: f"netplumb:ep:{ep.id}:{me}" for ep in eps.values()}
        assert tagged == ours
        if kind == "linux":
            ports = {link["ifname"] for link in host_links(lab1, master=bridge)}
        else:
            ports = set(lab1.vsctl("h1", "list-ports", bridge).stdout.split())
        assert ports == set(ours)
        # Every guest has its address and reaches the bridge.
        for g in guests:
            shown = json.loads(
                subprocess.run(
                    ["ip", "-n", g, "-j", "addr", "show", "dev", "eth1"],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
            )
            got = {f"{a['local']}/{a['prefixlen']}" for a in shown[0]["addr_info"]}
            assert f"{address[g]}/24" in got
        assert ping_all([(g, "198.19.70.1") for g in guests]) == []
        assert ping_all([(guests[0], address[g]) for g in guests[1:10]]) == []
    finally:
        remove(lab1, bridge, guests)


def _done_within(fut: Future[Any], timeout: float) -> bool:
    try:
        fut.exception(timeout)
        return True
    except TimeoutError:
        return False


def _wait_for(cond: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_operations_on_one_guest_are_serialised_on_different_guests_not(
    lab1: Lab, netns: Namespaces
) -> None:
    g1, g2 = netns.new("npcs"), netns.new("npcs")
    with lab1.client("h1") as c:
        c.create_bridge("csovs", kind="ovs", addresses=["198.19.71.1/24"])
        c.create_bridge("cslin", addresses=["198.19.72.1/24"])
    db_pid = lab1.hosts[0].ovs_pid("ovsdb-server")
    assert db_pid is not None
    try:

        def attach(bridge: str, guest: str, address: str, ifname: str) -> Any:
            with lab1.client("h1", timeout=60) as c:
                return c.attach(bridge, f"netns:{guest}", addresses=[address], ifname=ifname)

        with ThreadPoolExecutor(3) as pool:
            # A: g1 eth1 onto the OVS bridge; its OVSDB transaction cannot be
            # answered while ovsdb-server is stopped, so A holds g1's lock.
            os.kill(db_pid, signal.SIGSTOP)
            try:
                a = pool.submit(attach, "csovs", g1, "198.19.71.10/24", "eth1")
                # A's veth exists once it is inside the engine, lock held.
                inside = _wait_for(
                    lambda: (
                        subprocess.run(
                            ["ip", "-n", g1, "link", "show", "eth1"], capture_output=True
                        ).returncode
                        == 0
                    ),
                    10,
                )
                assert inside and not a.done(), "attach A did not reach its OVS transaction"
                # B: the same guest, another interface, on the Linux bridge.
                b = pool.submit(attach, "cslin", g1, "198.19.72.10/24", "eth2")
                # C: another guest on the Linux bridge: not held up by A.
                t0 = time.monotonic()
                c = pool.submit(attach, "cslin", g2, "198.19.72.20/24", "eth1")
                assert _done_within(c, 30), "an attach of another guest waited for A"
                c_took = time.monotonic() - t0
                c_ep = c.result()
                assert c_ep.guest == f"netns:{g2}"
                # A is still held, and B has not started: g1 has no eth2.
                assert not a.done() and not b.done()
                eth2 = subprocess.run(["ip", "-n", g1, "link", "show", "eth2"], capture_output=True)
                assert eth2.returncode != 0, "B plumbed g1 while A held g1's lock"
            finally:
                os.kill(db_pid, signal.SIGCONT)
                released = time.monotonic()
            a_ep, b_ep = a.result(60), b.result(60)
            b_after = time.monotonic() - released
        print(
            f"serialisation: other guest's attach done in {c_took * 1000:.0f} ms while the held "
            f"attach waited; same guest's attach done {b_after * 1000:.0f} ms after the release"
        )
        assert (a_ep.ifname, b_ep.ifname) == ("eth1", "eth2")
        assert ping_all([(g1, "198.19.71.1"), (g1, "198.19.72.1"), (g2, "198.19.72.10")]) == []
    finally:
        os.kill(db_pid, signal.SIGCONT)
        with lab1.client("h1") as c:
            for g in (g1, g2):
                try:
                    c.detach(f"netns:{g}")
                except Exception:
                    pass
            for br in ("csovs", "cslin"):
                try:
                    c.delete_bridge(br)
                except Exception:
                    pass


def test_peer_add_racing_a_bridge_delete_succeeds(lab1: Lab) -> None:
    """A peer add is held inside the daemon on an OVS overlay bridge (its
    tunnel's OVSDB transaction cannot be answered while ovsdb-server is
    stopped) after it has read the bridge records; meanwhile a Linux overlay
    bridge later in its list is deleted. The peer add must still succeed."""
    h = lab1.hosts[0]
    peer = "198.18.0.61"
    with lab1.client("h1") as c:
        c.create_bridge("craa", kind="ovs", vni=4902)
        c.create_bridge("crlz", kind="linux", vni=4903)
    db_pid = h.ovs_pid("ovsdb-server")
    assert db_pid is not None
    state = Path(h.state_dir) / "state.json"
    try:
        with ThreadPoolExecutor(1) as pool:
            os.kill(db_pid, signal.SIGSTOP)
            try:

                def add() -> Any:
                    with lab1.client("h1", timeout=60) as c:
                        return c.add_peer(peer)

                added = pool.submit(add)
                # Recorded, then held on craa (bridges are re-planned by name).
                assert _wait_for(lambda: peer in state.read_text(), 10)
                with lab1.client("h1") as c:
                    assert c.delete_bridge("crlz").existed
                assert not added.done()
            finally:
                os.kill(db_pid, signal.SIGCONT)
            failure = added.exception(60)
        assert failure is None, f"peer add answered {failure!r}"
        with lab1.client("h1") as c:
            assert [p.address for p in c.list_peers()] == [peer]
            assert c.check() == []
    finally:
        os.kill(db_pid, signal.SIGCONT)
        with lab1.client("h1") as c:
            for call in (
                lambda: c.remove_peer(peer),
                lambda: c.delete_bridge("craa"),
                lambda: c.delete_bridge("crlz"),
            ):
                try:
                    call()
                except Exception:
                    pass


def test_peer_changes_during_ovs_attaches_answer_sensibly(lab1: Lab, netns: Namespaces) -> None:
    """Endpoints come and go on an OVS bridge while peers come and go (every
    peer change re-plans the overlay's tunnels from our OVS ports). Stops at
    the first wrong answer; 30 s without one passes (a 60 s run here gave 19
    wrong answers out of 440 peer changes)."""
    guests = [netns.new("npci") for _ in range(6)]
    with lab1.client("h1") as c:
        c.create_bridge("cip", kind="ovs")
        c.create_bridge("cio", kind="ovs", vni=4905)
    stop = threading.Event()
    wrong: list[str] = []

    def churn(i: int) -> None:
        with lab1.client("h1", timeout=60) as c:
            while not stop.is_set():
                try:
                    c.attach("cip", f"netns:{guests[i]}", addresses=[f"198.19.73.{10 + i}/24"])
                    c.detach(f"netns:{guests[i]}")
                except NetplumbError as e:
                    wrong.append(f"attach/detach: {e.code.name} {e.message}")
                    stop.set()

    def peers(j: int) -> None:
        with lab1.client("h1", timeout=60) as c:
            while not stop.is_set():
                try:
                    c.add_peer(f"198.18.0.{70 + j}")
                    c.remove_peer(f"198.18.0.{70 + j}")
                except NetplumbError as e:
                    wrong.append(f"peer add/del: {e.code.name} {e.message}")
                    stop.set()

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(len(guests))]
    threads += [threading.Thread(target=peers, args=(j,)) for j in range(3)]
    try:
        for t in threads:
            t.start()
        stop.wait(30)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        with lab1.client("h1") as c:
            for call in [lambda j=j: c.remove_peer(f"198.18.0.{70 + j}") for j in range(3)] + [
                lambda g=g: c.detach(f"netns:{g}") for g in guests
            ]:
                try:
                    call()
                except NetplumbError:
                    pass
            c.delete_bridge("cip")
            c.delete_bridge("cio")
    assert not wrong, wrong[0]
