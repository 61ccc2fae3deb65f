"""OVS bridges on one host: ownership, OVS going away and coming back, and
the userspace datapath's routing precondition for tunnels."""

from __future__ import annotations

import json
import os
import subprocess
import time

from fixtures.host import run, unique
from fixtures.lab import Lab


def np(lab: Lab, *args: str) -> tuple[int, dict[str, object], str]:
    res = lab.netplumb("h1", "--json", *args)
    return res.returncode, (json.loads(res.stdout) if res.stdout.strip() else {}), res.stderr


def test_ovs_bridge_rows_are_tagged_and_deleted_with_their_ports(lab1: Lab) -> None:
    ns = unique("npo-")
    run("ip", "netns", "add", ns)
    try:
        rc, _, err = np(
            lab1, "bridge", "add", "obr1", "--kind", "ovs", "--address", "198.19.40.1/24"
        )
        assert rc == 0, err
        agent = lab1.vsctl(
            "h1", "get", "bridge", "obr1", "external_ids:netplumb-owner"
        ).stdout.strip()
        assert agent.strip('"')
        rc, tagged, err = np(
            lab1,
            "attach",
            "obr1",
            f"netns:{ns}",
            "198.19.41.10/24",
            "--vlan",
            "7",
            "--ifname",
            "eth7",
        )
        assert rc == 0, err
        assert (
            lab1.vsctl("h1", "get", "port", str(tagged["host_ifname"]), "tag").stdout.strip() == "7"
        )
        rc, ep, err = np(lab1, "attach", "obr1", f"netns:{ns}", "198.19.40.10/24")
        assert rc == 0, err
        port = str(ep["host_ifname"])
        ids = lab1.vsctl("h1", "get", "port", port, "external_ids").stdout
        assert "netplumb-endpoint" in ids and str(ep["id"]) in ids
        # the userspace datapath: tx checksum offload off on the guest end
        k = run("ip", "netns", "exec", ns, "ethtool", "-k", "eth1").stdout
        assert "tx-checksumming: off" in k
        assert (
            subprocess.run(
                ["ip", "netns", "exec", ns, "ping", "-c1", "-W2", "198.19.40.1"],
                capture_output=True,
            ).returncode
            == 0
        )
        np(lab1, "detach", f"netns:{ns}")
        ports = lab1.vsctl("h1", "list-ports", "obr1").stdout
        assert port not in ports and str(tagged["host_ifname"]) not in ports  # no stale rows
        rc, out, _ = np(lab1, "bridge", "del", "obr1")
        assert rc == 0 and out == {"existed": True, "deleted_link": True}
        assert "obr1" not in lab1.vsctl("h1", "list-br").stdout
    finally:
        run("ip", "netns", "del", ns, check=False)
        np(lab1, "bridge", "del", "obr1")


def test_an_existing_ovs_bridge_is_adopted_not_owned(lab1: Lab) -> None:
    lab1.vsctl("h1", "add-br", "theirs0", "--", "set", "bridge", "theirs0", "datapath_type=netdev")
    try:
        rc, b, err = np(lab1, "bridge", "add", "theirs0", "--kind", "ovs")
        assert rc == 0, err
        assert b["owned"] is False
        rc, out, _ = np(lab1, "bridge", "del", "theirs0")
        assert out == {"existed": True, "deleted_link": False}
        assert "theirs0" in lab1.vsctl("h1", "list-br").stdout
    finally:
        lab1.vsctl("h1", "--if-exists", "del-br", "theirs0")


