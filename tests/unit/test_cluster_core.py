"""Cluster mode's pure part: network definitions, documents, address
candidates, the peer list a host registry means, the names table."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netplumb.agent.core import cluster, spec
from netplumb.agent.core.model import BridgeKind
from netplumb.agent.errors import InvalidSpec

ip = ipaddress.ip_address


def test_network_defaults_and_validation() -> None:
    n = spec.network_spec("web", "198.19.10.0/24", 10)
    assert (n.gateway, n.dns, n.kind, n.tunnel) == (
        ip("198.19.10.1"),
        ip("198.19.10.1"),
        BridgeKind.LINUX,
        "vxlan",
    )
    n6 = spec.network_spec(
        "v6", "2001:db8:10::/64", 11, kind="ovs", tunnel="geneve", dns="2001:db8:10::53"
    )
    assert n6.gateway == ip("2001:db8:10::1") and n6.dns == ip("2001:db8:10::53")
    for bad in (
        dict(name="web_1", subnet="198.19.10.0/24", vni=1),  # not a DNS label
        dict(name="web", subnet="198.19.10.1/24", vni=1),  # host bits
        dict(name="web", subnet="198.19.10.0/31", vni=1),  # too small
        dict(name="web", subnet="198.19.10.0/24", vni=0),
        dict(name="web", subnet="198.19.10.0/24", vni=1 << 24),
        dict(name="web", subnet="198.19.10.0/24", vni=1, gateway="198.19.11.1"),
        dict(name="web", subnet="198.19.10.0/24", vni=1, gateway="198.19.10.255"),
        dict(name="web", subnet="198.19.10.0/24", vni=1, tunnel="ipip"),
    ):
        with pytest.raises(InvalidSpec):
            spec.network_spec(**bad)  # type: ignore[arg-type]


def test_documents_round_trip_and_the_bridge_every_host_builds() -> None:
    n = spec.network_spec("web", "198.19.10.0/24", 10, dns="198.19.10.53")
    assert cluster.network_from_doc(cluster.network_to_doc(n)) == n
    b = cluster.bridge_for(n)
    assert b.name == "web" and b.vni == 10
    assert [str(a) for a in b.addresses] == ["198.19.10.1/24", "198.19.10.53/24"]
    mac = cluster.network_mac("web")
    assert mac == cluster.network_mac("web") != cluster.network_mac("db")
    assert int(mac[:2], 16) & 0b11 == 0b10  # locally administered unicast
    with pytest.raises((KeyError, ValueError)):
        cluster.network_from_doc({"name": "x", "subnet": "nope", "vni": 1})


def test_candidates_skip_reserved_and_taken_and_start_apart() -> None:
    n = spec.network_spec("web", "198.19.10.0/29", 10)  # .0 net, .1 gw, .7 broadcast
    got = list(cluster.candidates(n, {ip("198.19.10.3")}, "e1"))
    assert sorted(map(str, got)) == ["198.19.10.2", "198.19.10.4", "198.19.10.5", "198.19.10.6"]
    starts = {
        next(cluster.candidates(spec.network_spec("b", "198.19.0.0/16", 1), set(), f"e{i}"))
        for i in range(20)
    }
    assert len(starts) > 15  # different endpoints start at different points
    assert cluster.free_count(n, 1) == 4


@given(
    st.integers(min_value=22, max_value=30),
    st.sets(st.integers(0, 1023), max_size=40),
    st.text(max_size=8),
)
def test_candidates_are_unique_free_hosts_of_the_subnet(
    plen: int, taken_ix: set[int], seed: str
) -> None:
    n = spec.network_spec("p", f"198.19.0.0/{plen}", 5)
    taken = {n.subnet.network_address + i for i in taken_ix if i < n.subnet.num_addresses}
    got = list(cluster.candidates(n, taken, seed))
    assert len(got) == len(set(got))
    assert all(a in n.subnet for a in got)
    assert not (set(got) & (taken | cluster.reserved(n)))
    assert len(got) == n.subnet.num_addresses - len(taken | cluster.reserved(n))


def test_peers_from_the_host_registry() -> None:
    hosts = {
        "hosts/h1": {"underlay": "198.18.0.11"},
        "hosts/h2": {"underlay": "198.18.0.12"},
        "hosts/h3": {"underlay": "not-an-ip"},
        "hosts/h4": {"underlay": "198.18.0.11"},  # claims our address: skipped
    }
    assert cluster.peers_from_hosts(hosts, "h1", "198.18.0.11") == {ip("198.18.0.12"): "h2"}


def test_names_table_and_owners() -> None:
    names = {
        "names/web/DB": {"host": "h1", "endpoint": "e1", "addresses": ["198.19.10.5"]},
        "names/web/api": {
            "host": "h2",
            "endpoint": "e2",
            "addresses": ["198.19.10.6", "2001:db8::6"],
        },
        "names/broken": {},
    }
    t = cluster.names_table(names)
    assert t[("web", "db")] == ["198.19.10.5"]
    assert t[("web", "api")] == ["198.19.10.6", "2001:db8::6"]
    assert cluster.endpoint_owner(names["names/web/DB"], "h1") == "e1"
    assert cluster.endpoint_owner(names["names/web/DB"], "h2") is None
    assert cluster.name_key("web", "DB") == "names/web/db"


def test_remote_endpoints_from_ipam_and_hosts() -> None:
    ipam = {
        "ipam/web/198.19.10.5": {"host": "h1", "endpoint": "e1", "mac": "02:00:00:00:00:05"},
        "ipam/web/198.19.10.6": {"host": "h2", "endpoint": "e2", "mac": "02:00:00:00:00:06"},
        "ipam/web/198.19.10.7": {"host": "h9", "endpoint": "e3", "mac": "02:00:00:00:00:07"},
        "ipam/db/198.19.20.5": {"host": "h2", "endpoint": "e4", "mac": "02:00:00:00:00:08"},
        "ipam/db/198.19.20.6": {"host": "h2", "endpoint": "e5"},  # no MAC: flooded as before
        # malformed MACs (a bad record, a hostile writer) never reach netlink or OpenFlow
        "ipam/db/198.19.20.7": {"host": "h2", "endpoint": "e6", "mac": "02:00:00:00:00:0g"},
        "ipam/db/198.19.20.8": {"host": "h2", "endpoint": "e7", "mac": " 02:00:00:00:00:09"},
        "ipam/db/198.19.20.9": {"host": "h2", "endpoint": "e8", "mac": "02:00:00:00:00:09,x"},
    }
    hosts = {"h1": {"underlay": "198.18.0.11"}, "h2": {"underlay": "198.18.0.12"}}
    assert cluster.remote_endpoints(ipam, hosts, "h1") == {
        "web": (("198.19.10.6", "02:00:00:00:00:06", "198.18.0.12"),),
        "db": (("198.19.20.5", "02:00:00:00:00:08", "198.18.0.12"),),
    }


def test_known_endpoints_are_programmed_and_forgotten() -> None:
    from netplumb.agent.core.model import ObservedVxlan
    from netplumb.agent.core.ops import AddFdbMac, AddNeigh, DelFdbMac, DelNeigh, SetNeighSuppress
    from netplumb.agent.core.overlay import plan_known_endpoints

    remote = (("198.19.10.6", "02:00:00:00:00:06", "198.18.0.12"),)
    seen = ObservedVxlan("npvx10", 10, "198.18.0.11", "web", False, 1450, "a", ("198.18.0.12",))
    ops = plan_known_endpoints("web", 10, remote, seen, ())
    assert ops == (
        SetNeighSuppress("npvx10"),
        AddFdbMac("npvx10", "02:00:00:00:00:06", "198.18.0.12"),
        AddNeigh("web", "198.19.10.6", "02:00:00:00:00:06"),
    )
    done = ObservedVxlan(
        "npvx10",
        10,
        "198.18.0.11",
        "web",
        False,
        1450,
        "a",
        ("198.18.0.12",),
        macs=(("02:00:00:00:00:06", "198.18.0.12"),),
        neigh_suppress=True,
    )
    assert (
        plan_known_endpoints("web", 10, remote, done, (("198.19.10.6", "02:00:00:00:00:06"),)) == ()
    )
    gone = plan_known_endpoints("web", 10, (), done, (("198.19.10.6", "02:00:00:00:00:06"),))
    assert gone == (
        DelNeigh("web", "198.19.10.6", "02:00:00:00:00:06"),
        DelFdbMac("npvx10", "02:00:00:00:00:06", "198.18.0.12"),
    )


# ----------------------------------------- networks defined at the same time


class RacingEtcd:
    """An in-memory etcd with revisions, for Cluster.create_network: before
    answering the ``race``-th create of a network, another host's network
    lands (as if written between our snapshot and our write)."""

    def __init__(self, other: dict[str, dict[str, object]], race: int = 1) -> None:
        self.kv: dict[str, tuple[dict[str, object], int]] = {}
        self.rev = 1
        self.other = other
        self.race = race

    def _put(self, key: str, value: dict[str, object]) -> None:
        self.rev += 1
        self.kv[key] = (value, self.rev)

    def get(self, key: str) -> dict[str, object] | None:
        return self.kv[key][0] if key in self.kv else None

    def get_prefix(self, prefix: str) -> tuple[dict[str, dict[str, object]], int]:
        return {k: v for k, (v, _) in self.kv.items() if k.startswith(prefix)}, self.rev

    def create(
        self, key: str, value: dict[str, object], unchanged: tuple[str, int] | None = None
    ) -> bool:
        if key.startswith("networks/") and self.race:
            self.race -= 1
            for k, v in self.other.items():
                self._put(k, v)
        if key in self.kv:
            return False
        if unchanged is not None:
            prefix, rev = unchanged
            if any(k.startswith(prefix) and r > rev for k, (_, r) in self.kv.items()):
                return False
        self._put(key, value)
        return True

    def delete_if(self, key: str, value: dict[str, object]) -> bool:
        if self.get(key) == value:
            del self.kv[key]
            return True
        return False


def _cluster(etcd: RacingEtcd) -> object:
    from netplumb.agent.cluster import Cluster

    return Cluster(etcd, "h1", "a1b2c3d4", "0", 3)  # type: ignore[arg-type]


def test_an_overlapping_network_written_meanwhile_makes_the_create_fail() -> None:
    from netplumb.agent.core.spec import network_spec
    from netplumb.agent.errors import Conflict

    theirs = network_spec("theirs", "198.19.124.0/24", 4310)
    etcd = RacingEtcd({cluster.network_key("theirs"): cluster.network_to_doc(theirs)})
    c = _cluster(etcd)
    mine = network_spec("mine", "198.19.124.128/25", 4311)
    with pytest.raises(Conflict) as e:
        c.create_network(mine)  # type: ignore[attr-defined]
    assert "overlaps 198.19.124.0/24 of network theirs" in e.value.message
    assert etcd.get(cluster.network_key("mine")) is None
    assert etcd.get(cluster.vni_key(4311)) is None  # the VNI claim is given back


def test_a_network_written_meanwhile_that_does_not_overlap_only_costs_a_retry() -> None:
    from netplumb.agent.core.spec import network_spec

    theirs = network_spec("theirs", "198.19.125.0/24", 4312)
    etcd = RacingEtcd({cluster.network_key("theirs"): cluster.network_to_doc(theirs)})
    c = _cluster(etcd)
    mine = network_spec("mine", "198.19.126.0/24", 4313)
    assert c.create_network(mine) == (mine, True)  # type: ignore[attr-defined]
    assert etcd.get(cluster.network_key("mine")) == cluster.network_to_doc(mine)


def test_networks_defined_faster_than_one_can_check_give_unavailable() -> None:
    from netplumb.agent.core.spec import network_spec
    from netplumb.agent.errors import DependencyUnavailable

    class Busy(RacingEtcd):
        def create(self, key: str, value: dict[str, object], unchanged: object = None) -> bool:
            if key.startswith("networks/"):
                self._put(f"networks/x{self.rev}", {})  # someone always gets in first
                return False
            return super().create(key, value)

    etcd = Busy({})
    with pytest.raises(DependencyUnavailable):
        _cluster(etcd).create_network(network_spec("mine", "198.19.127.0/24", 4314))  # type: ignore[attr-defined]
    assert etcd.get(cluster.vni_key(4314)) is None


class ScriptedEtcd:
    """Watches that deliver what the test says, when it says."""

    def __init__(self) -> None:
        self.watches: dict[str, Callable[[dict[str, dict[str, object]]], None]] = {}

    def keep_registered(self, key: str, value: dict[str, object], ttl: int) -> None:
        pass

    def watch_prefix(
        self,
        prefix: str,
        on_snapshot: Callable[[dict[str, dict[str, object]]], None],
        first_here: bool = False,
    ) -> bool:
        self.watches[prefix] = on_snapshot
        return False


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def sync_cluster_peers(self, wanted: object) -> None:
        self.calls.append(("peers", wanted))

    def sync_networks(self, networks: object) -> None:
        self.calls.append(("networks", networks))

    def sync_remote_endpoints(self, table: object) -> None:
        self.calls.append(("remote", table))


def test_remote_endpoints_are_not_synced_from_hosts_before_ipam_was_read() -> None:
    """After a restart the hosts can arrive before ipam/: programming an
    empty table then would take every known endpoint away."""
    from netplumb.agent.cluster import Cluster

    etcd, members = ScriptedEtcd(), Recorder()
    Cluster(etcd, "h1", "a1", "0", 3).start(members, "198.18.0.1")  # type: ignore[arg-type]
    hosts = {
        "hosts/h1": {"name": "h1", "underlay": "198.18.0.1"},
        "hosts/h2": {"name": "h2", "underlay": "198.18.0.2"},
    }
    etcd.watches[cluster.HOSTS](hosts)
    assert [c[0] for c in members.calls] == ["peers"]
    entry = {"host": "h2", "endpoint": "e2", "guest": "netns:x", "mac": "02:00:00:00:00:02"}
    etcd.watches[cluster.IPAM]({"ipam/web/198.19.0.5": entry})
    assert members.calls[-1] == (
        "remote",
        {"web": (("198.19.0.5", "02:00:00:00:00:02", "198.18.0.2"),)},
    )
    etcd.watches[cluster.HOSTS](hosts)  # from now on a hosts change re-programs
    assert [c[0] for c in members.calls] == ["peers", "remote", "peers", "remote"]
