"""The etcd driver against real etcd processes (tests/fixtures/etcd.py), no
mocks: documents and atomic writes, key validation, registrations under a
lease (crash, graceful stop, lost lease, outage), snapshot watches (changes,
coalescing, resync after an outage), failover in a 3-member cluster (a
member killed or hung, including the one in use), and fast UNAVAILABLE
while etcd is down. Timings are printed (``pytest -s``)."""

from __future__ import annotations

import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import etcd3gw
import pytest
from fixtures.etcd import EtcdCluster, etcd_cluster, require_etcd
from fixtures.host import Namespaces, require_root, run
from netplumb.agent.drivers.etcd import EtcdDriver
from netplumb.agent.errors import DependencyUnavailable, InternalError, InvalidSpec


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    require_etcd()
    with etcd_cluster(1) as cluster:
        yield cluster


def unique_prefix() -> str:
    return f"/npt{secrets.token_hex(4)}"


@pytest.fixture
def drivers(etcd: EtcdCluster) -> Iterator[Callable[..., EtcdDriver]]:
    """Drivers on the module's cluster, all under one fresh prefix, closed after the test."""
    prefix = unique_prefix()
    made: list[EtcdDriver] = []

    def make(**kwargs: Any) -> EtcdDriver:
        kwargs.setdefault("prefix", prefix)
        d = EtcdDriver(kwargs.pop("endpoints", etcd.endpoints), **kwargs)
        made.append(d)
        return d

    yield make
    for d in made:
        d.close()


def wait_for(what: str, pred: Callable[[], object], timeout: float, step: float = 0.02) -> float:
    """Seconds until ``pred()`` is true; fails after ``timeout``."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what}: not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - start


def raw_client(url: str) -> etcd3gw.client.Etcd3Client:
    """etcd3gw itself, to look behind the driver (leases, foreign values)."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    return etcd3gw.client(host=parts.hostname, port=parts.port, timeout=5)


def lease_of(url: str, absolute_key: str) -> int:
    found = raw_client(url).get(absolute_key, metadata=True)
    assert found, absolute_key
    return int(found[0][1].get("lease", 0))


class Snapshots:
    """Records what a watch delivers."""

    def __init__(self) -> None:
        self.seen: list[dict[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, snapshot: dict[str, dict[str, Any]]) -> None:
        with self.lock:
            self.seen.append(snapshot)

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.seen)

    @property
    def last(self) -> dict[str, dict[str, Any]] | None:
        with self.lock:
            return self.seen[-1] if self.seen else None

    def wait(
        self, what: str, pred: Callable[[dict[str, dict[str, Any]]], bool], timeout: float = 5
    ) -> float:
        return wait_for(what, lambda: (s := self.last) is not None and pred(s), timeout)


# ------------------------------------------------------------------ documents


def test_create_only_if_absent_and_plain_reads_and_writes(
    drivers: Callable[..., EtcdDriver],
) -> None:
    d = drivers()
    assert d.get("ipam/net1/198.18.0.10") is None
    assert d.create("ipam/net1/198.18.0.10", {"host": "h1", "endpoint": "e1"})
    assert not d.create("ipam/net1/198.18.0.10", {"host": "h2", "endpoint": "e2"})
    assert d.get("ipam/net1/198.18.0.10") == {"endpoint": "e1", "host": "h1"}
    d.put("networks/n1", {"vni": 10, "subnet": "198.18.0.0/24", "nested": {"a": [1, 2]}})
    d.put("networks/n1", {"vni": 11, "subnet": "198.18.0.0/24"})
    assert d.get("networks/n1") == {"subnet": "198.18.0.0/24", "vni": 11}
    assert d.delete("networks/n1")
    assert not d.delete("networks/n1")  # missing: no error
    assert d.get("networks/n1") is None
    assert d.up and d.detail == f"etcd at {d.endpoints[0]}"


