from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures.host import Daemon, Namespaces, remove_bridge, running_daemon, unique


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    with running_daemon() as d:
        yield d


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    ns = Namespaces()
    yield ns
    ns.cleanup()


@pytest.fixture
def bridge(daemon: Daemon) -> Iterator[str]:
    """A fresh bridge name; the bridge and anything left on it are removed
    after the test, also when it fails."""
    name = unique("nptb")
    yield name
    remove_bridge(daemon, name)
