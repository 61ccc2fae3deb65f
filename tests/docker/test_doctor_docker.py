"""`netplumb doctor` with Docker guests: it finds a container's namespace
through dockerd, names a container that lost its interface (and `netplumb
reconcile`, the fix it prints, puts it back), and names dockerd when it
cannot be reached while a Docker guest is recorded."""

from __future__ import annotations

from pathlib import Path

from fixtures.docker import Containers
from fixtures.doctor import Report, dead_socket, parse, write_config
from fixtures.host import NETPLUMB, Daemon, run


def doctor(config: str) -> Report:
    res = run(NETPLUMB, "doctor", "--config", config, check=False)
    return Report(res.returncode, res.stdout, res.stderr, parse(res.stdout))


def test_doctor_names_a_container_that_lost_its_interface_and_an_unreachable_dockerd(
    daemon: Daemon, containers: Containers, bridge: str, tmp_path: Path
) -> None:
    assert daemon.cli("bridge", "add", bridge)[0] == 0
    name, _ = containers.run()
    assert daemon.cli("attach", bridge, name, "198.18.32.1/24")[0] == 0
    config = write_config(tmp_path / "np.toml", socket=daemon.socket, state_dir=daemon.state_dir)
    r = doctor(config)
    assert r.status("docker") == "PASS" and r.status("endpoints") == "PASS", r.stdout

    pid = run("docker", "inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    run("nsenter", "-t", pid, "-n", "ip", "link", "del", "eth1")
    c = doctor(config).failing("endpoints")
    assert f"{name} eth1 (no interface in the guest, no host end)" in c.detail
    assert "netplumb reconcile" in c.fix
    assert daemon.cli("reconcile")[0] == 0
    assert doctor(config).status("endpoints") == "PASS"

    with dead_socket(str(tmp_path)) as dead:
        config = write_config(
            tmp_path / "dead.toml",
            socket=daemon.socket,
            state_dir=daemon.state_dir,
            docker_url=f"unix://{dead}",
        )
        r = doctor(config)
    c = r.failing("docker")
    assert f"Docker guests recorded: {name}" in c.detail and "start dockerd" in c.fix
    assert "not looked at (Docker unreachable)" in r.named("endpoints")[0].detail
