"""`netplumb doctor` on a lab host without OVS (its own namespace and
netplumbd): a healthy set-up passes; then each fault is made on purpose and
doctor must name the failing check, print its fix and exit 7. Doctor runs
inside the host's namespace (`ip netns exec`), as an operator would; every
fault is undone afterwards, also when the test fails."""

from __future__ import annotations

import grp
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fixtures.doctor import (
    Report,
    dead_socket,
    doctor,
    lab_config,
    sysctl,
    throwaway_group,
    write_config,
)
from fixtures.host import run, unique
from fixtures.lab import Lab, assert_gone, lab_up, require_lab


@dataclass
class Host:
    lab: Lab
    group: str
    config: str
    guest: str  # a namespace with an endpoint on each bridge
    gateway_bridge: str  # Linux bridge whose address is the guest's gateway
    overlay_bridge: str  # Linux overlay (kernel VXLAN) with a peer

    @property
    def ns(self) -> str:
        return self.lab.hosts[0].netns

    def doctor(self, config: str | None = None, *args: str) -> Report:
        return doctor(self.lab, "h1", config or self.config, *args)

    def np(self, *args: str) -> None:
        res = self.lab.netplumb("h1", *args)
        assert res.returncode == 0, res.stderr


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    require_lab(ovs=False)
    guest = unique("npdg-")
    with (
        throwaway_group() as group,
        lab_up(1, ovs=False, agent_args=["--socket-group", group]) as lab,
    ):
        run("ip", "netns", "add", guest)
        try:
            h = Host(lab, group, "", guest, "dgw0", "dov0")
            h.config = lab_config(lab, "h1", lab.workdir / "doctor.toml", group)
            h.np(
                "bridge",
                "add",
                "dgw0",
                "--address",
                "198.19.7.1/24",
                "--address",
                "2001:db8:7::1/64",
            )
            h.np(
                "attach",
                "dgw0",
                f"netns:{guest}",
                "198.19.7.11/24@198.19.7.1",
                "2001:db8:7::11/64@2001:db8:7::1",
            )
            h.np("bridge", "add", "dov0", "--vni", "4242")
            h.np("peer", "add", "198.18.0.12")
            h.np("attach", "dov0", f"netns:{guest}", "198.19.8.11/24", "--ifname", "eth2")
            # The guest routes through h1: h1 forwards (in its own namespace).
            sysctl(h.ns, "net.ipv4.ip_forward", "1")
            sysctl(h.ns, "net.ipv6.conf.all.forwarding", "1")
            yield h
        finally:
            run("ip", "netns", "del", guest, check=False)
    assert_gone(lab)


def test_a_healthy_host_passes_every_check(host: Host) -> None:
    r = host.doctor()
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.failed == []
    assert r.stdout.rstrip().endswith("no problem found")
    for name in (
        "config",
        "state-file",
        "socket",
        "socket-permissions",
        "socket-connect",
        "daemon",
        "daemon-config",
        "bridges",
        "endpoints",
        "tunnels",
        "overlay-mtu",
        "forwarding-ipv4",
        "forwarding-ipv6",
    ):
        assert r.status(name) == "PASS", f"{name}:\n{r.stdout}"
    # no OVS here and none recorded: not a failure, and said why
    assert r.status("ovs") == "SKIP" and "no OVS bridge recorded" in r.named("ovs")[0].detail


def test_a_stopped_daemon_is_named_with_how_to_start_it(host: Host) -> None:
    lab = host.lab
    sock = lab.hosts[0].socket
    try:
        lab.stop_agent("h1", sig=signal.SIGKILL)  # kill -9 leaves a stale socket
        r = host.doctor()
        assert r.status("socket") == "PASS"
        assert "nothing listens" in r.failing("socket-connect").detail
        assert "start netplumbd" in r.failing("daemon").fix
        # the host checks work without the daemon
        assert r.status("endpoints") == "PASS" and r.status("bridges") == "PASS"
        os.unlink(sock)  # as a clean stop leaves it: no socket
        r = host.doctor()
        assert "not running" in r.failing("socket").detail
        assert "start netplumbd" in r.failing("daemon").fix
        assert r.status("socket-connect") == "SKIP"
    finally:
        if lab.agent_pid("h1") is None:
            lab.start_agent("h1")


