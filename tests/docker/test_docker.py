"""Docker containers as guests: found by name, id or id prefix, followed
through restarts and removal."""

from __future__ import annotations

import json
import subprocess
import time

from fixtures.docker import Containers
from fixtures.host import Daemon, link, run


def in_container(name: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", name, *argv], capture_output=True, text=True, timeout=30
    )


def container_pid(name: str) -> int:
    return int(run("docker", "inspect", "-f", "{{.State.Pid}}", name).stdout.strip())


def test_attach_by_name_id_and_prefix_and_ping(
    daemon: Daemon, containers: Containers, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)
    a, a_id = containers.run()
    _, b_id = containers.run()
    c, c_id = containers.run()
    ep_a = daemon.cli_json("attach", bridge, a, "198.18.30.1/24")  # bare name: Docker first
    ep_b = daemon.cli_json("attach", bridge, f"docker:{b_id}", "198.18.30.2/24")
    ep_c = daemon.cli_json("attach", bridge, f"docker:{c_id[:10]}", "198.18.30.3/24")
    assert ep_a["guest"] == f"docker:{a_id}" and ep_a["guest_name"] == a
    assert ep_b["guest"] == f"docker:{b_id}" and ep_c["guest"] == f"docker:{c_id}"
    assert in_container(a, "ping", "-c1", "-W2", "198.18.30.2").returncode == 0
    assert in_container(c, "ping", "-c1", "-W2", "198.18.30.1").returncode == 0
    # the same attach through another name of the same container is a no-op
    again = daemon.cli_json("attach", bridge, f"docker:{a}", "198.18.30.1/24")
    assert again["id"] == ep_a["id"]


def test_unknown_and_stopped_containers(
    daemon: Daemon, containers: Containers, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)
    rc, _, err = daemon.cli("attach", bridge, "docker:npc-no-such-container", "198.18.31.1/24")
    assert rc == 3 and "no container" in err
    name, _ = containers.run()
    run("docker", "stop", "-t", "0", name)
    rc, out, err = daemon.cli("--json", "attach", bridge, f"docker:{name}", "198.18.31.1/24")
    assert rc == 4 and "not running" in err
    assert json.loads(out)["error"]["code"] == "FAILED_PRECONDITION"


def test_restart_brings_back_the_same_ip_and_mac_within_a_second(
    daemon: Daemon, containers: Containers, bridge: str
) -> None:
    daemon.cli("bridge", "add", bridge)
    a, _ = containers.run()
    b, _ = containers.run()
    ep = daemon.cli_json(
        "attach", bridge, a, "198.18.32.1/24", "--route", "198.19.32.0/24@198.18.32.254"
    )
    daemon.cli_json("attach", bridge, b, "198.18.32.2/24")
    old_pid = container_pid(a)
    run("docker", "restart", "-t", "0", a)
    started = time.monotonic()
    deadline = started + 5
    ok = False
    while time.monotonic() < deadline:
        if in_container(a, "ping", "-c1", "-W1", "198.18.32.2").returncode == 0:
            ok = True
            break
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert ok, f"no connectivity after the restart:\n{daemon.log()[-2000:]}"
    assert container_pid(a) != old_pid  # a new namespace indeed
    shown = in_container(a, "ip", "addr", "show", "eth1").stdout
    assert "198.18.32.1/24" in shown and ep["mac"] in shown
    assert "198.19.32.0/24" in in_container(a, "ip", "route").stdout
    assert elapsed < 1.0 + 0.5, f"re-plumbed after {elapsed:.2f} s"  # 1 s, plus docker's own start


def test_rm_f_leaves_nothing_behind(daemon: Daemon, containers: Containers, bridge: str) -> None:
    daemon.cli("bridge", "add", bridge)
    a, a_id = containers.run()
    ep = daemon.cli_json("attach", bridge, a, "198.18.33.1/24")
    assert link(ep["host_ifname"]) is not None
    run("docker", "rm", "-f", a)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        eps = daemon.cli_json("ls")["endpoints"]
        if all(e["guest"] != f"docker:{a_id}" for e in eps):
            break
        time.sleep(0.05)
    assert all(e["guest"] != f"docker:{a_id}" for e in daemon.cli_json("ls")["endpoints"])
    assert link(ep["host_ifname"]) is None
    state = json.load(open(f"{daemon.state_dir}/state.json"))
    assert a_id not in json.dumps(state)


def test_pipework_on_containers_survives_a_restart(daemon: Daemon, containers: Containers) -> None:
    """pipework's own use: two containers on a bridge by name; unlike with
    pipework, a restart keeps the interface."""
    import io

    from fixtures.host import delete_links, unique
    from netplumb.cli.pipework import main as pipework

    br = unique("brpd")
    a, _ = containers.run()
    b, _ = containers.run()
    env = {"NETPLUMB_SOCKET": daemon.socket}
    try:
        for name, addr in ((a, "198.18.34.1/24"), (b, "198.18.34.2/24")):
            err = io.StringIO()
            assert pipework([br, name, addr], env=env, stdout=io.StringIO(), stderr=err) == 0, (
                err.getvalue()
            )
        assert in_container(a, "ping", "-c1", "-W2", "198.18.34.2").returncode == 0
        run("docker", "restart", "-t", "0", b)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if in_container(a, "ping", "-c1", "-W1", "198.18.34.2").returncode == 0:
                break
            time.sleep(0.1)
        assert in_container(a, "ping", "-c1", "-W1", "198.18.34.2").returncode == 0
    finally:
        for name in (a, b):
            daemon.cli("detach", f"docker:{name}")
        daemon.cli("bridge", "del", br)
        delete_links([br])