def test_create_only_if_nothing_under_a_prefix_changed_since_a_snapshot(
    drivers: Callable[..., EtcdDriver],
) -> None:
    d = drivers()
    d.put("networks/a", {"subnet": "198.18.10.0/24"})
    _, rev = d.get_prefix("networks")
    d.put("other/x", {"v": 1})  # outside the prefix: no matter
    assert d.create("networks/b", {"subnet": "198.18.11.0/24"}, ("networks", rev))
    # networks/b was written after rev: a decision from the old snapshot is stale
    assert not d.create("networks/c", {"subnet": "198.18.11.0/25"}, ("networks", rev))
    assert d.get("networks/c") is None
    _, rev2 = d.get_prefix("networks")
    assert d.create("networks/c", {"subnet": "198.18.12.0/24"}, ("networks", rev2))


def test_delete_if_only_with_the_stored_value(drivers: Callable[..., EtcdDriver]) -> None:
    d = drivers()
    d.put("names/n1/web", {"host": "h1", "addresses": ["198.18.0.10"]})
    assert not d.delete_if("names/n1/web", {"host": "h2", "addresses": ["198.18.0.10"]})
    assert not d.delete_if("names/n1/web", {"host": "h1"})
    assert d.get("names/n1/web") is not None
    # Values are stored with sorted keys: key order in the caller's dict does not matter.
    assert d.delete_if("names/n1/web", {"addresses": ["198.18.0.10"], "host": "h1"})
    assert d.get("names/n1/web") is None
    assert not d.delete_if("names/n1/web", {"host": "h1", "addresses": ["198.18.0.10"]})


def test_get_prefix_gives_relative_keys_and_the_revision(
    drivers: Callable[..., EtcdDriver], etcd: EtcdCluster
) -> None:
    d = drivers()
    other = drivers(prefix=d.prefix + "x")  # a sibling prefix: never mixed in
    other.put("hosts/z", {"name": "z"})
    empty, r0 = d.get_prefix("hosts/")
    assert empty == {} and r0 > 0
    d.put("hosts/h1", {"name": "h1"})
    d.put("hosts/h2", {"name": "h2"})
    d.put("hostsx/h3", {"name": "h3"})  # shares the first letters: not under hosts/
    d.put("networks/n1", {"vni": 1})
    hosts, r1 = d.get_prefix("hosts/")
    assert hosts == {"hosts/h1": {"name": "h1"}, "hosts/h2": {"name": "h2"}}
    assert r1 > r0
    assert d.get_prefix("hosts")[0] == hosts  # a prefix names a directory, "/" or not
    everything, r2 = d.get_prefix("")
    assert set(everything) == {"hosts/h1", "hosts/h2", "hostsx/h3", "networks/n1"}
    assert r2 == r1  # nothing written in between
    d.put("hosts/h1", {"name": "h1", "v": 2})
    assert d.get_prefix("hosts/")[1] > r1
    # Something that is not a JSON object, written behind netplumb's back:
    # skipped in listings, an error when read by name.
    raw_client(etcd.endpoints[0]).put(f"{d.prefix}/hosts/bad", "not json")
    assert set(d.get_prefix("hosts/")[0]) == {"hosts/h1", "hosts/h2"}
    with pytest.raises(InternalError):
        d.get("hosts/bad")


