"""`netplumb doctor`'s decisions (netplumb.agent.doctor's judge_* functions,
forwarding_needs and the report), the read-only state reader, and the
command line of `netplumb doctor` where it needs no host: pure logic, no
privileges."""

from __future__ import annotations

import errno
import io
import ipaddress
import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from netplumb.agent import doctor
from netplumb.agent.core import overlay
from netplumb.agent.core.model import (
    BridgeRecord,
    BridgeSpec,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    LinkKind,
    NetworkSpec,
    PeerRecord,
    RouteSpec,
)
from netplumb.agent.doctor import (
    FAIL,
    PASS,
    SKIP,
    Check,
    DaemonView,
    EndpointFinding,
    SocketStat,
    TunnelPath,
    TunnelState,
    Underlay,
)
from netplumb.agent.store import FileStore
from netplumb.cli.main import main

ip = ipaddress.ip_address
iface = ipaddress.ip_interface


# ------------------------------------------------------------------ socket


def test_a_missing_socket_says_the_daemon_is_not_running_and_how_to_start_it() -> None:
    c = doctor.judge_socket("/run/np.sock", None)
    assert c.status == FAIL and "not running" in c.detail and "start netplumbd" in c.fix
    assert doctor.judge_socket("/run/np.sock", SocketStat(False, 0o644, 0, 0)).status == FAIL
    assert doctor.judge_socket("/run/np.sock", SocketStat(True, 0o660, 0, 0)).status == PASS


def test_socket_permissions_are_0660_root_and_the_configured_group() -> None:
    judge = doctor.judge_socket_permissions
    assert judge("/s", SocketStat(True, 0o660, 0, 1234), "np", 1234).status == PASS
    c = judge("/s", SocketStat(True, 0o666, 0, 1234), "np", 1234)
    assert c.status == FAIL and "mode 0666, expected 0660" in c.detail
    assert "chown root:np /s; chmod 0660 /s" in c.fix
    c = judge("/s", SocketStat(True, 0o660, 1000, 0), "np", 1234)
    assert "owner uid 1000, expected root" in c.detail and "expected np" in c.detail
    c = judge("/s", SocketStat(True, 0o660, 0, 0), "np", None)
    assert c.status == FAIL and "group np (socket_group) does not exist" in c.detail
    assert "groupadd --system np" in c.fix
    assert judge("/s", None, "np", 1234).status == SKIP


def test_connect_failures_say_whose_permission_or_that_nobody_listens() -> None:
    c = doctor.judge_connect("/s", errno.EACCES, "alice", "np")
    assert c.status == FAIL and "user alice may not connect" in c.detail
    assert "usermod -aG np alice" in c.fix
    c = doctor.judge_connect("/s", errno.ECONNREFUSED, "root", "np")
    assert c.status == FAIL and "stale socket" in c.detail and "start netplumbd" in c.fix
    assert doctor.judge_connect("/s", None, "root", "np").status == PASS
    assert doctor.judge_connect("/s", -1, "root", "np").status == SKIP


def test_the_daemon_must_answer_with_the_installed_version() -> None:
    view = DaemonView(version="0.1.0", state_dir="/var/lib/netplumb", uptime_seconds=4000)
    assert doctor.judge_daemon("/s", view, "", "0.1.0") == Check(
        "daemon", PASS, "netplumbd 0.1.0 answers (up 66m)"
    )
    c = doctor.judge_daemon("/s", view, "", "0.2.0")
    assert c.status == FAIL and "restart netplumbd" in c.fix
    c = doctor.judge_daemon("/s", None, "connection refused", "0.1.0")
    assert c.status == FAIL and "connection refused" in c.detail


