"""The docker tier: a real dockerd (started by .ci/run, or by hand:
deploy/start-dockerd.sh) and a busybox image imported locally (no registry).
Skips without dockerd on a laptop, fails in CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures.docker import Containers, ensure_image, require_docker
from fixtures.host import Daemon, Namespaces, remove_bridge, running_daemon, unique


@pytest.fixture(scope="session")
def image() -> str:
    """A busybox image built from the host's busybox-static: no registry."""
    return ensure_image()


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