def test_keys_prefixes_and_urls_are_validated(
    drivers: Callable[..., EtcdDriver], etcd: EtcdCluster
) -> None:
    d = drivers()
    for key in ("", "/hosts/h1", "hosts/", "hosts//h1", "hosts/h\n1", "hosts/\x00"):
        with pytest.raises(InvalidSpec):
            d.put(key, {"a": 1})
        with pytest.raises(InvalidSpec):
            d.get(key)
    with pytest.raises(InvalidSpec):
        d.get_prefix("/hosts")
    with pytest.raises(InvalidSpec):
        d.watch_prefix("a//b", lambda s: None)
    with pytest.raises(InternalError):
        d.put("hosts/h1", {"when": object()})  # not JSON
    for prefix in ("netplumb", "/", "//x", "/a//b"):
        with pytest.raises(InvalidSpec):
            EtcdDriver(etcd.endpoints, prefix=prefix)
    for urls in ([], ["198.18.0.1:2379"], ["ftp://198.18.0.1"], ["http://198.18.0.1:2379/v3"]):
        with pytest.raises(InvalidSpec):
            EtcdDriver(urls)
    with pytest.raises(InvalidSpec):
        EtcdDriver(["https://198.18.0.1:2379"], ca="/nonexistent/ca.pem")


# --------------------------------------------------------------- registration


def test_registration_expires_after_a_crash_and_updates_under_its_lease(
    drivers: Callable[..., EtcdDriver], etcd: EtcdCluster
) -> None:
    agent, observer = drivers(), drivers()
    ttl = 2
    agent.keep_registered("hosts/h1", {"name": "h1", "v": 1}, ttl)
    assert observer.get("hosts/h1") == {"name": "h1", "v": 1}
    key = f"{agent.prefix}/hosts/h1"
    lease = lease_of(etcd.endpoints[0], key)
    assert lease
    agent.keep_registered("hosts/h1", {"name": "h1", "v": 2}, ttl)
    assert observer.get("hosts/h1") == {"name": "h1", "v": 2}
    assert lease_of(etcd.endpoints[0], key) == lease
    time.sleep(ttl + 0.5)  # kept alive past its TTL
    assert observer.get("hosts/h1") == {"name": "h1", "v": 2}
    agent.close()  # a crash: no unregister
    gone = wait_for("key gone after the crash", lambda: observer.get("hosts/h1") is None, ttl + 1)
    print(f"\nregistration (ttl {ttl} s) gone {gone:.2f} s after the agent stopped refreshing")


def test_unregister_removes_the_key_at_once(drivers: Callable[..., EtcdDriver]) -> None:
    agent, observer = drivers(), drivers()
    agent.keep_registered("hosts/h1", {"name": "h1"}, 30)
    agent.keep_registered("hosts/h1-extra", {"name": "h1"}, 30)
    agent.unregister("hosts/h1-extra")  # another key still registered: just this one goes
    assert observer.get("hosts/h1-extra") is None
    assert observer.get("hosts/h1") == {"name": "h1"}
    agent.unregister("hosts/h1")  # the last one: the lease is revoked
    assert observer.get("hosts/h1") is None
    agent.unregister("hosts/h1")  # not registered: nothing happens


def test_registration_comes_back_when_the_lease_is_lost(
    drivers: Callable[..., EtcdDriver], etcd: EtcdCluster
) -> None:
    agent, observer = drivers(), drivers()
    ttl = 3
    agent.keep_registered("hosts/h1", {"name": "h1"}, ttl)
    key = f"{agent.prefix}/hosts/h1"
    old = lease_of(etcd.endpoints[0], key)
    raw = raw_client(etcd.endpoints[0])
    etcd3gw.Lease(old, client=raw).revoke()  # as if it had expired
    assert observer.get("hosts/h1") is None
    back = wait_for("registered again", lambda: observer.get("hosts/h1") is not None, ttl / 3 + 1.5)
    assert lease_of(etcd.endpoints[0], key) not in (0, old)
    print(f"\nlost lease (ttl {ttl} s) replaced after {back:.2f} s")