def test_a_socket_with_the_wrong_mode_and_group_is_named(host: Host) -> None:
    sock = host.lab.hosts[0].socket
    try:
        os.chmod(sock, 0o666)
        os.chown(sock, 0, 0)
        c = host.doctor().failing("socket-permissions")
        assert "mode 0666, expected 0660" in c.detail
        assert f"group root, expected {host.group}" in c.detail
        assert f"chown root:{host.group} {sock}" in c.fix and f"chmod 0660 {sock}" in c.fix
    finally:
        os.chown(sock, 0, grp.getgrnam(host.group).gr_gid)
        os.chmod(sock, 0o660)


def test_forwarding_off_where_guests_route_through_the_host_is_named(host: Host) -> None:
    try:
        sysctl(host.ns, "net.ipv4.ip_forward", "0")
        r = host.doctor()
        c = r.failing("forwarding-ipv4")
        assert f"netns:{host.guest} eth1 via 198.19.7.1 on dgw0" in c.detail
        assert "sysctl -w net.ipv4.ip_forward=1" in c.fix
        assert r.status("forwarding-ipv6") == "PASS"  # the other family is on
    finally:
        sysctl(host.ns, "net.ipv4.ip_forward", "1")


def test_an_underlay_too_small_for_the_overlay_is_named(host: Host) -> None:
    try:
        run("ip", "-n", host.ns, "link", "set", "eth0", "mtu", "1400")
        c = host.doctor().failing("overlay-mtu")
        assert "bridge dov0" in c.detail and "> 1350" in c.detail
        assert "underlay eth0 MTU 1400 - vxlan 50 = 1350" in c.detail
        assert "--mtu 1350" in c.fix and "raise the underlay MTU to 1500" in c.fix
    finally:
        run("ip", "-n", host.ns, "link", "set", "eth0", "mtu", "1500")


def _recorded_state(directory: str, docker_guest: bool) -> str:
    """A state directory as a netplumbd would have left it, written with the
    agent's own store: one bridge, and an endpoint of a Docker container."""
    from netplumb.agent.core.model import (
        BridgeRecord,
        BridgeSpec,
        EndpointRecord,
        EndpointSpec,
        GuestKind,
        GuestRef,
    )
    from netplumb.agent.store import FileStore

    state = os.path.join(directory, "state")
    store = FileStore(state)
    store.put_bridge(BridgeRecord(BridgeSpec("dbr0"), owned=True))
    if docker_guest:
        guest = GuestRef(GuestKind.DOCKER, "ab" * 32)
        store.put_endpoint(
            EndpointRecord(
                EndpointSpec(bridge="dbr0", guest=guest),
                id="0123456789abcdef",
                host_ifname="np0123456789ab",
                mac="02:00:00:00:00:01",
                mtu=1500,
                guest_name="web",
            )
        )
    return state


def test_docker_unreachable_with_a_docker_guest_recorded_is_named(host: Host) -> None:
    work = str(host.lab.workdir / "docker-case")
    os.makedirs(work)
    try:
        state = _recorded_state(work, docker_guest=True)
        with dead_socket(work) as dead:
            config = write_config(
                os.path.join(work, "np.toml"),
                socket=os.path.join(work, "none.sock"),
                socket_group=host.group,
                state_dir=state,
                docker_url=f"unix://{dead}",
            )
            r = host.doctor(config)
        c = r.failing("docker")
        assert f"unix://{dead}" in c.detail and "Docker guests recorded: web" in c.detail
        assert "start dockerd" in c.fix and "docker_url" in c.fix
        assert "not looked at (Docker unreachable)" in r.named("endpoints")[0].detail
    finally:
        shutil.rmtree(work)


def test_an_unparseable_state_file_is_named(host: Host) -> None:
    work = str(host.lab.workdir / "state-case")
    os.makedirs(work)
    try:
        state = _recorded_state(work, docker_guest=False)
        with open(os.path.join(state, "state.json"), "a") as f:
            f.write("{ torn")
        config = write_config(
            os.path.join(work, "np.toml"),
            socket=os.path.join(work, "none.sock"),
            socket_group=host.group,
            state_dir=state,
        )
        c = host.doctor(config).failing("state-file")
        assert "state.json: not valid JSON" in c.detail
        assert "restore it from a backup" in c.fix
    finally:
        shutil.rmtree(work)