def test_a_daemon_with_another_state_dir_means_doctor_read_the_wrong_config() -> None:
    view = DaemonView(version="0.1.0", state_dir="/srv/np/")
    assert doctor.judge_daemon_config(view, "/srv/np", "/etc/np.toml").status == PASS
    c = doctor.judge_daemon_config(view, "/var/lib/netplumb", "/etc/np.toml")
    assert c.status == FAIL and "--config" in c.fix
    assert doctor.judge_daemon_config(None, "/x", "/etc/np.toml").status == SKIP


# ----------------------------------------------------------- dependencies


def test_ovs_unreachable_fails_only_when_something_needs_it() -> None:
    judge = doctor.judge_ovs
    c = judge("unix:/x", False, "refused", ["ob0", "ob1"], configured=False)
    assert c.status == FAIL and "OVS bridges recorded: ob0, ob1" in c.detail
    assert judge("unix:/x", False, "refused", [], configured=True).status == FAIL
    assert judge("unix:/x", False, "refused", [], configured=False).status == SKIP
    assert judge("unix:/x", None, "", [], configured=False).status == SKIP
    assert judge("unix:/x", True, "", ["ob0"], configured=False).status == PASS


def test_docker_unreachable_fails_only_with_docker_guests() -> None:
    c = doctor.judge_docker("unix:///d.sock", False, "refused", ["web"])
    assert c.status == FAIL and "Docker guests recorded: web" in c.detail
    assert "start dockerd" in c.fix
    assert doctor.judge_docker("unix:///d.sock", None, "", []).status == SKIP
    assert doctor.judge_docker("unix:///d.sock", True, "", ["web"]).status == PASS


def test_vswitchd_and_datapath_against_the_kernel() -> None:
    assert doctor.judge_vswitchd(False, "/run/ovs", ["ob0"]).status == FAIL
    assert doctor.judge_vswitchd(None, "/run/ovs", ["ob0"]).status == SKIP
    assert doctor.judge_vswitchd(False, "/run/ovs", []).status == SKIP
    c = doctor.judge_datapath("ob0", "system", kernel_system=False)
    assert c.status == FAIL and "modprobe openvswitch" in c.fix
    assert doctor.judge_datapath("ob0", "netdev", kernel_system=False).status == PASS
    assert doctor.judge_datapath("ob0", "netdev", kernel_system=True).status == PASS
    assert doctor.judge_datapath("ob0", None, kernel_system=False).status == FAIL
    assert doctor.judge_configured_datapath("system", kernel_system=False) is not None
    assert doctor.judge_configured_datapath("auto", kernel_system=False) is None


# --------------------------------------------------------------- overlays


def test_the_userspace_tunnel_path_needs_a_netdev_internal_port_and_an_ovs_route() -> None:
    good = TunnelPath("198.18.0.12", "198.18.0.11", "br-phy", "internal", "netdev", "br-phy")
    assert doctor.judge_tunnel_path(good).status == PASS
    c = doctor.judge_tunnel_path(TunnelPath("198.18.0.12", "198.18.0.11", "eth0", None))
    assert c.status == FAIL and "eth0, not an OVS interface" in c.detail
    assert "ovs-vsctl add-port br-phy eth0" in c.fix
    c = doctor.judge_tunnel_path(
        TunnelPath("198.18.0.12", "198.18.0.11", "br-phy", "internal", "system", "br-phy")
    )
    assert c.status == FAIL and "system bridge's internal port" in c.detail
    c = doctor.judge_tunnel_path(
        TunnelPath("198.19.9.9", "198.18.0.11", "br-phy", "internal", "netdev", None)
    )
    assert c.status == FAIL and "OVS has no route" in c.detail
    assert "ovs-appctl ovs/route/add 198.19.9.9/32 br-phy" in c.fix
    c = doctor.judge_tunnel_path(
        TunnelPath("198.19.9.9", "198.18.0.11", "br-phy", "internal", "netdev", "br-int")
    )
    assert c.status == FAIL and "out of br-int" in c.detail
    c = doctor.judge_tunnel_path(
        TunnelPath("198.19.9.9", "198.18.0.11", "br-phy", "internal", "netdev", None, "no pid")
    )
    assert c.status == SKIP
    assert doctor.judge_tunnel_path(TunnelPath("198.19.9.9")).status == FAIL


