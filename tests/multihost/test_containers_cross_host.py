"""Docker containers on two lab hosts, each attached by its host's own
netplumbd to an overlay bridge, reach each other; a container restart on one
host brings its address and MAC back and traffic resumes.

(The lab's hosts are namespaces of one machine sharing one dockerd; each
host's agent plumbs only the containers it was asked to.)"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest
from fixtures.docker import Containers, ensure_image
from fixtures.host import unique
from fixtures.lab import Lab, assert_gone, lab_up, np, require_lab


@pytest.fixture(scope="module")
def lab2() -> Iterator[Lab]:
    require_lab(ovs=True)
    ensure_image()
    with lab_up(2, ovs=True) as lab:
        yield lab
    assert_gone(lab)


@pytest.fixture
def containers() -> Iterator[Containers]:
    c = Containers(ensure_image())
    yield c
    c.cleanup()


def ping_from(container: str, address: str, tries: int = 5) -> bool:
    """The userspace datapath may drop the first packets to a peer whose
    underlay MAC it has not learnt yet: a few tries."""
    for _ in range(tries):
        res = subprocess.run(
            ["docker", "exec", container, "ping", "-c1", "-W1", address],
            capture_output=True,
            timeout=30,
        )
        if res.returncode == 0:
            return True
    return False


@pytest.mark.parametrize("kind", ["linux", "ovs"])
def test_containers_on_two_hosts_ping_over_the_overlay(
    lab2: Lab, containers: Containers, kind: str
) -> None:
    br = unique("bxc")
    vni = "4201" if kind == "linux" else "4202"
    h1, h2 = (h.name for h in lab2.hosts)
    a, _ = containers.run()
    b, _ = containers.run()
    try:
        for h, other in ((h1, h2), (h2, h1)):
            np(lab2, h, "bridge", "add", br, "--kind", kind, "--vni", vni)
            np(lab2, h, "peer", "add", lab2.host(other).underlay_address)
        ep_a = np(lab2, h1, "attach", br, a, "198.19.42.1/24")
        np(lab2, h2, "attach", br, b, "198.19.42.2/24")
        assert ping_from(a, "198.19.42.2") and ping_from(b, "198.19.42.1")
        # each agent knows only its own container
        assert [e["guest_name"] for e in np(lab2, h1, "ls")["endpoints"]] == [a]  # type: ignore[index]
        assert [e["guest_name"] for e in np(lab2, h2, "ls")["endpoints"]] == [b]  # type: ignore[index]
        subprocess.run(["docker", "restart", "-t", "0", a], check=True, timeout=60)
        deadline = time.monotonic() + 10
        while True:
            got = np(lab2, h1, "ls")["endpoints"][0]  # type: ignore[index]
            if got["state"] == "ready" and ping_from(b, "198.19.42.1", tries=1):
                break
            assert time.monotonic() < deadline, f"not back after docker restart: {got}"
            time.sleep(0.2)
        assert got["mac"] == ep_a["mac"]
    finally:
        for h in (h1, h2):
            lab2.netplumb(h, "detach", a)
            lab2.netplumb(h, "detach", b)
            lab2.netplumb(h, "bridge", "del", br)
        for h, other in ((h1, h2), (h2, h1)):
            lab2.netplumb(h, "peer", "del", lab2.host(other).underlay_address)
    for h in (h1, h2):
        left = lab2.netplumb(h, "check")
        assert left.returncode == 0, f"{h} left drift behind: {left.stdout}"
