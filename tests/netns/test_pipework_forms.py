"""Every form of pipework's command line, through the drop-in, on named
network namespaces: the guest ends up as pipework would leave it (name,
addresses, gateway, MAC, MTU, bridge membership), and where the kernel lacks
what a form needs, it fails naming the feature and changes nothing.

The same forms on Docker containers: tests/docker/test_pipework_containers.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest
from fixtures.dhcp import client_pids, dhcp_server, leased
from fixtures.host import (
    Daemon,
    Namespaces,
    addresses,
    delete_links,
    link,
    ping,
    routes,
    run,
    unique,
)
from fixtures.pipework import PIPEWORK, pipework, stand_in_nic


def host_links() -> set[str]:
    out = run("ip", "-j", "link", "show").stdout
    return {ln["ifname"] for ln in json.loads(out)}


@pytest.fixture
def nic(netns: Namespaces) -> Iterator[tuple[str, str]]:
    """A stand-in host NIC; its peer namespace has 198.18.74.1/24."""
    with stand_in_nic(netns, "198.18.74.1/24") as found:
        yield found


# ------------------------------------------------------- host interfaces


def test_macvlan_on_an_existing_interface_and_by_its_mac(
    daemon: Daemon, netns: Namespaces, nic: tuple[str, str]
) -> None:
    name, _ = nic
    a, b = netns.new(), netns.new()
    try:
        rc, err = pipework(daemon, name, a, "198.18.74.5/24@198.18.74.1")
        assert rc == 0, err
        guest = link("eth1", a)
        assert guest is not None and guest["linkinfo"]["info_kind"] == "macvlan"
        assert guest["linkinfo"]["info_data"]["mode"] == "bridge"
        assert guest["mtu"] == link(name)["mtu"]  # type: ignore[index]  # pipework: the NIC's
        assert addresses("eth1", a) == {"198.18.74.5/24"}
        assert [r["gateway"] for r in routes(a) if r["dst"] == "default"] == ["198.18.74.1"]
        assert ping(a, "198.18.74.1")
        # mac:MAC picks the host interface by its address
        mac = link(name)["address"]  # type: ignore[index]
        rc, err = pipework(daemon, f"mac:{mac}", "-i", "eth3", b, "198.18.74.6/24")
        assert rc == 0, err
        assert link("eth3", b)["linkinfo"]["info_kind"] == "macvlan"  # type: ignore[index]
        assert ping(b, "198.18.74.5")  # two macvlans in bridge mode reach each other
        # repeating is a no-op; detach removes the macvlan only
        assert pipework(daemon, name, a, "198.18.74.5/24@198.18.74.1")[0] == 0
        assert daemon.cli("check")[0] == 0
        assert daemon.cli("detach", f"netns:{a}")[0] == 0
        assert link("eth1", a) is None and link(name) is not None
    finally:
        daemon.cli("detach", f"netns:{a}")
        daemon.cli("detach", f"netns:{b}")


def test_direct_phys_moves_the_interface_in_and_back(
    daemon: Daemon, netns: Namespaces, nic: tuple[str, str]
) -> None:
    name, _ = nic
    a = netns.new()
    before = link(name)
    assert before is not None
    try:
        rc, err = pipework(daemon, "--direct-phys", name, a, "198.18.74.7/24", "02:00:00:74:00:07")
        assert rc == 0, err
        assert link(name) is None  # gone from the host
        guest = link("eth1", a)
        assert guest is not None and guest["linkinfo"]["info_kind"] == "veth"
        assert guest["address"] == "02:00:00:74:00:07"
        assert addresses("eth1", a) == {"198.18.74.7/24"}
        assert ping(a, "198.18.74.1")
        assert daemon.cli("check")[0] == 0
        # a second guest cannot take the same interface
        rc, err = pipework(daemon, "--direct-phys", name, netns.new(), "198.18.74.8/24")
        assert rc in (3, 4), err
    finally:
        rc, _, err = daemon.cli("detach", f"netns:{a}")
    assert rc == 0, err
    back = link(name)  # pipework left it in the guest, renamed: #242
    assert back is not None and back["address"] == before["address"]
    assert link("eth1", a) is None


def test_forms_this_kernel_lacks_fail_cleanly_and_change_nothing(
    daemon: Daemon, netns: Namespaces, nic: tuple[str, str]
) -> None:
    name, _ = nic
    a = netns.new()
    status = daemon.client().status()
    features = {f.name: f.available for f in status.kernel_features}
    before = host_links()
    if not features.get("8021q"):
        rc, err = pipework(daemon, name, a, "198.18.74.9/24", "@7")
        assert rc == 4 and "802.1Q" in err and "8021q" in err, err
        rc, err = pipework(daemon, "--direct-phys", name, a, "198.18.74.9/24", "@7")
        assert rc == 4 and "802.1Q" in err, err
        assert f"{name}.7" not in host_links()
    if not features.get("dummy"):
        rc, err = pipework(daemon, unique("dummy"), a, "198.18.74.9/24")
        assert rc == 4 and "dummy" in err, err
    br = unique("brpf")
    if not features.get("bridge-vlan-filtering"):
        # @VLAN on a Linux bridge (pipework: "VLAN configuration currently unsupported")
        rc, err = pipework(daemon, br, a, "198.18.74.9/24", "02:00:00:74:00:09@7")
        assert rc == 4 and "VLAN filtering" in err, err
        daemon.cli("bridge", "del", br)
    assert link("eth1", a) is None
    assert host_links() - before <= {br} and br not in host_links()
    assert not [e for e in daemon.cli_json("ls")["endpoints"] if e["guest"] == f"netns:{a}"]
    # an IPoIB-like or unknown name: not found, nothing made
    rc, err = pipework(daemon, "nosuchif9", a, "198.18.74.9/24")
    assert rc == 3 and "do not know how to set up" in err


# ------------------------------------------------ options and addresses


def test_options_in_any_order_and_every_address_form(
    daemon: Daemon, netns: Namespaces, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)  # an existing Linux bridge
    a, b, c = netns.new(), netns.new(), netns.new()
    host = unique("npl")
    try:
        # -a, -l and -i in pipework's order and in another
        rc, err = pipework(
            daemon, bridge, "-a", "6", "-l", host, "-i", "eth5", a, "2001:db8:74::5/64"
        )
        assert rc == 0, err
        assert link(host)["master"] == bridge  # type: ignore[index]
        assert addresses("eth5", a) == {"2001:db8:74::5/64"}
        # the same without -a: the family is inferred; with a gateway
        rc, err = pipework(daemon, bridge, b, "2001:db8:74::6/64@2001:db8:74::1")
        assert rc == 0, err
        assert [r["gateway"] for r in routes(b, "-6") if r["dst"] == "default"] == [
            "2001:db8:74::1"
        ]
        # static IPv6 works with busybox installed (pipework's ipcalc bug)
        assert ping(a, "2001:db8:74::6")
        # a gateway outside the subnet gets an on-link host route (failover IPs)
        rc, err = pipework(daemon, bridge, "-i", "eth2", c, "198.18.75.5/32@198.18.74.1")
        assert rc == 0, err
        r4 = routes(c)
        assert any(r["dst"] == "198.18.74.1" and r.get("scope") == "link" for r in r4), r4
        assert [r["gateway"] for r in r4 if r["dst"] == "default"] == ["198.18.74.1"]
        # 0/0: the interface, up, with no address
        rc, err = pipework(daemon, bridge, "-i", "eth3", c, "0/0")
        assert rc == 0, err
        assert addresses("eth3", c) == set() and "UP" in link("eth3", c)["flags"]  # type: ignore[index]
    finally:
        for ns in (a, b, c):
            daemon.cli("detach", f"netns:{ns}")


def test_usage_errors_exit_2_and_change_nothing(daemon: Daemon, netns: Namespaces) -> None:
    a = netns.new()
    before = host_links()
    for argv in (
        [],
        ["brx", a],
        ["brx", a, "198.18.74.5"],  # no prefix length
        ["brx", a, "198.18.74.5/24", "02:00:00:00:00:01@5000"],
        ["brx", "-a", "5", a, "198.18.74.5/24"],
        ["brx", "-i"],
        ["route", a],
        ["--wait", "--timeout", "-1"],
    ):
        rc, err = pipework(daemon, *argv)
        assert rc == 2, (argv, err)
    assert host_links() == before
    assert link("eth1", a) is None


def test_fourth_argument_mac_and_u_string(daemon: Daemon, netns: Namespaces, bridge: str) -> None:
    daemon.cli("bridge", "add", bridge)  # an existing Linux bridge
    a, b = netns.new(), netns.new()
    try:
        assert pipework(daemon, bridge, a, "198.18.76.5/24", "02:00:00:76:00:05")[0] == 0
        assert link("eth1", a)["address"] == "02:00:00:76:00:05"  # type: ignore[index]
        assert pipework(daemon, bridge, b, "198.18.76.6/24", "U:db1")[0] == 0
        assert link("eth1", b)["address"] == "02:79:56:6c:a5:67"  # type: ignore[index]
    finally:
        daemon.cli("detach", f"netns:{a}")
        daemon.cli("detach", f"netns:{b}")


# ------------------------------------------------------ rule, tc, route


def test_rule_and_tc_are_applied_recorded_and_restored(
    daemon: Daemon, netns: Namespaces, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)  # an existing Linux bridge
    a = netns.new()
    try:
        assert pipework(daemon, bridge, a, "198.18.77.5/24")[0] == 0
        g = f"netns:{a}"
        rc, err = pipework(
            daemon, "rule", g, "add", "from", "198.18.77.0/24", "table", "77", "pref", "77"
        )
        assert rc == 0, err
        rc, err = pipework(
            daemon,
            "tc",
            g,
            "qdisc",
            "add",
            "dev",
            "eth1",
            "root",
            "tbf",
            "rate",
            "10mbit",
            "burst",
            "32kbit",
            "latency",
            "400ms",
        )
        assert rc == 0, err
        rc, err = pipework(daemon, "route", g, "add", "198.19.77.0/24", "via", "198.18.77.1")
        assert rc == 0, err

        def state() -> tuple[str, str, str]:
            rule = run("ip", "-n", a, "rule", "show").stdout
            qdisc = run("ip", "netns", "exec", a, "tc", "qdisc", "show", "dev", "eth1").stdout
            route = run("ip", "-n", a, "route", "show", "198.19.77.0/24").stdout
            return rule, qdisc, route

        rule, qdisc, route = state()
        assert "77:\tfrom 198.18.77.0/24 lookup 77" in rule and "tbf" in qdisc and route
        ep = daemon.cli_json("ls")["endpoints"]
        mine = next(e for e in ep if e["guest"] == g)
        assert mine["rules"] == ["priority 77 from 198.18.77.0/24 lookup 77"]
        assert mine["tc"][0]["args"][:5] == ["qdisc", "add", "dev", "eth1", "root"]
        # repeating is a no-op (tc itself would say "File exists")
        assert (
            pipework(
                daemon, "rule", g, "add", "from", "198.18.77.0/24", "table", "77", "pref", "77"
            )[0]
            == 0
        )
        # the interface is lost (as in a restart): a reconcile re-creates it
        # with everything recorded
        run("ip", "-n", a, "link", "del", "eth1")
        run("ip", "-n", a, "rule", "del", "pref", "77")
        assert daemon.cli("reconcile")[0] == 0
        rule, qdisc, route = state()
        assert "lookup 77" in rule and "tbf" in qdisc and route
        # tc refuses what it does not know: its own message, nothing recorded
        rc, err = pipework(daemon, "tc", g, "qdisc", "add", "dev", "eth1", "root", "nosuchqdisc")
        assert rc == 4 and "tc qdisc add" in err
        # del forgets
        assert (
            pipework(
                daemon, "rule", g, "del", "from", "198.18.77.0/24", "table", "77", "pref", "77"
            )[0]
            == 0
        )
        assert pipework(daemon, "tc", g, "qdisc", "del", "dev", "eth1", "root")[0] == 0
        mine = next(e for e in daemon.cli_json("ls")["endpoints"] if e["guest"] == g)
        assert mine.get("rules", []) == [] and mine.get("tc", []) == []
        assert "lookup 77" not in run("ip", "-n", a, "rule", "show").stdout
    finally:
        daemon.cli("detach", f"netns:{a}")


# ----------------------------------------------------------------- --wait


def test_wait_returns_once_the_interface_is_up_with_an_address(
    daemon: Daemon, netns: Namespaces, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)  # an existing Linux bridge
    a = netns.new()
    env = {**os.environ, "NETPLUMB_SOCKET": daemon.socket}
    waiter = subprocess.Popen(
        ["ip", "netns", "exec", a, PIPEWORK, "--wait", "-i", "eth4", "--timeout", "30"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert waiter.poll() is None  # nothing there yet: still waiting
        assert pipework(daemon, bridge, "-i", "eth4", a, "198.18.78.5/24")[0] == 0
        assert waiter.wait(15) == 0
        assert addresses("eth4", a) == {"198.18.78.5/24"}
    finally:
        waiter.kill()
        waiter.wait()
        daemon.cli("detach", f"netns:{a}")
    rc, err = pipework(daemon, "--wait", "-i", "eth9", "--timeout", "0.3", netns=a)
    assert rc == 5 and "not up with an address" in err


# ------------------------------------------------------------------- DHCP


@pytest.mark.parametrize(
    "form",
    ["dhcp", "udhcpc", "udhcpc-f", "dhclient", "dhclient-f", "dhcpcd", "udhcpc:-O staticroutes"],
)
def test_dhcp_clients_get_a_lease_from_dnsmasq(
    daemon: Daemon, netns: Namespaces, bridge: str, form: str
) -> None:
    with dhcp_server(daemon, netns, bridge) as server:
        a = netns.new()
        try:
            rc, err = pipework(daemon, bridge, a, form, "U:dhcp-test")
            assert rc == 0, err
            have = addresses("eth1", a)
            assert len(have) == 1 and leased(next(iter(have)), server), have
            assert [r["gateway"] for r in routes(a) if r["dst"] == "default"] == [server.address]
            assert ping(a, server.address)
            assert any("02:04:c9:06:2c:0d" in line for line in server.leases()), server.leases()
            ino = os.stat(f"/run/netns/{a}").st_ino
            kept = form.endswith("-f")
            assert bool(client_pids(ino)) == kept, (form, client_pids(ino))
            ep = next(e for e in daemon.cli_json("ls")["endpoints"] if e["guest"] == f"netns:{a}")
            assert ep["spec"]["dhcp"]["client"] == form.split(":")[0].removesuffix("-f")
            # the host's resolv.conf is not the client's to touch: our hook ran
            rc, _, err = daemon.cli("detach", f"netns:{a}")
            assert rc == 0, err
            assert client_pids(ino) == []
        finally:
            daemon.cli("detach", f"netns:{a}")


def test_kept_client_is_restarted_and_a_missing_server_fails_cleanly(
    daemon: Daemon, netns: Namespaces, bridge: str
) -> None:
    with dhcp_server(daemon, netns, bridge, net="198.18.73") as server:
        a = netns.new()
        try:
            assert pipework(daemon, bridge, a, "udhcpc-f")[0] == 0
            ino = os.stat(f"/run/netns/{a}").st_ino
            (pid,) = client_pids(ino)
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while not [p for p in client_pids(ino) if p != pid]:
                assert time.monotonic() < deadline, "the kept client was not restarted"
                time.sleep(0.2)
            deadline = time.monotonic() + 15
            while not addresses("eth1", a):
                assert time.monotonic() < deadline
                time.sleep(0.2)
            assert leased(next(iter(addresses("eth1", a))), server)
        finally:
            daemon.cli("detach", f"netns:{a}")
    # no server on this bridge: the attach fails after its timeout and
    # leaves nothing behind
    b = netns.new()
    lonely = unique("brnd")
    try:
        rc, err = pipework(daemon, lonely, b, "udhcpc")
        assert rc == 5 and "no DHCP lease" in err, err
        assert link("eth1", b) is None
        assert not [e for e in daemon.cli_json("ls")["endpoints"] if e["guest"] == f"netns:{b}"]
        assert client_pids(os.stat(f"/run/netns/{b}").st_ino) == []
    finally:
        daemon.cli("detach", f"netns:{b}")
        daemon.cli("bridge", "del", lonely)
        delete_links([lonely])