def test_route_lookup_replies_are_read_for_their_output_bridge() -> None:
    assert doctor.route_dev("src 198.18.0.11\ngateway ::\ndev br-phy\n") == "br-phy"
    assert doctor.route_dev("Not found\n") is None
    assert doctor.route_dev("") is None


def test_tunnels_the_daemon_reports_not_up_fail() -> None:
    up = TunnelState("198.18.0.12", "ob0", "nt1", "up")
    bad = TunnelState("198.18.0.13", "ob0", "nt2", "error: could not open network device")
    view = DaemonView("0.1.0", "/x", tunnels=(up, bad))
    c = doctor.judge_tunnels(view, 2)
    assert c.status == FAIL and "ob0 -> 198.18.0.13 (nt2: error: could not" in c.detail
    assert doctor.judge_tunnels(DaemonView("0.1.0", "/x", tunnels=(up,)), 1).status == PASS
    ovs_down = TunnelState("198.18.0.12", "ob0", "nt1", "ovs down")  # the ovs check names it
    assert doctor.judge_tunnels(DaemonView("0.1.0", "/x", tunnels=(ovs_down,)), 1).status == PASS
    assert doctor.judge_tunnels(None, 1).status == SKIP


@given(
    underlay_mtu=st.integers(1280, 9000),
    tunnel=st.sampled_from(sorted(overlay.OVERHEAD)),
    ipv6=st.booleans(),
    mtus=st.lists(st.integers(576, 9000), max_size=4),
)
def test_overlay_mtu_passes_exactly_when_every_mtu_fits_the_agents_computation(
    underlay_mtu: int, tunnel: str, ipv6: bool, mtus: list[int]
) -> None:
    local = "2001:db8::11" if ipv6 else "198.18.0.11"
    limit = overlay.overlay_mtu(underlay_mtu, tunnel, ipv6)
    bridge, *rest = [*mtus, limit] if not mtus else mtus
    others = [(f"endpoint {i}", m) for i, m in enumerate(rest)]
    c = doctor.judge_overlay_mtu(
        "ob0", tunnel, Underlay(local, "br-phy", underlay_mtu), bridge, others
    )
    fits = all(m <= limit for m in (bridge, *rest))
    assert (c.status == PASS) == fits, c
    if not fits:
        assert f"--mtu {limit}" in c.fix
        largest = max(m for m in (bridge, *rest) if m > limit)
        assert f"raise the underlay MTU to {largest + underlay_mtu - limit}" in c.fix


def test_overlay_mtu_names_the_encapsulation_and_what_is_too_big() -> None:
    c = doctor.judge_overlay_mtu(
        "ob0", "geneve", Underlay("2001:db8::11", "br-phy", 1500), 1450, [("host end np1", 1400)]
    )
    assert c.status == FAIL
    assert "bridge 1450 > 1430 (underlay br-phy MTU 1500 - geneve 70 = 1430)" in c.detail
    assert (
        doctor.judge_overlay_mtu(
            "ob0", "gre", Underlay("198.18.0.11", "eth0", 1500), 1458, []
        ).status
        == PASS
    )
    assert doctor.judge_overlay_mtu("ob0", "vxlan", None, 1450, []).status == FAIL


def test_tx_checksum_on_fails_with_the_reconcile_fix() -> None:
    c = doctor.judge_tx_checksum(["netns:blue eth1"], 3, [])
    assert c.status == FAIL and "TCP hangs" in c.detail and "netplumb reconcile" in c.fix
    assert doctor.judge_tx_checksum([], 3, []).status == PASS
    assert doctor.judge_tx_checksum([], 0, []).status == SKIP
    assert "bridge ob0" in doctor.judge_tx_checksum([], 0, ["bridge ob0 (OVS unreachable)"]).detail


