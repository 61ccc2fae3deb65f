"""Prometheus metrics of a real netplumbd (issue 7, item 4).

The agent runs in a namespace of its own ("the host"), with its metrics on
that namespace's 127.0.0.1:9464 (the default address), a guest namespace
and a peer namespace joined to it by a veth underlay; its OVSDB and Docker
endpoints are sockets that do not exist. Real attaches, refusals, drift
made by hand, reconciles and a kernel VXLAN tunnel move the counters and
gauges; the scrape is plain HTTP from inside that namespace."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fixtures.host import NETPLUMBD, Daemon, Namespaces, require_root, run
from netplumb.agent.drivers.netns import open_netns, socket_in
from prometheus_client.parser import text_string_to_metric_families

METRICS = "127.0.0.1:9464"
UNDERLAY, PEER = "198.18.77.1", "198.18.77.2"


def http_get(netns: str, address: str, path: str) -> tuple[str, str]:
    """(status, body) of GET http://address/path from inside ``netns``,
    through a socket made there (no process per scrape); status "refused"
    when nothing answers."""
    host, _, port = address.rpartition(":")
    handle = open_netns(f"/run/netns/{netns}")
    try:
        sock = socket_in(handle, socket.AF_INET, socket.SOCK_STREAM, 0)
    finally:
        handle.close()
    sock.settimeout(5)
    try:
        sock.connect((host, int(port)))
    except OSError as e:
        sock.close()
        return "refused", str(e)
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    conn.sock = sock
    try:
        conn.request("GET", path)
        reply = conn.getresponse()
        return str(reply.status), reply.read().decode()
    finally:
        conn.close()


class NsDaemon(Daemon):
    """netplumbd run inside ``netns`` (its socket and state stay in the
    filesystem, where the test reaches them)."""

    def __init__(self, netns: str, args: list[str]) -> None:
        super().__init__(args=args)
        self.netns = netns

    def start(self, timeout: float = 15) -> None:
        with open(self.log_path, "ab") as log:
            # fmt: off
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, NETPLUMBD,
                 "--socket", self.socket, "--state-dir", self.state_dir, "--log-level", "debug",
                 *self.args],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=self.env,
            )
            # fmt: on
        self.wait_ready(timeout)


@dataclass
class Host:
    daemon: NsDaemon
    ns: str  # the agent's namespace
    guest: str
    peer: str

    def get(self, path: str = "/metrics", ns: str = "", address: str = METRICS) -> tuple[str, str]:
        """(status, body) of http://address/path from inside ``ns``."""
        return http_get(ns or self.ns, address, path)

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        status, body = self.get()
        assert status == "200", body
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(body)
            for s in f.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        return self.scrape().get((name, frozenset(labels.items())))

    def wait_for(self, name: str, want: float, timeout: float = 5.0, **labels: str) -> None:
        """Sampled gauges follow within the sampler's short delay."""
        deadline = time.monotonic() + timeout
        while (got := self.value(name, **labels)) != want:
            assert time.monotonic() < deadline, f"{name}{labels} is {got}, not {want}"
            time.sleep(0.1)

    def np(self, *argv: str) -> tuple[int, str, str]:
        return self.daemon.cli(*argv)


@pytest.fixture(scope="module")
def host() -> Iterator[Host]:
    require_root()
    spaces = Namespaces()
    work = tempfile.mkdtemp(prefix="netplumb-metrics-")
    d: NsDaemon | None = None
    try:
        ns, guest, peer = spaces.new("npm-h"), spaces.new("npm-g"), spaces.new("npm-p")
        run(
            "ip", "-n", ns, "link", "add", "u0", "type", "veth", "peer", "name", "u1", "netns", peer
        )
        for where, dev, address in ((ns, "u0", UNDERLAY), (peer, "u1", PEER)):
            run("ip", "-n", where, "addr", "add", f"{address}/24", "dev", dev)
            run("ip", "-n", where, "link", "set", dev, "up")
        d = NsDaemon(
            ns,
            [
                "--ovsdb", f"unix:{work}/no-ovsdb.sock",
                "--docker-url", f"unix://{work}/no-docker.sock",
                "--underlay-address", UNDERLAY,
                "--metrics-address", METRICS,  # the fixture's "off" is overridden
            ],
        )  # fmt: skip
        d.start()
        yield Host(d, ns, guest, peer)
    finally:
        if d is not None:
            d.stop()
            shutil.rmtree(d.dir, ignore_errors=True)
        spaces.cleanup()  # the agent's bridges, veths and VXLAN go with its namespace
        shutil.rmtree(work, ignore_errors=True)


