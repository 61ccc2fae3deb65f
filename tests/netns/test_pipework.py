"""The pipework drop-in against a real netplumbd: a guest ends up as
pipework would leave it, and better (repeatable, recorded, undoable)."""

from __future__ import annotations

import hashlib
import io
import subprocess

from fixtures.host import (
    NETPLUMB,
    Daemon,
    Namespaces,
    addresses,
    delete_links,
    link,
    ping,
    routes,
    unique,
)


def pipework(daemon: Daemon, *argv: str) -> tuple[int, str]:
    from netplumb.cli.pipework import main

    err = io.StringIO()
    rc = main(list(argv), env={"NETPLUMB_SOCKET": daemon.socket}, stdout=io.StringIO(), stderr=err)
    return rc, err.getvalue()


def test_pipework_creates_the_bridge_and_plumbs_the_guest(
    daemon: Daemon, netns: Namespaces
) -> None:
    br = unique("brpw")  # a missing name starting with br: a Linux bridge is created
    a, b = netns.new(), netns.new()
    try:
        rc, err = pipework(daemon, br, "-i", "eth2", a, "198.18.50.5/24@198.18.50.1", "U:web1")
        assert rc == 0, err
        rc, err = pipework(daemon, br, b, "198.18.50.6/24")
        assert rc == 0, err
        assert link(br)["linkinfo"]["info_kind"] == "bridge"  # type: ignore[index]
        guest = link("eth2", a)
        want_mac = "02:" + ":".join(f"{x:02x}" for x in hashlib.md5(b"web1\n").digest()[:5])
        assert guest is not None and guest["address"] == want_mac
        assert addresses("eth2", a) == {"198.18.50.5/24"}
        assert [r["gateway"] for r in routes(a) if r["dst"] == "default"] == ["198.18.50.1"]
        assert ping(a, "198.18.50.6")
        # the same command again: a no-op, not pipework's "Link exists and is up"
        rc, err = pipework(daemon, br, "-i", "eth2", a, "198.18.50.5/24@198.18.50.1", "U:web1")
        assert rc == 0, err
        # routes through pipework route, recorded
        rc, err = pipework(
            daemon,
            "route",
            f"netns:{a}",
            "add",
            "198.19.50.0/24",
            "via",
            "198.18.50.1",
            "dev",
            "eth2",
        )
        assert rc == 0, err
        assert any(r["dst"] == "198.19.50.0/24" for r in routes(a))
        eps = daemon.cli_json("ls")["endpoints"]
        mine = [e for e in eps if e["guest"] == f"netns:{a}"]
        assert len(mine) == 1 and any(
            r["destination"] == "198.19.50.0/24" for r in mine[0]["routes"]
        )
        # a different address on the same interface: a conflict, nothing changed
        rc, err = pipework(daemon, br, "-i", "eth2", a, "198.18.50.9/24")
        assert rc == 4 and "detach" in err
        assert addresses("eth2", a) == {"198.18.50.5/24"}
    finally:
        for ns in (a, b):
            daemon.cli("detach", f"netns:{ns}")
        daemon.cli("bridge", "del", br)
        delete_links([br])


def test_pipework_mac_of_u_string_matches_pipework(daemon: Daemon, netns: Namespaces) -> None:
    br = unique("brpw")
    a = netns.new()
    try:
        assert pipework(daemon, br, a, "0/0", "U:foo")[0] == 0
        assert link("eth1", a)["address"] == "02:d3:b0:73:84:d1"  # type: ignore[index]
        assert hashlib.md5(b"foo\n").hexdigest().startswith("d3b07384d1")
        assert addresses("eth1", a) == set()
    finally:
        daemon.cli("detach", f"netns:{a}")
        daemon.cli("bridge", "del", br)
        delete_links([br])


def test_unknown_host_interface_changes_nothing(daemon: Daemon, netns: Namespaces) -> None:
    a = netns.new()
    rc, err = pipework(daemon, "nosuchif0", a, "198.18.51.5/24")
    assert rc == 3 and "do not know how to set up" in err
    assert link("eth1", a) is None


def test_pipework_command_is_installed() -> None:
    pw = NETPLUMB.replace("netplumb", "pipework")
    res = subprocess.run([pw, "--help"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0 and "pipework" in res.stdout
    res = subprocess.run(
        [pw, "br0", "c1", "198.18.0.5"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 2 and "Maybe you meant 198.18.0.5/24?" in res.stderr


def test_pipework_onto_a_bridge_netplumb_made_with_options(
    daemon: Daemon, netns: Namespaces
) -> None:
    br = unique("npbo")
    a = netns.new()
    try:
        assert (
            daemon.cli("bridge", "add", br, "--address", "198.18.52.1/24", "--mtu", "1400")[0] == 0
        )
        rc, err = pipework(daemon, br, a, "198.18.52.5/24")
        assert rc == 0, err
        assert link("eth1", a)["mtu"] == 1400  # type: ignore[index]
        assert ping(a, "198.18.52.1")
    finally:
        daemon.cli("detach", f"netns:{a}")
        daemon.cli("bridge", "del", br)
        delete_links([br])
