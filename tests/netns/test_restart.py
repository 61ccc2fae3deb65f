"""State survives: restarts reconcile, failures roll back, orphans are
collected. Each test runs its own netplumbd, since it stops or restarts it."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator

import pytest
from fixtures.host import (
    Daemon,
    Namespaces,
    delete_links,
    ip_json,
    link,
    ping,
    run,
    running_daemon,
    unique,
)


@pytest.fixture
def own_daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture
def bridges() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    delete_links(names)


def _host_links() -> set[str]:
    return {item["ifname"] for item in ip_json("link")}


def test_restart_recreates_a_veth_deleted_while_down(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    a, b = netns.new(), netns.new()
    br = unique("nptb")
    bridges.append(br)
    own_daemon.cli_json("bridge", "add", br)
    ep_a = own_daemon.cli_json(
        "attach",
        br,
        f"netns:{a}",
        "198.18.20.10/24",
        "2001:db8:20::10/64",
        "--route",
        "198.19.20.0/24@198.18.20.1",
    )
    own_daemon.cli_json("attach", br, f"netns:{b}", "198.18.20.11/24", "2001:db8:20::11/64")
    assert ping(a, "198.18.20.11")

    assert own_daemon.stop(signal.SIGTERM) == 0
    # SIGTERM leaves the data plane as it is
    assert link(ep_a["host_ifname"]) is not None and ping(a, "198.18.20.11")
    run("ip", "link", "del", ep_a["host_ifname"])  # takes the guest end with it
    assert link("eth1", a) is None

    own_daemon.start()
    guest = link("eth1", a)
    assert guest is not None and guest["address"] == ep_a["mac"]
    assert link(ep_a["host_ifname"])["master"] == br  # type: ignore[index]
    assert ping(a, "198.18.20.11") and ping(a, "2001:db8:20::11")
    assert any(r["dst"] == "198.19.20.0/24" for r in ip_json("-4", "route", netns=a))
    assert "1 repaired" in own_daemon.log()
    rc, _, _ = own_daemon.cli("check")
    assert rc == 0


def test_kill_9_then_restart_changes_nothing(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    a = netns.new()
    br = unique("nptb")
    bridges.append(br)
    own_daemon.cli_json("bridge", "add", br, "--address", "198.18.21.1/24")
    ep = own_daemon.cli_json("attach", br, f"netns:{a}", "198.18.21.10/24@198.18.21.1")
    index = link("eth1", a)["ifindex"]  # type: ignore[index]
    own_daemon.stop(signal.SIGKILL)
    own_daemon.start()
    assert link("eth1", a)["ifindex"] == index  # type: ignore[index]  # untouched, not recreated
    assert own_daemon.cli_json("ls")["endpoints"][0]["id"] == ep["id"]
    assert ping(a, "198.18.21.1")


def test_check_reports_drift_and_reconcile_repairs_it(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    a = netns.new()
    br = unique("nptb")
    bridges.append(br)
    own_daemon.cli_json("bridge", "add", br)
    own_daemon.cli_json("attach", br, f"netns:{a}", "198.18.22.10/24", "--mtu", "1400")
    run("ip", "-n", a, "addr", "del", "198.18.22.10/24", "dev", "eth1")
    run("ip", "-n", a, "link", "set", "eth1", "mtu", "1300")
    rc, out, _ = own_daemon.cli("--json", "check")
    assert rc == 6
    drift = json.loads(out)["drift"]
    assert len(drift) == 1 and drift[0]["object"] == "endpoint"
    assert any("198.18.22.10/24" in r for r in drift[0]["repair"])
    assert any("mtu 1400" in r for r in drift[0]["repair"])
    assert (
        run("ip", "-n", a, "addr", "show", "eth1").stdout.count("198.18.22.10") == 0
    )  # check changed nothing
    own_daemon.cli_json("reconcile")
    assert "198.18.22.10/24" in run("ip", "-n", a, "addr", "show", "eth1").stdout
    assert link("eth1", a)["mtu"] == 1400  # type: ignore[index]
    assert own_daemon.cli("check")[0] == 0


def test_failed_attach_rolls_back_everything(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    """A route whose next hop is unreachable fails after the veth, its
    addresses and the link state were already applied: all of it goes."""
    a = netns.new()
    br = unique("nptb")
    bridges.append(br)
    own_daemon.cli_json("bridge", "add", br)
    before = _host_links()
    state = open(os.path.join(own_daemon.state_dir, "state.json")).read()
    rc, out, err = own_daemon.cli(
        "--json",
        "attach",
        br,
        f"netns:{a}",
        "198.18.23.10/24",
        "--route",
        "198.19.0.0/16@198.18.99.1",
    )
    assert rc == 4, err
    assert json.loads(out)["error"]["field"] == "spec.routes"
    assert "not reachable" in err
    assert _host_links() == before
    assert link("eth1", a) is None
    assert open(os.path.join(own_daemon.state_dir, "state.json")).read() == state
    assert "rolled back" in own_daemon.log()


def test_injected_failure_rolls_back(netns: Namespaces, bridges: list[str]) -> None:
    with running_daemon(env={"NETPLUMB_FAULT_INJECT": "Announce"}) as d:
        a = netns.new()
        br = unique("nptb")
        bridges.append(br)
        d.cli_json("bridge", "add", br)
        before = _host_links()
        rc, _, err = d.cli("attach", br, f"netns:{a}", "198.18.24.10/24@198.18.24.1")
        assert rc == 1, err  # an internal error, reported without a traceback
        assert "fault injected" in err and "Traceback" not in err
        assert _host_links() == before
        assert link("eth1", a) is None
        assert d.client().list_endpoints() == []


def test_own_tagged_orphan_is_collected_others_are_left(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    """Only veths tagged by this agent are collected: not untagged ones, and
    not those of another agent sharing the namespace."""
    agent = json.load(open(os.path.join(own_daemon.state_dir, "state.json")))["agent_id"]
    orphan, foreign, other_agent = unique("npo"), unique("npf"), unique("npa")
    bridges.extend([orphan, foreign, other_agent])
    for name, alias in (
        (orphan, f"netplumb:ep:0123456789abcdef:{agent}"),
        (foreign, "somebody-else"),
        (other_agent, "netplumb:ep:0123456789abcdef:ffffffff"),
    ):
        run("ip", "link", "add", name, "type", "veth", "peer", "name", name + "p")
        run("ip", "link", "set", name, "alias", alias)
    rc, out, _ = own_daemon.cli("--json", "check")
    assert rc == 6
    assert [d["name"] for d in json.loads(out)["drift"]] == [orphan]
    res = own_daemon.cli_json("reconcile")
    assert [d["name"] for d in res["collected"]] == [orphan]
    assert link(orphan) is None
    assert link(foreign) is not None and link(other_agent) is not None


def test_a_foreign_object_squatting_a_name_is_drift_and_left_alone(
    own_daemon: Daemon, netns: Namespaces, bridges: list[str]
) -> None:
    """The endpoint's host veth replaced by an untagged link of the same
    name: check reports it (exit 6), reconcile reports it as not repairable
    and never touches the intruder."""
    a = netns.new()
    br = unique("nptb")
    bridges.append(br)
    own_daemon.cli_json("bridge", "add", br)
    ep = own_daemon.cli_json("attach", br, f"netns:{a}", "198.18.23.10/24")
    host = str(ep["host_ifname"])
    run("ip", "link", "del", host)
    run("ip", "link", "add", host, "type", "veth", "peer", "name", unique("npq"))
    bridges.append(host)
    rc, out, _ = own_daemon.cli("--json", "check")
    assert rc == 6, out
    (d,) = json.loads(out)["drift"]
    assert d["name"] == ep["id"] and "did not create" in d["detail"]
    res = own_daemon.cli_json("reconcile")
    assert [f["name"] for f in res.get("failed", [])] == [ep["id"]]
    squatter = link(host)
    assert squatter is not None and not squatter.get("ifalias")
    # a bridge tagged by this agent but never recorded is collected
    agent = json.load(open(os.path.join(own_daemon.state_dir, "state.json")))["agent_id"]
    stray = unique("npsb")
    bridges.append(stray)
    run("ip", "link", "add", stray, "type", "bridge")
    run("ip", "link", "set", stray, "alias", f"netplumb:br:{agent}")
    res = own_daemon.cli_json("reconcile")
    assert stray in [c["name"] for c in res["collected"]] and link(stray) is None