def test_linux_bridges_work_while_ovs_is_down_and_ovs_is_found_when_back(lab1: Lab) -> None:
    lab1.stop_ovs("h1")
    try:
        rc, _, err = np(lab1, "bridge", "add", "obr2", "--kind", "ovs")
        assert rc == 5, err
        assert "Open vSwitch is not reachable" in err
        rc, _, err = np(lab1, "bridge", "add", "lbr2")
        assert rc == 0, err
        status = lab1.netplumb("h1", "--json", "status")
        deps = {d["name"]: d for d in json.loads(status.stdout)["dependencies"]}
        assert deps["ovsdb"]["up"] is False and deps["ovsdb"]["enabled"] is True
    finally:
        lab1.start_ovs("h1")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rc, _, err = np(lab1, "bridge", "add", "obr2", "--kind", "ovs")
        if rc == 0:
            break
        time.sleep(0.2)
    assert rc == 0, err
    np(lab1, "bridge", "del", "obr2")
    np(lab1, "bridge", "del", "lbr2")


def test_peer_add_needs_the_underlay_on_an_ovs_bridge_with_the_userspace_datapath(
    lab1: Lab,
) -> None:
    """A second agent in the same host whose underlay address sits on a plain
    veth: the userspace datapath could not route tunnel packets from it."""
    h = lab1.hosts[0]
    work = os.path.join(str(lab1.workdir), "h1", "agent2")
    os.makedirs(work, exist_ok=True)
    sock = os.path.join(work, "np.sock")
    lab1.exec("h1", ["ip", "link", "add", "under0", "type", "veth", "peer", "name", "under1"])
    lab1.exec("h1", ["ip", "addr", "add", "198.18.0.200/24", "dev", "under0"])
    lab1.exec("h1", ["ip", "link", "set", "under0", "up"])
    agent = subprocess.Popen(
        lab1.exec_argv(
            "h1",
            [
                lab1.netplumbd,
                "--socket",
                sock,
                "--state-dir",
                os.path.join(work, "state"),
                "--ovsdb",
                h.ovsdb,
                "--underlay-address",
                "198.18.0.200",
                "--metrics-address",  # h1's own agent holds 127.0.0.1:9464 there
                "off",
            ],
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def np2(*args: str) -> subprocess.CompletedProcess[str]:
            return lab1.exec(
                "h1", [lab1.netplumb_cli, "--socket", sock, "--json", *args], check=False
            )

        deadline = time.monotonic() + 15
        while np2("status").returncode != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert np2("bridge", "add", "obr3", "--kind", "ovs", "--vni", "300").returncode == 0
        res = np2("peer", "add", "198.18.0.201")
        assert res.returncode == 4, res.stdout
        err = json.loads(res.stdout)["error"]
        assert err["code"] == "FAILED_PRECONDITION"
        assert "under0" in err["message"] and "br-phy" in err["hint"]
        assert json.loads(np2("peer", "ls").stdout)["peers"] == []
        np2("bridge", "del", "obr3")
    finally:
        agent.terminate()
        agent.wait(10)
        lab1.exec("h1", ["ip", "link", "del", "under0"], check=False)


def test_many_peers_in_one_call_all_or_nothing(lab1: Lab) -> None:
    rc, _, err = np(lab1, "bridge", "add", "obr5", "--kind", "ovs", "--vni", "305")
    assert rc == 0, err
    try:
        rc, out, err = np(lab1, "peer", "add", "198.18.0.51", "198.18.0.52")
        assert rc == 0, err
        assert [p["address"] for p in out["peers"]] == ["198.18.0.51", "198.18.0.52"]  # type: ignore[index]
        ports = lab1.vsctl("h1", "list-ports", "obr5").stdout.split()
        assert len([p for p in ports if p.startswith("nt")]) == 2
        own = lab1.hosts[0].underlay_address
        rc, _, err = np(lab1, "peer", "add", "198.18.0.53", own)
        assert rc == 4 and "own underlay address" in err
        _, listed, _ = np(lab1, "peer", "ls")
        assert [p["address"] for p in listed["peers"]] == ["198.18.0.51", "198.18.0.52"]  # type: ignore[index]
    finally:
        for peer in ("198.18.0.51", "198.18.0.52", "198.18.0.53"):
            np(lab1, "peer", "del", peer)
        np(lab1, "bridge", "del", "obr5")
    assert not [p for p in lab1.vsctl("h1", "list-br").stdout.split() if p == "obr5"]