def test_attach_detach_refusals_and_repairs_are_counted(host: Host) -> None:
    before = host.scrape()
    assert before[("netplumb_endpoints", frozenset())] == 0
    # the start-up reconcile is counted
    assert before[("netplumb_reconciliations_total", frozenset({("cause", "reconcile")}))] >= 1

    rc, _, err = host.np("bridge", "add", "brm", "--address", "198.18.78.1/24")
    assert rc == 0, err
    rc, out, err = host.np("--json", "attach", "brm", f"netns:{host.guest}", "198.18.78.10/24")
    assert rc == 0, err
    host_ifname = json.loads(out)["host_ifname"]
    assert host.value("netplumb_endpoints") == 1
    assert host.value("netplumb_rpc_requests_total", method="Attach", code="OK") == 1
    assert host.value("netplumb_attach_duration_seconds_count", code="OK") == 1
    assert 0 < (host.value("netplumb_attach_duration_seconds_sum", code="OK") or 0) < 10
    host.wait_for("netplumb_endpoints_not_ready", 0)

    # refusals, counted by the reason the client is given
    guest = f"netns:{host.guest}"
    for argv, reason in (
        (["brm", guest, "198.18.78.300/24", "--ifname", "eth2"], "invalid-spec"),
        (["nosuchbr", guest, "198.18.78.11/24", "--ifname", "eth3"], "not-found"),
    ):
        rc, out, err = host.np("--json", "attach", *argv)
        assert rc != 0 and json.loads(out)["error"]["reason"] == reason, err
    assert host.value("netplumb_rpc_errors_total", method="Attach", reason="invalid-spec") == 1
    assert host.value("netplumb_rpc_errors_total", method="Attach", reason="not-found") == 1
    assert host.value("netplumb_attach_duration_seconds_count", code="INVALID_ARGUMENT") == 1
    assert host.value("netplumb_attach_duration_seconds_count", code="NOT_FOUND") == 1
    assert host.value("netplumb_endpoints") == 1

    # drift made by hand: sampled as not ready, then repaired by a reconcile
    reconciles = host.value("netplumb_reconciliations_total", cause="reconcile") or 0
    repairs = host.value("netplumb_repairs_total", cause="reconcile") or 0
    run("ip", "-n", host.ns, "link", "del", host_ifname)
    assert host.np("check")[0] == 6
    host.wait_for("netplumb_endpoints_not_ready", 1)
    rc, _, err = host.np("reconcile")
    assert rc == 0, err
    assert host.value("netplumb_reconciliations_total", cause="reconcile") == reconciles + 1
    assert host.value("netplumb_repairs_total", cause="reconcile") == repairs + 1
    assert host.value("netplumb_repair_failures_total", cause="reconcile") == 0
    host.wait_for("netplumb_endpoints_not_ready", 0)

    rc, _, err = host.np("detach", f"netns:{host.guest}")
    assert rc == 0, err
    assert host.value("netplumb_endpoints") == 0
    assert host.value("netplumb_detach_duration_seconds_count", code="OK") == 1
    assert host.value("netplumb_rpc_requests_total", method="Detach", code="OK") == 1
    assert host.np("bridge", "del", "brm")[0] == 0
    assert host.value("netplumb_bridges") == 0


def test_dependencies_agree_with_status(host: Host) -> None:
    rc, out, err = host.np("--json", "status")
    assert rc == 0, err
    told = {
        d["name"]: d["up"]
        for d in json.loads(out)["dependencies"]
        if d["enabled"] and d["name"] != "netlink"  # in-process: always up
    }
    assert told == {"ovsdb": False, "docker": False}  # both point at sockets that do not exist
    for name, up in told.items():
        assert host.value("netplumb_dependency_up", dependency=name) == (1 if up else 0)
    assert host.value("netplumb_dependency_up", dependency="etcd") is None  # standalone


def test_peers_and_tunnel_state(host: Host) -> None:
    rc, _, err = host.np("bridge", "add", "brv", "--kind", "linux", "--vni", "4242")
    assert rc == 0, err
    try:
        assert host.value("netplumb_peers") == 0
        rc, _, err = host.np("peer", "add", PEER, "--name", "p")
        assert rc == 0, err
        assert host.value("netplumb_peers") == 1
        tunnel = {"bridge": "brv", "peer": PEER, "type": "vxlan"}
        host.wait_for("netplumb_tunnel_up", 1, **tunnel)
        (peer,) = json.loads(host.np("--json", "peer", "ls")[1])["peers"]
        port = peer["tunnels"][0]["port"]
        run("ip", "-n", host.ns, "link", "del", port)  # the tunnel device, by hand
        assert host.np("check")[0] == 6
        host.wait_for("netplumb_tunnel_up", 0, **tunnel)
        assert host.np("reconcile")[0] == 0
        host.wait_for("netplumb_tunnel_up", 1, **tunnel)
        assert host.np("peer", "del", PEER)[0] == 0
        host.wait_for("netplumb_tunnel_up", None, **tunnel)  # type: ignore[arg-type]
        assert host.value("netplumb_peers") == 0
    finally:
        host.np("peer", "del", PEER)
        host.np("bridge", "del", "brv")


def test_metrics_answer_only_where_asked(host: Host) -> None:
    listening = run("ip", "netns", "exec", host.ns, "ss", "-Hltn").stdout.split("\n")
    ours = [
        line.split()[3]
        for line in listening
        if line.split()[3:4] and line.split()[3].endswith(":9464")
    ]
    assert ours == [METRICS], listening
    # not from the peer, over the underlay the agent has an address on
    status, body = host.get(ns=host.peer, address=f"{UNDERLAY}:9464")
    assert status == "refused", body
    status, body = host.get("/nothing")
    assert status == "404" and "/metrics" in body
    status, body = host.get("/")
    assert status == "200" and "netplumb_build_info" in body


def test_a_metrics_port_in_use_stops_the_start() -> None:
    require_root()
    work = tempfile.mkdtemp(prefix="netplumb-metrics-busy-")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            address = f"127.0.0.1:{busy.getsockname()[1]}"
            sock, state = os.path.join(work, "np.sock"), os.path.join(work, "state")
            res = subprocess.run(
                [NETPLUMBD, "--socket", sock, "--state-dir", state, "--metrics-address", address],
                capture_output=True,
                text=True,
                timeout=30,
            )
        assert res.returncode == 1, res.stderr
        message = " ".join(res.stderr.split())
        assert f"cannot serve metrics on {address}: Address already in use" in message
        assert "metrics_address (--metrics-address)" in message and "'off'" in message
        assert os.listdir(work) == []  # stopped before the state dir and the socket
    finally:
        shutil.rmtree(work, ignore_errors=True)
