"""The docker tier: a real dockerd (started by .ci/run, or by hand:
deploy/start-dockerd.sh) and a busybox image imported locally (no registry).
Skips without dockerd on a laptop, fails in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator

import pytest
from fixtures.docker import Containers
from fixtures.host import Daemon, Namespaces, remove_bridge, running_daemon, unique

IMAGE = "netplumb-test:busybox"
SOCKET = "/var/run/docker.sock"
APPLETS = (
    "sh",
    "ip",
    "ping",
    "sleep",
    "udhcpc",
    "cat",
    "ls",
    "ifconfig",
    "route",
    "nc",
    "hostname",
)


def require_docker() -> None:
    from fixtures.host import require_root

    require_root()
    problem = ""
    if not shutil.which("docker"):
        problem = "the docker client is not installed"
    elif not os.path.exists(SOCKET):
        problem = f"dockerd is not running ({SOCKET} is missing; deploy/start-dockerd.sh starts it)"
    elif subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode != 0:
        problem = "dockerd does not answer"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(problem + " (CI must run this tier)")
        pytest.skip(problem)


@pytest.fixture(scope="session")
def image() -> str:
    """A busybox image built from the host's busybox-static: no registry."""
    require_docker()
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode == 0:
        return IMAGE
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.fail("busybox-static is needed to build the test image")
    root = tempfile.mkdtemp(prefix="npimg")
    try:
        os.makedirs(f"{root}/bin")
        shutil.copy(busybox, f"{root}/bin/busybox")
        for applet in APPLETS:
            os.symlink("busybox", f"{root}/bin/{applet}")
        tar = subprocess.Popen(["tar", "-C", root, "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            ["docker", "import", "-", IMAGE], stdin=tar.stdout, check=True, capture_output=True
        )
        tar.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return IMAGE


@pytest.fixture
def containers(image: str) -> Iterator[Containers]:
    c = Containers(image)
    yield c
    c.cleanup()


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    require_docker()
    with running_daemon() as d:
        yield d


@pytest.fixture
def bridge(daemon: Daemon) -> Iterator[str]:
    name = unique("npdb")
    yield name
    remove_bridge(daemon, name)


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    ns = Namespaces()
    yield ns
    ns.cleanup()