def test_registration_survives_an_outage_longer_than_its_ttl() -> None:
    require_etcd()
    with etcd_cluster(1) as etcd:
        agent = EtcdDriver(etcd.endpoints, prefix=unique_prefix())
        observer = EtcdDriver(etcd.endpoints, prefix=agent.prefix)
        try:
            ttl = 2
            agent.keep_registered("hosts/h1", {"name": "h1"}, ttl)
            etcd.stop()
            time.sleep(ttl + 1)
            assert not agent.up
            etcd.start()  # same data: the old lease may have been kept or expired
            back = wait_for("registered after the outage", lambda: observer.get("hosts/h1"), 5)
            time.sleep(ttl + 0.5)
            assert observer.get("hosts/h1") == {"name": "h1"}  # and kept alive since
            assert agent.up
            print(
                f"\nafter an outage of {ttl + 1} s (ttl {ttl} s): registered {back:.2f} s after etcd"
            )
            # etcd back with nothing (new data): a new lease, the key again
            etcd.stop()
            etcd.start(wipe=True)
            back = wait_for("registered on an empty etcd", lambda: observer.get("hosts/h1"), 5)
            print(f"etcd restarted empty: registered again {back:.2f} s after etcd")
        finally:
            agent.close()
            observer.close()


# ---------------------------------------------------------------------- watch


def test_watch_delivers_snapshots_and_coalesces_bursts(drivers: Callable[..., EtcdDriver]) -> None:
    d, writer = drivers(), drivers()
    writer.put("hosts/h0", {"name": "h0"})
    writer.put("networks/n1", {"vni": 1})
    hosts, nets = Snapshots(), Snapshots()
    d.watch_prefix("hosts/", hosts)
    d.watch_prefix("networks", nets)
    hosts.wait("first snapshot", lambda s: s == {"hosts/h0": {"name": "h0"}})
    nets.wait("first snapshot", lambda s: s == {"networks/n1": {"vni": 1}})

    writer.put("hosts/h1", {"name": "h1"})
    took = hosts.wait("put seen", lambda s: "hosts/h1" in s)
    writer.delete("hosts/h0")
    hosts.wait("delete seen", lambda s: s == {"hosts/h1": {"name": "h1"}})
    writer.put("hostsx/h2", {"name": "h2"})  # outside the watched directory
    time.sleep(0.3)
    assert hosts.last == {"hosts/h1": {"name": "h1"}}
    assert nets.last == {"networks/n1": {"vni": 1}}
    print(f"\nwatch: a put delivered after {took * 1000:.0f} ms")

    before = hosts.count
    for i in range(30):
        writer.put(f"hosts/b{i}", {"i": i})
    hosts.wait("burst seen", lambda s: all(f"hosts/b{i}" in s for i in range(30)))
    time.sleep(0.2)
    burst = hosts.count - before
    print(f"watch: 30 puts in a burst delivered as {burst} snapshot(s)")
    assert burst < 30

    # A callback that raises is logged; its watch goes on.
    calls: list[int] = []

    def broken(snapshot: dict[str, dict[str, Any]]) -> None:
        calls.append(len(snapshot))
        raise RuntimeError("callback bug")

    d.watch_prefix("networks/", broken)
    wait_for("first call", lambda: calls, 5)
    writer.put("networks/n2", {"vni": 2})
    wait_for("called again after raising", lambda: calls[-1] == 2, 5)


def test_watch_first_here_delivers_the_first_snapshot_before_returning_and_once(
    drivers: Callable[..., EtcdDriver],
) -> None:
    """What the daemon relies on to build its networks before it serves:
    the first snapshot on the caller's thread, then only changes."""
    d, writer = drivers(), drivers()
    writer.put("networks/n1", {"vni": 1})
    threads: list[str] = []
    seen = Snapshots()

    def record(snapshot: dict[str, dict[str, Any]]) -> None:
        threads.append(threading.current_thread().name)
        seen(snapshot)

    assert d.watch_prefix("networks/", record, first_here=True)
    assert seen.seen == [{"networks/n1": {"vni": 1}}]
    assert threads == [threading.current_thread().name]
    time.sleep(0.3)  # the thread does not deliver the same read again
    assert seen.count == 1
    writer.put("networks/n2", {"vni": 2})
    seen.wait("change followed", lambda s: "networks/n2" in s)
    assert seen.count == 2
    assert threads[1] != threads[0]


