"""The endpoint kinds beyond veth (macvlan, a moved-in host interface,
dummy), ip-rule and tc arguments, DHCP client command lines and the DHCP
hook: pure logic."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from netplumb.agent.core import naming, spec
from netplumb.agent.core.model import (
    EndpointRecord,
    GuestKind,
    GuestRef,
    HostFeatures,
    LinkKind,
    ObservedEndpoint,
    ObservedLink,
    RuleSpec,
)
from netplumb.agent.core.ops import (
    AddAddress,
    AddRule,
    CreateDummy,
    CreateMacvlan,
    CreateVlanLink,
    DeleteLink,
    MoveToGuest,
    MoveToHost,
    SetMac,
    SetUp,
    Where,
    undo,
)
from netplumb.agent.core.plan import desired_endpoint, plan_detach, plan_endpoint
from netplumb.agent.dhcphook import lease
from netplumb.agent.drivers.dhcp import client_argv
from netplumb.agent.errors import Conflict, InvalidSpec, KernelFeatureMissing, NotFound
from netplumb.cli.pipework import Attach, _dhcp

AGENT = "a1b2c3d4"
GUEST = GuestRef(GuestKind.NETNS, "blue")
ALL = HostFeatures(bridge_vlan_filtering=True, vlan_8021q=True, dummy=True)
NONE = HostFeatures()


def record(kind: str, parent: str = "eth9", vlan: int = 0, **kw: object) -> EndpointRecord:
    s = spec.endpoint_spec(
        bridge="",
        guest_ref=GUEST,
        addresses=["198.18.0.10/24"],
        kind=kind,
        parent=parent if kind != "dummy" else "",
        vlan_value=vlan,
    )
    eid = naming.endpoint_id(GUEST, s.ifname)
    return EndpointRecord(
        spec=s,
        id=eid,
        host_ifname="",
        mac=str(kw.get("mac", naming.stable_mac(eid))),
        mtu=int(kw.get("mtu", 1500)),  # type: ignore[call-overload]
        parent=parent,
        parent_mac=str(kw.get("parent_mac", "")),
    )


def nic(name: str = "eth9", kind: str = "veth", up: bool = True) -> ObservedLink:
    return ObservedLink(name=name, index=3, kind=kind, mac="52:54:00:00:00:09", mtu=1500, up=up)


def test_macvlan_is_created_inside_the_guest_on_the_parent_set_up() -> None:
    r = record("macvlan")
    want = desired_endpoint(r, AGENT)
    ops = plan_endpoint(want, ObservedEndpoint(None, None, parent=nic(up=False)), ALL)
    assert ops[0] == SetUp(Where.HOST, "eth9")
    assert ops[1] == CreateMacvlan("eth9", "eth1", r.mac, 1500, want.alias)
    assert AddAddress(Where.GUEST, "eth1", ipaddress.ip_interface("198.18.0.10/24")) in ops
    assert undo(ops[1]) is not None and undo(ops[1]).where is Where.GUEST  # type: ignore[union-attr]


def test_macvlan_in_place_is_left_alone_and_its_detach_deletes_it() -> None:
    r = record("macvlan")
    want = desired_endpoint(r, AGENT)
    guest = ObservedLink(
        name="eth1",
        index=9,
        kind="macvlan",
        alias=want.alias,
        mac=r.mac,
        mtu=1500,
        up=True,
        addresses=want.addresses,
    )
    assert plan_endpoint(want, ObservedEndpoint(None, guest), ALL) == ()
    ops = plan_detach(r, ObservedEndpoint(None, guest), AGENT)
    assert [type(o).__name__ for o in ops] == ["DeleteLink"]


def test_macvlan_on_a_vlan_creates_the_sub_interface_or_names_the_missing_feature() -> None:
    r = record("macvlan", vlan=7)
    want = desired_endpoint(r, AGENT)
    assert want.parent == "eth9.7" and want.vlan_base == "eth9"
    ops = plan_endpoint(want, ObservedEndpoint(None, None, vlan_base=nic()), ALL)
    # tagged for the agent, not the endpoint: other macvlans may share it
    assert ops[0] == CreateVlanLink("eth9", "eth9.7", 7, naming.vlan_alias(AGENT))
    with pytest.raises(KernelFeatureMissing) as e:
        plan_endpoint(want, ObservedEndpoint(None, None, vlan_base=nic()), NONE)
    assert e.value.feature == "8021q"


def test_the_last_macvlan_on_a_vlan_takes_the_sub_interface_with_it() -> None:
    r = record("macvlan", vlan=7)
    want = desired_endpoint(r, AGENT)
    guest = ObservedLink(
        name="eth1", index=9, kind="macvlan", alias=want.alias, mac=r.mac, mtu=1500
    )
    made = ObservedLink(
        name="eth9.7", index=4, kind="vlan", alias=naming.vlan_alias(AGENT), mac="", mtu=1500
    )
    seen = ObservedEndpoint(None, guest, parent=made)
    assert plan_detach(r, seen, AGENT) == (
        DeleteLink(Where.GUEST, "eth1"),
        DeleteLink(Where.HOST, "eth9.7"),
    )
    # tagged by an older netplumb for the endpoint that made it, maybe another
    other = naming.endpoint_alias("0123456789abcdef", AGENT)
    assert plan_detach(r, replace(seen, parent=replace(made, alias=other)), AGENT)[-1] == (
        DeleteLink(Where.HOST, "eth9.7")
    )
    # another endpoint still on eth9.7: it stays
    assert plan_detach(r, seen, AGENT, vlan_shared=True) == (DeleteLink(Where.GUEST, "eth1"),)
    # one that netplumb did not make (no tag, or another agent's) is never deleted
    for alias in ("", naming.vlan_alias("ffffffff")):
        theirs = ObservedEndpoint(None, guest, parent=replace(made, alias=alias))
        assert plan_detach(r, theirs, AGENT) == (DeleteLink(Where.GUEST, "eth1"),)
    # the guest is gone (its macvlan with it): the sub-interface still goes
    assert plan_detach(r, ObservedEndpoint(None, None, parent=made), AGENT) == (
        DeleteLink(Where.HOST, "eth9.7"),
    )


def test_missing_parent_and_bridge_parent_are_refused() -> None:
    want = desired_endpoint(record("macvlan"), AGENT)
    with pytest.raises(NotFound):
        plan_endpoint(want, ObservedEndpoint(None, None), ALL)
    with pytest.raises(Conflict):
        plan_endpoint(want, ObservedEndpoint(None, None, parent=nic(kind="bridge")), ALL)


def test_phys_moves_in_with_its_mac_and_goes_back_under_its_own_name() -> None:
    r = record("phys", mac="02:00:00:00:00:42", mtu=0, parent_mac="52:54:00:00:00:09")
    want = desired_endpoint(r, AGENT)
    # found by MAC under another name (a dead namespace handed it back)
    ops = plan_endpoint(want, ObservedEndpoint(None, None, parent=nic(name="dev7")), ALL)
    assert ops[0] == MoveToGuest("dev7", "eth1", want.alias)
    assert ops[1] == SetMac(Where.GUEST, "eth1", "02:00:00:00:00:42")
    assert undo(ops[0]) == MoveToHost("eth1", "dev7", "")
    guest = ObservedLink(name="eth1", index=3, kind="veth", alias=want.alias, mac=r.mac, up=True)
    assert plan_detach(r, ObservedEndpoint(None, guest), AGENT) == (
        MoveToHost("eth1", "eth9", "52:54:00:00:00:09"),
    )
    # not ours in the guest: nothing to give back
    assert plan_detach(r, ObservedEndpoint(None, None), AGENT) == ()


def test_dummy_needs_the_kernel_feature() -> None:
    want = desired_endpoint(record("dummy", parent=""), AGENT)
    ops = plan_endpoint(want, ObservedEndpoint(None, None), ALL)
    assert ops[0] == CreateDummy("eth1", want.mac, want.alias)
    with pytest.raises(KernelFeatureMissing) as e:
        plan_endpoint(want, ObservedEndpoint(None, None), NONE)
    assert e.value.feature == "dummy"


def test_rules_are_replayed_on_a_fresh_interface() -> None:
    rule = RuleSpec(family=4, priority=5, table=100)
    from dataclasses import replace

    r = replace(record("macvlan"), rules=(rule,))
    ops = plan_endpoint(desired_endpoint(r, AGENT), ObservedEndpoint(None, None, parent=nic()), ALL)
    assert AddRule(rule) in ops


def test_kind_spec_validation() -> None:
    with pytest.raises(InvalidSpec):
        spec.endpoint_spec(bridge="br0", guest_ref=GUEST, kind="macvlan", parent="eth0")
    with pytest.raises(InvalidSpec):
        spec.endpoint_spec(bridge="", guest_ref=GUEST, kind="macvlan")
    with pytest.raises(InvalidSpec):
        spec.endpoint_spec(bridge="", guest_ref=GUEST, kind="dummy", vlan_value=3)
    with pytest.raises(InvalidSpec):
        spec.endpoint_spec(bridge="", guest_ref=GUEST, kind="nosuch")
    s = spec.endpoint_spec(bridge="", guest_ref=GUEST, kind="phys", parent="mac:52:54:00:AA:BB:CC")
    assert s.kind is LinkKind.PHYS and s.parent == "mac:52:54:00:aa:bb:cc"


# ------------------------------------------------------------ ip rule, tc


def test_ip_rule_arguments() -> None:
    verb, r = spec.ip_rule(["add", "from", "198.18.1.0/24", "table", "100", "pref", "10"])
    assert verb == "add" and r.table == 100 and r.priority == 10
    assert str(r) == "priority 10 from 198.18.1.0/24 lookup 100"
    verb, r = spec.ip_rule(["-6", "del", "not", "to", "2001:db8::/32", "fwmark", "0x10/0xff"])
    assert verb == "del" and r.family == 6 and r.invert and (r.fwmark, r.fwmask) == (16, 255)
    assert spec.ip_rule(["from", "all", "lookup", "main"])[1].table == 254
    for bad in (
        ["from"],
        ["from", "nonsense"],
        ["to", "198.18.0.0/24", "from", "2001:db8::/32"],
        ["nat", "1.2.3.4"],
        ["table", "-1"],
    ):
        with pytest.raises(InvalidSpec):
            spec.ip_rule(bad)


def test_tc_arguments() -> None:
    verb, dev, words = spec.tc_command(["qdisc", "add", "dev", "eth1", "root", "tbf"])
    assert (verb, dev, words[-1]) == ("add", "eth1", "tbf")
    assert spec.tc_command(["qdisc", "del", "dev", "eth1", "root"])[0] == "del"
    for bad in (
        ["qdisc"],
        ["qdisc", "show", "dev", "eth1"],
        ["action", "add", "dev", "x"],
        ["qdisc", "add", "root", "dev"],
        ["qdisc", "add", "dev", "eth1", "a\0b"],
    ):
        with pytest.raises(InvalidSpec):
            spec.tc_command(bad)


# ------------------------------------------------------------------- DHCP


def test_client_command_lines() -> None:
    u = client_argv("udhcpc", ["/bin/busybox", "udhcpc"], "eth1", "web", "/h", "/w", (), False)
    assert u[:2] == ["/bin/busybox", "udhcpc"] and "-q" in u and "-n" in u
    assert "-s" in u and u[u.index("-s") + 1] == "/h" and "hostname:web" in u
    kept = client_argv("udhcpc", ["udhcpc"], "eth1", "", "/h", "/w", ("-O", "x"), True)
    assert "-q" not in kept and kept[-2:] == ["-O", "x"]  # pipework's udhcpc-f kept -q
    d = client_argv("dhclient", ["dhclient"], "eth1", "", "/h", "/w", (), True)
    assert d[-1] == "eth1" and "-d" in d and d[d.index("-sf") + 1] == "/h"
    assert d[d.index("-lf") + 1].startswith("/w/")
    c = client_argv("dhcpcd", ["dhcpcd"], "eth1", "web", "/h", "/w", (), False)
    assert "-1" in c and c[-1] == "eth1" and "-h" in c  # pipework dropped dhcpcd's options


def test_hook_reads_both_clients_environments() -> None:
    what, a, router = lease(
        "bound", {"ip": "198.18.0.5", "subnet": "255.255.255.0", "router": "198.18.0.1 198.18.0.2"}
    )
    assert what == "bound" and str(a) == "198.18.0.5/24" and router == "198.18.0.1"
    what, a, router = lease(
        "REBOOT", {"new_ip_address": "198.18.0.6", "new_subnet_mask": "255.255.0.0"}
    )
    assert what == "bound" and str(a) == "198.18.0.6/16" and router == ""
    assert lease("deconfig", {})[0] == "unbound" and lease("EXPIRE", {})[0] == "unbound"
    assert lease("PREINIT", {})[0] == "up"
    assert lease("bound", {"ip": "not-an-ip"})[0] == ""


@pytest.mark.parametrize(
    ("form", "want"),
    [
        (("udhcpc", ""), ("udhcpc", [], False)),
        (("udhcpc-f", ""), ("udhcpc", [], True)),
        (("dhclient-f", "-v"), ("dhclient", ["-v"], True)),
        (("dhcp", "-f"), ("dhcp", [], True)),
        (("udhcpc", "-O staticroutes"), ("udhcpc", ["-O", "staticroutes"], False)),
    ],
)
def test_pipework_dhcp_forms(form: tuple[str, str], want: tuple[str, list[str], bool]) -> None:
    req = Attach(hostif="br0", guest="c1", dhcp=form[0], dhcp_options=form[1])
    assert _dhcp(req) == want


@pytest.mark.parametrize(
    ("client", "options"),
    [
        ("udhcpc", ["-s", "/home/alice/x.sh"]),
        ("udhcpc", ["--script=/tmp/x"]),
        ("dhclient", ["-sf", "x"]),
        ("dhclient", ["-lf", "/etc/cron.d/x"]),
        ("dhcpcd", ["-c", "hook"]),
        ("dhcp", ["-pf", "x"]),
        ("udhcpc", ["-O", "../../etc/passwd"]),
    ],
)
def test_dhcp_options_naming_scripts_or_files_are_refused(client: str, options: list[str]) -> None:
    """The client runs as root on the host's filesystem: a caller must not
    choose its script or the files it writes."""
    with pytest.raises(InvalidSpec):
        spec.dhcp_spec(client, options, keep=False)


def test_harmless_dhcp_options_and_tc_words() -> None:
    assert spec.dhcp_spec("udhcpc", ["-O", "staticroutes", "-c", "id1"], False).options
    with pytest.raises(InvalidSpec):
        spec.tc_command(["filter", "add", "dev", "eth1", "parent", "1:", "bpf", "obj", "/x"])
    spec.tc_command(
        [
            "filter",
            "add",
            "dev",
            "eth1",
            "protocol",
            "ip",
            "u32",
            "match",
            "ip",
            "dst",
            "198.18.0.0/24",
        ]
    )


def test_a_phys_interface_handed_back_by_a_dead_guest_gets_its_name_and_mac_back() -> None:
    """A physical NIC (unlike a veth) survives its namespace: the kernel
    returns it to the host under the guest's name, with the guest's MAC and
    netplumb's tag. Detach (and the removal of a container) restores it."""
    from netplumb.agent.core.ops import RestoreHostLink

    r = record("phys", mac="02:00:00:00:00:42", mtu=0, parent_mac="52:54:00:00:00:09")
    alias = naming.endpoint_alias(r.id, AGENT)
    back = ObservedLink(name="eth1", index=7, kind="ixgbevf", alias=alias, mac=r.mac)
    assert plan_detach(r, ObservedEndpoint(None, None, parent=back), AGENT) == (
        RestoreHostLink("eth1", "eth9", "52:54:00:00:00:09"),
    )
    # someone else's interface of that name is left alone
    foreign = ObservedLink(name="eth1", index=7, kind="ixgbevf", alias="")
    assert plan_detach(r, ObservedEndpoint(None, None, parent=foreign), AGENT) == ()
