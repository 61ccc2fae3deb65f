from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures.host import Daemon, Namespaces, delete_links, running_daemon, unique


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
    c = daemon.client()
    try:
        for ep in c.list_endpoints(bridge=name):
            c.detach(ep.guest, ep.ifname)
        c.delete_bridge(name)
    except Exception:
        pass
    finally:
        c.close()
    delete_links([name])