# ------------------------------------------------------------- forwarding


def _bridge(name: str, *addresses: str, gateway: str = "") -> BridgeRecord:
    net = None
    if gateway:
        net = NetworkSpec(name, ipaddress.ip_network("198.19.10.0/24"), 10, gateway=ip(gateway))
    return BridgeRecord(BridgeSpec(name, addresses=tuple(map(iface, addresses))), True, network=net)


def _endpoint(
    bridge: str,
    guest: str,
    *addresses: str,
    gateways: tuple[str, ...] = (),
    routes: tuple[RouteSpec, ...] = (),
    kind: LinkKind = LinkKind.VETH,
    net_gateways: tuple[str, ...] = (),
) -> EndpointRecord:
    spec = EndpointSpec(
        bridge=bridge,
        guest=GuestRef(GuestKind.NETNS, guest),
        addresses=tuple(map(iface, addresses)),
        gateways=tuple(map(ip, gateways)),
        routes=routes,
        kind=kind,
    )
    return EndpointRecord(
        spec, id=guest, host_ifname="np" + guest, mac="02:00:00:00:00:01", mtu=1500,
        net_gateways=tuple(map(ip, net_gateways)),
    )  # fmt: skip


def test_forwarding_is_needed_where_a_guest_routes_through_its_bridges_address() -> None:
    bridges = {
        "br0": _bridge("br0", "198.18.5.1/24", "2001:db8:5::1/64"),
        "br1": _bridge("br1", "198.18.6.1/24"),
        "web": _bridge("web", gateway="198.19.10.1"),
    }
    endpoints = [
        _endpoint("br0", "a", "198.18.5.10/24", gateways=("198.18.5.1",)),
        # a router elsewhere on the subnet: the host only bridges
        _endpoint("br1", "b", "198.18.6.10/24", gateways=("198.18.6.254",)),
        _endpoint(
            "br0",
            "c",
            "2001:db8:5::10/64",
            routes=(RouteSpec(ipaddress.ip_network("2001:db8:99::/48"), ip("2001:db8:5::1")),),
        ),
        _endpoint("web", "d", "198.19.10.5/24", net_gateways=("198.19.10.1",)),  # cluster
        _endpoint("br1", "e", kind=LinkKind.DUMMY),
    ]
    need = doctor.forwarding_needs(bridges, endpoints)
    assert need[4] == ["netns:a eth1 via 198.18.5.1 on br0", "netns:d eth1 via 198.19.10.1 on web"]
    assert need[6] == ["netns:c eth1 via 2001:db8:5::1 on br0"]
    assert doctor.forwarding_needs({"br1": bridges["br1"]}, endpoints[1:2]) == {4: [], 6: []}


def test_forwarding_off_where_needed_fails_and_says_which_sysctl() -> None:
    c = doctor.judge_forwarding(4, ["netns:a eth1 via 198.18.5.1 on br0"], enabled=False)
    assert c.name == "forwarding-ipv4" and c.status == FAIL
    assert "sysctl -w net.ipv4.ip_forward=1" in c.fix and "/etc/sysctl.d/" in c.fix
    c = doctor.judge_forwarding(6, ["x"], enabled=False)
    assert "net.ipv6.conf.all.forwarding=1" in c.fix
    assert doctor.judge_forwarding(4, ["x"], enabled=True).status == PASS
    assert doctor.judge_forwarding(4, [], enabled=False).status == SKIP
    assert doctor.judge_forwarding(4, ["x"], enabled=None).status == SKIP


# ------------------------------------------------------ bridges, endpoints


