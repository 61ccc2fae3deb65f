"""The multihost tier: several netplumb hosts on this machine (deploy/lab).

Needs root and Open vSwitch; skips without them on a laptop, fails in CI."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fixtures.lab import Lab, assert_gone, lab_up, require_lab


@pytest.fixture(scope="module")
def lab3() -> Iterator[Lab]:
    """A 3-host OVS lab for the module, torn down after it (also on failure)."""
    require_lab(ovs=True)
    with lab_up(3, ovs=True) as lab:
        yield lab
    assert_gone(lab)
