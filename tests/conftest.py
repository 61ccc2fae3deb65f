"""Test tiers by directory: the marker of a test is the folder it lives in
(tests/unit -> unit, tests/netns -> netns, tests/multihost -> multihost,
tests/bench -> bench)."""

from __future__ import annotations

import pathlib

import pytest

TIERS = ("unit", "netns", "ovs", "docker", "multihost", "bench")
ROOT = pathlib.Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        rel = pathlib.Path(str(item.fspath)).relative_to(ROOT)
        tier = rel.parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


# Shared helpers live in tests/fixtures (imported as ``fixtures.*``).
import sys  # noqa: E402

sys.path.insert(0, str(ROOT))
