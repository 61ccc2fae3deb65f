"""The ovs tier: one lab host with its own ovsdb-server and ovs-vswitchd
(userspace datapath) and netplumbd. Needs root and Open vSwitch; skips
without them on a laptop, fails in CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures.lab import Lab, assert_gone, lab_up, require_lab


@pytest.fixture(scope="module")
def lab1() -> Iterator[Lab]:
    require_lab(ovs=True)
    with lab_up(1, ovs=True) as lab:
        yield lab
    assert_gone(lab)