def test_watch_first_here_with_etcd_away_returns_and_the_thread_delivers_later() -> None:
    require_etcd()
    with etcd_cluster(1) as etcd:
        d = EtcdDriver(etcd.endpoints, prefix=unique_prefix(), timeout=1.0)
        writer = EtcdDriver(etcd.endpoints, prefix=d.prefix)
        try:
            writer.put("hosts/h1", {"name": "h1"})
            etcd.stop()
            seen = Snapshots()
            started = time.monotonic()
            assert not d.watch_prefix("hosts/", seen, first_here=True)
            waited = time.monotonic() - started
            assert seen.count == 0
            assert waited < 3, waited
            etcd.start()
            seen.wait(
                "delivered when etcd is back", lambda s: s == {"hosts/h1": {"name": "h1"}}, 10
            )
            print(f"\nfirst_here with etcd down returned after {waited:.2f} s")
        finally:
            d.close()
            writer.close()


def test_watch_resyncs_after_an_outage() -> None:
    require_etcd()
    with etcd_cluster(1) as etcd:
        d = EtcdDriver(etcd.endpoints, prefix=unique_prefix())
        writer = EtcdDriver(etcd.endpoints, prefix=d.prefix)
        try:
            writer.put("hosts/h1", {"name": "h1"})
            seen = Snapshots()
            d.watch_prefix("hosts/", seen)
            seen.wait("first snapshot", lambda s: "hosts/h1" in s)
            etcd.stop()
            time.sleep(1)
            before = seen.count
            etcd.start()
            restarted = time.monotonic()
            writer.put("hosts/h2", {"name": "h2"})  # while the watch is still reconnecting
            writer.delete("hosts/h1")
            seen.wait("resynced", lambda s: s == {"hosts/h2": {"name": "h2"}}, 5)
            assert seen.count > before
            took = time.monotonic() - restarted
            print(f"\nwatch resynchronised {took:.2f} s after etcd came back")
            # and follows changes again
            writer.put("hosts/h3", {"name": "h3"})
            seen.wait("followed after resync", lambda s: "hosts/h3" in s)
        finally:
            d.close()
            writer.close()


# ------------------------------------------------------------------- failover


def test_three_members_one_lost_keeps_working() -> None:
    require_etcd()
    with etcd_cluster(3) as etcd:
        d = EtcdDriver(etcd.endpoints, prefix=unique_prefix())
        observer = EtcdDriver(list(reversed(etcd.endpoints)), prefix=d.prefix)
        try:
            seen = Snapshots()
            d.watch_prefix("hosts/", seen)
            d.keep_registered("hosts/h1", {"name": "h1"}, 2)
            seen.wait("registration seen", lambda s: "hosts/h1" in s)

            def in_use() -> int:
                return etcd.endpoints.index(d.detail.removeprefix("etcd at "))

            # The member in use is killed.
            victim = in_use()
            etcd.kill_member(victim)
            t = time.monotonic()
            assert d.create("ipam/n1/198.18.0.10", {"host": "h1"})
            failover = time.monotonic() - t
            assert in_use() != victim
            d.put("hosts/h2", {"name": "h2"})
            seen.wait("watch follows after the kill", lambda s: "hosts/h2" in s)
            print(f"\nmember in use killed: first call done in {failover * 1000:.0f} ms elsewhere")

            # A member not in use is killed too (after the first came back).
            etcd.start_member(victim)
            other = next(i for i in range(3) if i != in_use())
            etcd.kill_member(other)
            assert not d.create("ipam/n1/198.18.0.10", {"host": "h2"})
            assert d.get("hosts/h1") == {"name": "h1"}
            etcd.start_member(other)

            # The member in use hangs (SIGSTOP: connections open, nothing answers).
            hung = in_use()
            etcd.freeze_member(hung)
            try:
                t = time.monotonic()
                d.put("hosts/h3", {"name": "h3"})
                hang = time.monotonic() - t
                assert hang < d.timeout + 0.5
                assert in_use() != hung
                seen.wait("watch follows after the hang", lambda s: "hosts/h3" in s)
                print(f"member in use hung: first call done in {hang * 1000:.0f} ms elsewhere")
            finally:
                etcd.thaw_member(hung)

            # The registration was kept alive throughout.
            time.sleep(1)
            assert observer.get("hosts/h1") == {"name": "h1"}
            assert d.up
        finally:
            d.close()
            observer.close()