def test_missing_bridges_and_interfaces_fail_but_stopped_guests_do_not() -> None:
    assert doctor.judge_bridges(["br0"], 2).status == FAIL
    assert doctor.judge_bridges([], 2).status == PASS
    assert doctor.judge_bridges([], 0).status == SKIP
    found = [
        EndpointFinding("netns:a eth1", running=True),
        EndpointFinding("netns:b eth1", running=False),
    ]
    c = doctor.judge_endpoints(found, [])
    assert c.status == PASS and "1 with the guest not running" in c.detail
    found.append(EndpointFinding("docker:web eth1", running=True, guest_end=False))
    c = doctor.judge_endpoints(found, [])
    assert c.status == FAIL and "docker:web eth1 (no interface in the guest)" in c.detail
    assert "netplumb reconcile" in c.fix
    assert doctor.judge_endpoints([], ["docker:web eth1"]).status == SKIP


# ------------------------------------------------------------------ report


def test_the_text_report_prints_a_line_per_check_and_the_fix_under_failures() -> None:
    checks = [
        Check("socket", PASS, "/s is a socket", "never shown"),
        Check("daemon", FAIL, "does not answer", "start netplumbd"),
        Check("docker", SKIP, "no Docker guest"),
    ]
    lines = doctor.as_text(checks).splitlines()
    assert lines == [
        "PASS  socket  /s is a socket",
        "FAIL  daemon  does not answer",
        "              fix: start netplumbd",
        "SKIP  docker  no Docker guest",
        "1 of 3 checks failed",
    ]
    assert doctor.as_text(checks[:1]).splitlines()[-1] == "no problem found"
    doc = doctor.as_dict(checks)
    assert doc["ok"] is False and doc["failed"] == 1
    assert doc["checks"][1] == {
        "name": "daemon",
        "status": "fail",
        "detail": "does not answer",
        "fix": "start netplumbd",
    }


# ------------------------------------------------------- state and config


def test_the_state_is_read_without_being_written(tmp_path: Path) -> None:
    store = FileStore(str(tmp_path))
    store.put_bridge(_bridge("br0", "198.18.5.1/24"))
    store.put_endpoint(_endpoint("br0", "a", "198.18.5.10/24", gateways=("198.18.5.1",)))
    store.put_peer(PeerRecord(ip("198.18.0.12")))
    path = tmp_path / "state.json"
    before = (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path)))
    state = doctor.read_state(str(path))
    assert state is not None
    assert state.bridges == dict(store.bridges()) and state.endpoints == dict(store.endpoints())
    assert list(state.peers) == ["198.18.0.12"]
    assert (path.read_bytes(), path.stat().st_mtime_ns, sorted(os.listdir(tmp_path))) == before
    assert doctor.read_state(str(tmp_path / "none.json")) is None


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{ torn", "not valid JSON"),
        ("[]", "not a JSON object"),
        ('{"version": 99}', "schema version 99"),
        ('{"version": 1, "bridges": {}}', "bridges is not an array"),
        ('{"version": 1, "bridges": [{"kind": "linux"}]}', "a record in bridges is malformed"),
    ],
)
def test_a_bad_state_file_is_described(tmp_path: Path, content: str, says: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=says):
        doctor.read_state(str(path))
    c = doctor.judge_state(str(path), says, None)
    assert c.status == FAIL and "restore it from a backup" in c.fix


def test_the_config_is_the_given_file_else_the_default_one_else_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "netplumbd.toml"
    monkeypatch.setattr(doctor, "DEFAULT_CONFIG", str(default))
    path, exists, cfg, error = doctor.load_config(None)
    assert (path, exists, error) == (str(default), False, "")
    assert cfg.socket == "/run/netplumb/netplumbd.sock"
    assert doctor.judge_config(path, exists, error).status == PASS
    default.write_text('state_dir = "/srv/np"\n')
    assert doctor.load_config(None)[2].state_dir == "/srv/np"
    _, _, _, error = doctor.load_config(str(tmp_path / "missing.toml"))
    assert "does not exist" in error
    bad = tmp_path / "bad.toml"
    bad.write_text('sockett = "/x"\n')
    _, _, _, error = doctor.load_config(str(bad))
    assert "unknown key 'sockett'" in error
    assert doctor.judge_config(str(bad), True, error).status == FAIL
    # incomplete without a command line (TLS files for listen): named as such,
    # and the other checks go by what the file says
    partial = tmp_path / "partial.toml"
    partial.write_text('socket = "/srv/np.sock"\nlisten = "198.18.0.1:7443"\n')
    _, _, cfg, error = doctor.load_config(str(partial))
    assert "tls_cert" in error and cfg.socket == "/srv/np.sock"
    assert "unless its command line" in str(doctor.judge_config(str(partial), True, error).fix)


