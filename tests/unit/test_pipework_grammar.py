"""The pipework drop-in's grammar: every form parses to the request pipework
meant, and a usage error exits 2 without calling the daemon."""

from __future__ import annotations

import hashlib
import io

import pytest
from netplumb.cli import pipework as pw
from netplumb.cli.pipework import Attach, Sub, Wait, parse


def test_static_address_with_gateway_and_options_in_any_order() -> None:
    a = parse(
        ["br1", "-l", "hostside", "c1", "-i", "eth2", "198.18.40.5/24@198.18.40.1", "-a", "4"]
    )
    assert a == Attach(
        hostif="br1",
        guest="c1",
        ifname="eth2",
        host_ifname="hostside",
        addresses=("198.18.40.5/24",),
        gateways=("198.18.40.1",),
    )


def test_ipv6_zero_address_mac_vlan_forms() -> None:
    assert parse(["ovsbr0", "c1", "2001:db8::5/64", "-a", "6"]) == Attach(
        hostif="ovsbr0", guest="c1", addresses=("2001:db8::5/64",)
    )
    assert parse(["br1", "c1", "0/0"]) == Attach(hostif="br1", guest="c1")
    assert parse(["br1", "c1", "0/0", "02:aa:bb:cc:dd:ee"]).mac == "02:aa:bb:cc:dd:ee"  # type: ignore[union-attr]
    assert parse(["ovs0", "c1", "0/0", "@10"]).vlan == 10  # type: ignore[union-attr]
    both = parse(["ovs0", "c1", "198.18.40.5/24", "02:aa:bb:cc:dd:ee@20"])
    assert isinstance(both, Attach) and (both.mac, both.vlan) == ("02:aa:bb:cc:dd:ee", 20)


def test_u_string_mac_is_pipeworks() -> None:
    got = parse(["br1", "c1", "0/0", "U:web1"])
    digest = hashlib.md5(b"web1\n").digest()
    assert isinstance(got, Attach)
    assert got.mac == "02:" + ":".join(f"{b:02x}" for b in digest[:5])
    # pipework's own example value for U:foo (md5 of "foo\n" = d3b07384d1...)
    assert parse(["br1", "c1", "0/0", "U:foo"]).mac == "02:d3:b0:73:84:d1"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "arg",
    [
        "dhcp",
        "dhcp:-f",
        "udhcpc",
        "udhcpc:-O staticroutes",
        "udhcpc-f",
        "dhclient",
        "dhclient-f",
        "dhcpcd",
    ],
)
def test_dhcp_forms(arg: str) -> None:
    got = parse(["br1", "c1", arg])
    assert isinstance(got, Attach) and got.dhcp == arg.partition(":")[0]
    assert got.dhcp_options == arg.partition(":")[2]


def test_direct_phys_route_rule_tc_and_wait() -> None:
    got = parse(["--direct-phys", "eth9", "c1", "198.18.40.5/24"])
    assert isinstance(got, Attach) and got.direct_phys
    assert parse(["route", "c1", "add", "198.19.0.0/16", "via", "198.18.40.1"]) == Sub(
        "route", "c1", ("add", "198.19.0.0/16", "via", "198.18.40.1")
    )
    assert (
        parse(["tc", "c1", "qdisc", "add", "dev", "eth1", "root", "netem", "delay", "10ms"]).command
        == "tc"
    )  # type: ignore[union-attr]
    assert parse(["--wait"]) == Wait()
    assert parse(["--wait", "-i", "eth2", "--timeout", "5"]) == Wait("eth2", 5.0)
    assert parse(["--help"]) is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["br1", "c1", "198.18.40.5"], "Maybe you meant 198.18.40.5/24?"),
        (["br1", "c1"], "missing"),
        (["br1", "c1", "198.18.40.5/24", "02:aa:bb:cc:dd:ee", "extra"], "unexpected"),
        (["br1", "c1", "198.18.40.5/24", "@5000"], "out of range"),
        (["br1", "c1", "198.18.40.5/24", "@x"], "must be a number"),
        (["br1", "-a", "5", "c1", "198.18.40.5/24"], "-a takes 4 or 6"),
        (["br1", "c1", "198.18.40.5/24", "-i"], "needs a value"),
        (["route", "c1"], "needs a guest"),
        (["--wait", "--timeout", "soon"], "seconds"),
        ([], "missing"),
    ],
)
def test_usage_errors_exit_2_and_touch_nothing(argv: list[str], message: str) -> None:
    called: list[str] = []

    def factory(path: str) -> object:
        called.append(path)
        raise AssertionError("the daemon must not be called")

    err = io.StringIO()
    assert pw.main(argv, env={}, stdout=io.StringIO(), stderr=err, client_factory=factory) == 2
    assert message in err.getvalue() and "Usage:" in err.getvalue()
    assert called == []