def test_calls_while_etcd_is_down_fail_fast() -> None:
    require_etcd()
    with etcd_cluster(1) as etcd:
        d = EtcdDriver(etcd.endpoints, prefix=unique_prefix(), timeout=2.0)
        try:
            d.put("hosts/h1", {"name": "h1"})
            etcd.stop()
            calls: list[tuple[str, Callable[[], object]]] = [
                ("get", lambda: d.get("hosts/h1")),
                ("get_prefix", lambda: d.get_prefix("hosts/")),
                ("put", lambda: d.put("hosts/h1", {"name": "h1"})),
                ("create", lambda: d.create("hosts/h2", {"name": "h2"})),
                ("delete", lambda: d.delete("hosts/h1")),
                ("delete_if", lambda: d.delete_if("hosts/h1", {"name": "h1"})),
            ]
            for name, call in calls:
                t = time.monotonic()
                with pytest.raises(DependencyUnavailable) as err:
                    call()
                took = time.monotonic() - t
                assert took < d.timeout, name
                assert etcd.endpoints[0] in err.value.message
                assert "--etcd" in err.value.hint
            print(f"\netcd down: calls refused in {took * 1000:.1f} ms ({err.value.message})")
            assert not d.up and "not reachable" in d.detail
            # Neither of these raises: they keep trying in the background.
            d.keep_registered("hosts/h1", {"name": "h1"}, 2)
            seen = Snapshots()
            d.watch_prefix("hosts/", seen)
            etcd.start()
            seen.wait("watch after etcd came back", lambda s: "hosts/h1" in s, 5)
            wait_for("up again", lambda: d.up, 5)
        finally:
            d.close()


def test_an_endpoint_that_never_answers_costs_at_most_the_timeout() -> None:
    """A listening socket that never answers (a hung process): a call gives
    up within the timeout, a write that may have arrived says its outcome is
    unknown, and with a working endpoint next in the list a read fails over."""
    require_etcd()
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    try:
        d = EtcdDriver([url], timeout=1.0)
        for call in (lambda: d.get("hosts/h1"), lambda: d.create("hosts/h1", {"a": 1})):
            t = time.monotonic()
            with pytest.raises(DependencyUnavailable):
                call()
            assert time.monotonic() - t < 1.5
        d.close()
        with etcd_cluster(1) as etcd:
            d = EtcdDriver([url, *etcd.endpoints], prefix=unique_prefix(), timeout=2.0)
            t = time.monotonic()
            assert d.get("hosts/h1") is None
            took = time.monotonic() - t
            assert took < 2.0 and d.detail == f"etcd at {etcd.endpoints[0]}"
            print(f"\nsilent first endpoint: read answered by the second in {took * 1000:.0f} ms")
            d.close()
    finally:
        silent.close()