def test_the_socket_checked_is_the_flag_else_the_configs_else_the_environments() -> None:
    from netplumb.agent.config import Config

    env = {"NETPLUMB_SOCKET": "/env.sock"}
    assert doctor.socket_for(Config(), "/flag.sock", env) == "/flag.sock"
    assert doctor.socket_for(Config(socket="/cfg.sock"), None, env) == "/cfg.sock"
    assert doctor.socket_for(Config(), None, env) == "/env.sock"
    assert doctor.socket_for(Config(), None, {}) == "/run/netplumb/netplumbd.sock"


def test_within_gives_up_on_what_hangs() -> None:
    assert doctor.within(1, lambda: 42, "quick") == 42
    with pytest.raises(TimeoutError, match=r"slow did not answer within 0\.05s"):
        doctor.within(0.05, lambda: time.sleep(1), "slow")
    with pytest.raises(KeyError):
        doctor.within(1, lambda: {}["x"], "broken")


# ------------------------------------------------------------ command line


def _cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    rc = main(list(argv), env={}, stdout=out, stderr=err)
    return rc, out.getvalue(), err.getvalue()


def test_doctor_help_teaches_with_examples_and_the_exit_status() -> None:
    rc, out, _ = _cli("doctor", "--help")
    assert rc == 0
    assert "examples:" in out and "netplumb doctor --config" in out
    assert "7 when one does" in out and "forwarding-ipv4" in out
    rc, out, _ = _cli("--help")
    assert "7 a failing check (doctor)" in out


def test_doctor_is_local_not_through_connect() -> None:
    rc, out, err = _cli("--connect", "198.18.0.1:7443", "--insecure-tcp", "doctor")
    assert rc == 2 and out == "" and "run it there" in err


def test_a_broken_config_is_the_one_failing_check(tmp_path: Path) -> None:
    bad = tmp_path / "np.toml"
    bad.write_text("log_level = 'loud'\n")
    rc, out, _ = _cli("doctor", "--config", str(bad))
    assert rc == 7
    assert out.splitlines()[0].startswith("FAIL  config  ")
    assert "log_level 'loud'" in out and "fix: fix " in out
    rc, out, _ = _cli("--json", "doctor", "--config", str(bad))
    doc = json.loads(out)
    assert rc == 7 and doc["ok"] is False and doc["checks"][0]["name"] == "config"


def test_a_check_that_errors_fails_by_name_and_the_others_still_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from netplumb.agent.config import Config

    host = doctor.Host(Config(), doctor.State(), None, timeout=1)

    def boom() -> Check:
        raise RuntimeError("OVSDB went away")

    monkeypatch.setattr(host, "_bridges", boom)
    out: list[Check] = []
    host.check(out)
    assert out[0] == Check(
        "bridges",
        FAIL,
        "could not be checked: RuntimeError: OVSDB went away",
        "the error says what failed; run netplumb doctor again once it is fixed",
    )
    assert [c.name for c in out[1:]] == [
        "ovs",
        "ovs-vswitchd",
        "docker",
        "endpoints",
        "userspace-tunnel",
        "tunnels",
        "overlay-mtu",
        "tx-checksum",
        "forwarding-ipv4",
        "forwarding-ipv6",
    ]
    assert not doctor.failed(out[1:])