def test_ip_route_forms() -> None:
    assert pw._ip_route(
        ["add", "198.19.0.0/16", "via", "198.18.0.1", "dev", "eth1", "metric", "5"]
    ) == ("add", "198.19.0.0/16", "198.18.0.1", "eth1", 5)
    assert pw._ip_route(["del", "198.19.0.0/16"]) == ("del", "198.19.0.0/16", "", "", 0)
    assert pw._ip_route(["default", "via", "198.18.0.1"])[1] == "default"
    with pytest.raises(pw.UsageError):
        pw._ip_route(["add", "198.19.0.0/16", "table", "5"])


def test_wait_times_out_without_the_interface(tmp_path: object) -> None:
    assert pw.wait_for("npnosuchif0", 0.3) is False


class RacingClient:
    """Another pipework run made the same new bridge, failed, and deleted it
    between this run's create_bridge and its attach (``lose`` times). With
    ``created``, this run's own create_bridge is the one that made it."""

    def __init__(self, lose: int, created: bool = False) -> None:
        self.lose = lose
        self.created = created
        self.calls: list[str] = []

    def list_bridges(self) -> list[object]:
        return []

    def create_bridge(self, name: str, kind: str) -> object:
        self.calls.append(f"create {name}")
        return type("Bridge", (), {"owned": True, "created": self.created})()

    def delete_bridge(self, name: str) -> None:
        self.calls.append(f"delete {name}")

    def attach(self, bridge: str, guest: str, **_: object) -> None:
        self.calls.append(f"attach {bridge}")
        if self.lose:
            self.lose -= 1
            from netplumb.cli.client import Code, NetplumbError

            raise NetplumbError(
                Code.NOT_FOUND, f"bridge {bridge} does not exist", field="spec.bridge"
            )


def test_a_new_bridge_taken_away_by_a_concurrent_run_is_made_again() -> None:
    req = pw.parse(["brnpx9", "c1", "198.18.40.5/24"])
    c = RacingClient(lose=1)
    assert pw._run(c, req) == ""  # type: ignore[arg-type]
    # not created by this run: never deleted by it
    assert c.calls == ["create brnpx9", "attach brnpx9", "create brnpx9", "attach brnpx9"]


def test_a_failed_run_deletes_only_a_bridge_it_created_itself() -> None:
    from netplumb.cli.client import Code, NetplumbError

    req = pw.parse(["brnpx9", "c1", "198.18.40.5/24"])

    class Failing(RacingClient):
        def attach(self, bridge: str, guest: str, **_: object) -> None:
            self.calls.append(f"attach {bridge}")
            raise NetplumbError(Code.INVALID_ARGUMENT, "bad", field="spec.addresses")

    for created in (True, False):
        c = Failing(lose=0, created=created)
        with pytest.raises(NetplumbError):
            pw._run(c, req)  # type: ignore[arg-type]
        assert ("delete brnpx9" in c.calls) is created


def test_a_bridge_that_keeps_vanishing_is_reported_not_retried_forever() -> None:
    from netplumb.cli.client import NetplumbError

    c = RacingClient(lose=5)
    with pytest.raises(NetplumbError):
        pw._run(c, pw.parse(["brnpx9", "c1", "198.18.40.5/24"]))  # type: ignore[arg-type]
    assert c.calls.count("attach brnpx9") == 3
