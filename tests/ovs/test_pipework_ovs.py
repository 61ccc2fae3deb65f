"""pipework's OVS forms through the drop-in on a host with its own OVS: a
missing ovs* name creates an OVS bridge, an OVS bridge made outside
netplumb (with ovs-vsctl, as pipework users have them) is used as it is,
and @VLAN becomes the port's tag."""

from __future__ import annotations

import subprocess

from fixtures.host import run, unique
from fixtures.lab import Lab


def pipework(lab: Lab, *argv: str) -> subprocess.CompletedProcess[str]:
    pw = lab.netplumb_cli.replace("netplumb", "pipework")
    return lab.exec("h1", [pw, *argv], check=False)


def bridges(lab: Lab) -> list[str]:
    return lab.vsctl("h1", "list-br").stdout.split()


def ping(ns: str, address: str) -> bool:
    for _ in range(3):  # the userspace datapath may drop the very first packet
        res = subprocess.run(
            ["ip", "netns", "exec", ns, "ping", "-c1", "-W2", address], capture_output=True
        )
        if res.returncode == 0:
            return True
    return False


def test_ovs_bridge_forms_and_vlan_tags(lab1: Lab) -> None:
    created = unique("ovspw")  # missing, starting with ovs: an OVS bridge is created
    foreign = unique("brfo")  # made with ovs-vsctl, not by netplumb
    a, b, c = (unique("npo-") for _ in range(3))
    for ns in (a, b, c):
        run("ip", "netns", "add", ns)
    lab1.vsctl("h1", "add-br", foreign, "--", "set", "bridge", foreign, "datapath_type=netdev")
    try:
        res = pipework(lab1, created, a, "198.19.60.5/24", "@12")
        assert res.returncode == 0, res.stderr
        res = pipework(lab1, created, "-i", "eth2", b, "198.19.60.6/24", "02:00:00:60:00:06@12")
        assert res.returncode == 0, res.stderr
        res = pipework(lab1, created, c, "198.19.60.7/24", "@13")  # another VLAN
        assert res.returncode == 0, res.stderr
        assert created in bridges(lab1)
        ports = lab1.vsctl("h1", "list-ports", created).stdout.split()
        tags = {p: lab1.vsctl("h1", "get", "port", p, "tag").stdout.strip() for p in ports}
        assert sorted(tags.values()) == ["12", "12", "13"], tags
        assert ping(a, "198.19.60.6")  # same VLAN
        assert not ping(a, "198.19.60.7")  # another VLAN: isolated
        # an OVS bridge netplumb did not make: used, never owned
        res = pipework(lab1, foreign, "-i", "eth3", a, "198.19.61.5/24")
        assert res.returncode == 0, res.stderr
        assert len(lab1.vsctl("h1", "list-ports", foreign).stdout.split()) == 1
    finally:
        for ns in (a, b, c):
            lab1.netplumb("h1", "detach", f"netns:{ns}")
            run("ip", "netns", "del", ns, check=False)
        lab1.netplumb("h1", "bridge", "del", created)
        lab1.netplumb("h1", "bridge", "del", foreign)
    # the foreign bridge is still there (netplumb forgot it), and only that
    assert foreign in bridges(lab1)
    assert lab1.vsctl("h1", "list-ports", foreign).stdout.split() == []
    assert created not in bridges(lab1)
    lab1.vsctl("h1", "del-br", foreign)