def test_idle_watch_renews_quietly_and_resyncs_after_compaction(
    drivers: Callable[..., EtcdDriver], etcd: EtcdCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A watch stream that stays silent is closed and opened again without
    a new snapshot; when the revisions it would resume from were compacted
    away meanwhile, it reads everything again and delivers it."""
    import netplumb.agent.drivers.etcd as etcd_driver

    monkeypatch.setattr(etcd_driver, "WATCH_IDLE", 0.5)
    d, writer = drivers(), drivers()
    writer.put("hosts/h1", {"name": "h1"})
    seen = Snapshots()
    d.watch_prefix("hosts/", seen)
    seen.wait("first snapshot", lambda s: "hosts/h1" in s)
    time.sleep(1.6)  # three idle renewals
    assert seen.count == 1
    for i in range(5):
        writer.put(f"networks/n{i}", {"vni": i})  # elsewhere: the watch stays silent
    _, revision = writer.get_prefix("")
    raw = raw_client(etcd.endpoints[0])
    raw.post(raw.get_url("/kv/compaction"), json={"revision": revision, "physical": True})
    seen.wait("resync after compaction", lambda s: seen.count >= 2, 3)
    assert seen.last == {"hosts/h1": {"name": "h1"}}
    writer.put("hosts/h2", {"name": "h2"})
    seen.wait("followed after the resync", lambda s: "hosts/h2" in s)


def test_tls_with_client_certificates() -> None:
    require_etcd()
    with etcd_cluster(1, tls=True) as etcd:
        assert etcd.endpoints[0].startswith("https://")
        d = EtcdDriver(
            etcd.endpoints,
            prefix=unique_prefix(),
            ca=etcd.ca,
            cert=etcd.client_cert,
            key=etcd.client_key,
        )
        try:
            assert d.create("hosts/h1", {"name": "h1"})
            assert d.get_prefix("hosts/")[0] == {"hosts/h1": {"name": "h1"}}
            seen = Snapshots()
            d.watch_prefix("hosts/", seen)
            seen.wait("watch over TLS", lambda s: "hosts/h1" in s)
            d.keep_registered("hosts/h2", {"name": "h2"}, 2)
            seen.wait("registration over TLS", lambda s: "hosts/h2" in s)
        finally:
            t = time.monotonic()
            d.close()
            assert time.monotonic() - t < 1.0  # the TLS watch stream is cut at once
        # No client certificate, or no trust in etcd's CA: UNAVAILABLE, saying why.
        for kwargs in ({"ca": etcd.ca}, {"cert": etcd.client_cert, "key": etcd.client_key}):
            bad = EtcdDriver(etcd.endpoints, timeout=2.0, **kwargs)
            try:
                with pytest.raises(DependencyUnavailable) as err:
                    bad.get("hosts/h1")
                print(f"\nTLS refused ({', '.join(kwargs)}): {err.value.message}")
            finally:
                bad.close()


def test_cluster_inside_a_namespace(netns: Namespaces) -> None:
    """The fixture's lab form: members on an address inside a namespace,
    reached from a process in that namespace (the driver runs there too)."""
    require_root()
    require_etcd()
    ns = netns.new("npe")
    run("ip", "-n", ns, "addr", "add", "198.18.0.254/32", "dev", "lo")
    with etcd_cluster(3, netns=ns, host="198.18.0.254") as etcd:
        assert etcd.endpoints[0].startswith("http://198.18.0.254:")
        script = (
            "import sys\n"
            "from netplumb.agent.drivers.etcd import EtcdDriver\n"
            "d = EtcdDriver(sys.argv[1:], prefix='/npt-ns')\n"
            "assert d.create('hosts/h1', {'name': 'h1'})\n"
            "print(d.get_prefix('hosts/')[0])\n"
        )
        etcd.kill_member(0)
        out = run("ip", "netns", "exec", ns, sys.executable, "-c", script, *etcd.endpoints)
        assert "'hosts/h1': {'name': 'h1'}" in out.stdout
        etcd.start_member(0)
        assert all(etcd.healthy(i) for i in range(3))
        pids = [m.proc.pid for m in etcd.members if m.proc is not None]
    # Everything removed: processes and data.
    assert not etcd.workdir.exists()
    assert len(pids) == 3 and all(m.proc is None for m in etcd.members)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
