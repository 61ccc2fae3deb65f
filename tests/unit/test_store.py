"""FileStore: durable desired state in one atomically replaced JSON file."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import stat
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from netplumb.agent import store as store_module
from netplumb.agent.core.model import (
    BridgeKind,
    BridgeRecord,
    BridgeSpec,
    EndpointRecord,
    EndpointSpec,
    GuestKind,
    GuestRef,
    PeerRecord,
    RouteSpec,
)
from netplumb.agent.errors import InternalError
from netplumb.agent.store import (
    SCHEMA_VERSION,
    FileStore,
    endpoint_from_json,
    endpoint_to_json,
)
from unit_helpers import Request, record_for, requests

ip = ipaddress.ip_interface
net = ipaddress.ip_network
addr = ipaddress.ip_address

BRIDGES = (
    BridgeRecord(BridgeSpec(name="br0"), owned=True),
    BridgeRecord(
        BridgeSpec(
            name="bri1",
            kind=BridgeKind.OVS,
            addresses=(ip("198.18.0.1/24"), ip("2001:db8::1/64")),
            mtu=9000,
            vni=4242,
            tunnel="geneve",
        ),
        owned=False,
        foreign_addresses=(ip("198.18.0.1/24"),),
    ),
)

FULL = EndpointRecord(
    spec=EndpointSpec(
        bridge="bri1",
        guest=GuestRef(GuestKind.PID, "4242"),
        ifname="data0",
        host_ifname="vethdata0",
        mac="02:aa:bb:cc:dd:ee",
        mtu=1400,
        vlan=12,
        addresses=(ip("198.18.0.10/24"), ip("2001:db8::10/64")),
        gateways=(addr("198.18.0.1"), addr("fe80::1")),
        routes=(
            RouteSpec(net("198.19.0.0/16"), addr("198.18.0.254"), 10),
            RouteSpec(net("2001:db8:9::/48")),
        ),
    ),
    id="0123456789abcdef",
    host_ifname="vethdata0",
    mac="02:aa:bb:cc:dd:ee",
    mtu=1400,
    netns_id=(4, 4026532999),
    netns_path="/proc/4242/ns/net",
    extra_routes=(
        RouteSpec(net("198.18.150.0/24"), addr("198.18.0.253"), 0),
        RouteSpec(net("2001:db8:aa::/48"), addr("2001:db8::fe"), 5),
    ),
)
MINIMAL = EndpointRecord(
    spec=EndpointSpec(bridge="br0", guest=GuestRef(GuestKind.NETNS, "blue")),
    id="fedcba9876543210",
    host_ifname="npfedcba987654",
    mac="02:00:00:00:00:01",
    mtu=1500,
)
PATH_GUEST = EndpointRecord(
    spec=EndpointSpec(bridge="br0", guest=GuestRef(GuestKind.PATH, "/var/lib/ns/x")),
    id="00000000000000aa",
    host_ifname="np00000000000a",
    mac="02:00:00:00:00:02",
    mtu=1500,
)


def write_state(tmp_path: Path, doc: object) -> None:
    (tmp_path / "state.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


def test_round_trip_of_every_field(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    for b in BRIDGES:
        s.put_bridge(b)
    for e in (FULL, MINIMAL, PATH_GUEST):
        s.put_endpoint(e)
    again = FileStore(str(tmp_path))
    assert dict(again.bridges()) == {b.spec.name: b for b in BRIDGES}
    assert dict(again.endpoints()) == {e.id: e for e in (FULL, MINIMAL, PATH_GUEST)}
    assert again.agent_id == s.agent_id


@settings(max_examples=100, deadline=None)
@given(
    req=requests(),
    netns_id=st.none() | st.tuples(st.integers(0, 2**32), st.integers(0, 2**64)),
    extra=st.lists(
        st.builds(
            RouteSpec,
            st.sampled_from([net("198.18.160.0/24"), net("2001:db8:cc::/48"), net("0.0.0.0/0")]),
            st.none(),
            st.integers(0, 2**32 - 1),
        ),
        max_size=2,
    ),
)
def test_codec_round_trips_any_valid_endpoint(
    req: Request, netns_id: tuple[int, int] | None, extra: list[RouteSpec]
) -> None:
    record = record_for(req.spec())
    record = EndpointRecord(
        spec=record.spec,
        id=record.id,
        host_ifname=record.host_ifname,
        mac=record.mac,
        mtu=record.mtu,
        netns_id=netns_id,
        netns_path="/run/netns/blue",
        extra_routes=tuple(extra),
    )
    text = json.dumps(endpoint_to_json(record))
    assert endpoint_from_json(json.loads(text)) == record


def test_writes_are_atomic_and_private(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = FileStore(str(state))
    s.put_endpoint(FULL)
    assert sorted(os.listdir(state)) == ["state.json"]  # no .tmp left behind
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(state / "state.json").st_mode) == 0o600
    doc = json.loads((state / "state.json").read_text())
    assert doc["version"] == SCHEMA_VERSION and doc["agent_id"] == s.agent_id
    assert [e["id"] for e in doc["endpoints"]] == [FULL.id]


def test_every_write_replaces_the_file(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    before = os.stat(tmp_path / "state.json").st_ino
    s.put_bridge(BRIDGES[0])
    assert os.stat(tmp_path / "state.json").st_ino != before  # renamed over, never rewritten


def test_delete_of_a_missing_key_is_a_no_op(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    s.put_endpoint(MINIMAL)
    s.put_bridge(BRIDGES[0])
    inode = os.stat(tmp_path / "state.json").st_ino
    s.delete_endpoint("does-not-exist")
    s.delete_bridge("nobridge")
    assert os.stat(tmp_path / "state.json").st_ino == inode  # not even rewritten
    assert set(s.endpoints()) == {MINIMAL.id} and set(s.bridges()) == {"br0"}


def test_deletes_persist(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    s.put_endpoint(MINIMAL)
    s.put_bridge(BRIDGES[0])
    s.delete_endpoint(MINIMAL.id)
    s.delete_bridge("br0")
    again = FileStore(str(tmp_path))
    assert not again.endpoints() and not again.bridges()


def test_reads_are_snapshots(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    snapshot = s.endpoints()
    s.put_endpoint(MINIMAL)
    assert MINIMAL.id not in snapshot and MINIMAL.id in s.endpoints()


def test_agent_id_is_made_once_and_kept(tmp_path: Path) -> None:
    first = FileStore(str(tmp_path)).agent_id
    assert first and FileStore(str(tmp_path)).agent_id == first
    assert FileStore(str(tmp_path / "other")).agent_id != first


def test_state_without_agent_id_gets_one_and_keeps_its_records(tmp_path: Path) -> None:
    write_state(
        tmp_path,
        {"version": 1, "bridges": [store_module.bridge_to_json(BRIDGES[0])], "endpoints": []},
    )
    s = FileStore(str(tmp_path))
    assert s.agent_id and set(s.bridges()) == {"br0"}
    assert json.loads((tmp_path / "state.json").read_text())["agent_id"] == s.agent_id


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "cannot read the state file"),
        ("", "cannot read the state file"),
        (b"\xff\xfe{}", "cannot read the state file"),
        (json.dumps({"version": 2}), "schema version 2"),
        (json.dumps({"bridges": []}), "schema version None"),
        (json.dumps({"version": 1, "bridges": [{"name": "br0"}]}), "malformed"),
        (
            json.dumps(
                {
                    "version": 1,
                    "bridges": [
                        {
                            "name": "br0",
                            "kind": "linux",
                            "addresses": ["x/24"],
                            "mtu": 0,
                            "owned": 1,
                        }
                    ],
                }
            ),
            "malformed",
        ),
        (json.dumps({"version": 1, "endpoints": [{"id": "x", "spec": "nope"}]}), "malformed"),
        (json.dumps({"version": 1, "bridges": "br0"}), "malformed"),
        (json.dumps({"version": 1, "endpoints": {"x": {}}}), "malformed"),
        (json.dumps({"version": 1, "endpoints": None}), "malformed"),
        (json.dumps({"version": 1, "agent_id": None}), "malformed"),
        (json.dumps({"version": 1, "agent_id": 42}), "malformed"),
    ],
)
def test_corrupt_state_is_an_internal_error_naming_the_file(
    tmp_path: Path, content: str | bytes, words: str
) -> None:
    path = tmp_path / "state.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InternalError) as e:
        FileStore(str(tmp_path))
    assert words in e.value.message and str(path) in e.value.message
    assert path.read_bytes() == (content if isinstance(content, bytes) else content.encode())


def test_unreadable_state_is_an_internal_error(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    with pytest.raises(InternalError) as e:
        FileStore(str(tmp_path))
    assert "cannot read" in e.value.message and e.value.hint


@pytest.mark.parametrize("content", ["[]", "null", "42", '"state"'])
def test_state_that_is_not_an_object_is_an_internal_error(tmp_path: Path, content: str) -> None:
    write_state(tmp_path, content)
    with pytest.raises(InternalError) as e:
        FileStore(str(tmp_path))
    assert "malformed" in e.value.message and "not an object" in e.value.message
    assert str(tmp_path / "state.json") in e.value.message
    assert (tmp_path / "state.json").read_text() == content


def test_a_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileStore(str(tmp_path))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    with pytest.raises(OSError):
        s.put_endpoint(MINIMAL)
    monkeypatch.undo()
    assert MINIMAL.id not in s.endpoints()


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda s: s.put_endpoint(FULL), id="put_endpoint"),
        pytest.param(lambda s: s.put_endpoint(replace(MINIMAL, mtu=9000)), id="replace_endpoint"),
        pytest.param(lambda s: s.delete_endpoint(MINIMAL.id), id="delete_endpoint"),
        pytest.param(lambda s: s.put_bridge(BRIDGES[1]), id="put_bridge"),
        pytest.param(lambda s: s.put_bridge(replace(BRIDGES[0], owned=False)), id="replace_bridge"),
        pytest.param(lambda s: s.delete_bridge("br0"), id="delete_bridge"),
    ],
)
def test_every_failed_write_keeps_the_old_state_in_memory_and_on_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[FileStore], None]
) -> None:
    s = FileStore(str(tmp_path))
    s.put_endpoint(MINIMAL)
    s.put_bridge(BRIDGES[0])
    before = (tmp_path / "state.json").read_bytes()
    boom = OSError(errno.ENOSPC, "No space left on device")

    def no_space(fd: int) -> None:
        raise boom

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    with pytest.raises(OSError) as e:
        change(s)
    monkeypatch.undo()
    assert e.value is boom  # propagated unchanged: the engine rolls the host back on OSError
    assert dict(s.endpoints()) == {MINIMAL.id: MINIMAL}
    assert dict(s.bridges()) == {"br0": BRIDGES[0]}
    assert (tmp_path / "state.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["state.json"]  # the half-made .tmp is removed
    # Once the disk is back the store carries on from the old state.
    change(s)
    s.put_endpoint(PATH_GUEST)
    again = FileStore(str(tmp_path))
    assert dict(again.endpoints()) == dict(s.endpoints())
    assert dict(again.bridges()) == dict(s.bridges())
    assert PATH_GUEST.id in again.endpoints()


def test_a_short_write_never_replaces_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FileStore(str(tmp_path))
    s.put_endpoint(MINIMAL)
    real_write = os.write

    def short_write(fd: int, data: bytes) -> int:
        return real_write(fd, bytes(data)[: len(data) // 2])

    monkeypatch.setattr(store_module.os, "write", short_write)
    try:
        s.put_endpoint(FULL)
    except OSError:
        pass  # refusing the write is fine; tearing the file is not
    monkeypatch.undo()
    again = FileStore(str(tmp_path))
    assert MINIMAL.id in again.endpoints()


def test_a_write_that_stalls_is_an_os_error_and_leaves_the_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FileStore(str(tmp_path))
    s.put_endpoint(MINIMAL)
    before = (tmp_path / "state.json").read_bytes()
    monkeypatch.setattr(store_module.os, "write", lambda fd, data: 0)
    with pytest.raises(OSError, match="short write"):
        s.put_endpoint(FULL)
    monkeypatch.undo()
    assert (tmp_path / "state.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["state.json"]
    assert set(s.endpoints()) == {MINIMAL.id}


def test_partial_writes_are_resumed_until_the_whole_document_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = FileStore(str(tmp_path))
    real_write = os.write
    calls = []

    def small_write(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data)[:100])

    monkeypatch.setattr(store_module.os, "write", small_write)
    s.put_endpoint(FULL)
    s.put_endpoint(MINIMAL)
    monkeypatch.undo()
    assert len(calls) > 2
    again = FileStore(str(tmp_path))
    assert dict(again.endpoints()) == {FULL.id: FULL, MINIMAL.id: MINIMAL}


def many_endpoints(n: int) -> list[EndpointRecord]:
    """n distinct endpoints, cycling through the three shapes above."""
    out = []
    for k in range(n):
        base = (FULL, MINIMAL, PATH_GUEST)[k % 3]
        eid = f"{k:016x}"
        out.append(
            replace(
                base,
                id=eid,
                host_ifname=f"np{eid[:12]}",
                mac=f"02:00:00:00:{k >> 8:02x}:{k & 0xFF:02x}",
                spec=replace(base.spec, guest=GuestRef(GuestKind.NETNS, f"ns-{k}")),
            )
        )
    return out


def test_a_thousand_endpoints_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # ~1300 durable writes: the fsyncs alone would cost seconds on a busy
    # disk, and durability is not what this test is about.
    monkeypatch.setattr(store_module.os, "fsync", lambda fd: None)
    records = many_endpoints(1000)
    s = FileStore(str(tmp_path))
    for b in BRIDGES:
        s.put_bridge(b)
    for r in records:
        s.put_endpoint(r)
    # Replace some, delete some: the cached lines must follow the records.
    changed = [replace(r, mtu=9000) for r in records[::50]]
    for r in changed:
        s.put_endpoint(r)
    for r in records[1::50]:
        s.delete_endpoint(r.id)
    want = {r.id: r for r in records}
    want.update({r.id: r for r in changed})
    for r in records[1::50]:
        del want[r.id]
    assert dict(s.endpoints()) == want
    again = FileStore(str(tmp_path))
    assert dict(again.endpoints()) == want
    assert dict(again.bridges()) == {b.spec.name: b for b in BRIDGES}
    assert again.agent_id == s.agent_id


def old_format(agent_id: str, bridges: list[BridgeRecord], eps: list[EndpointRecord]) -> str:
    """The document as the first FileStore wrote it (indent=1, sort_keys)."""
    doc = {
        "version": SCHEMA_VERSION,
        "agent_id": agent_id,
        "bridges": [store_module.bridge_to_json(b) for b in bridges],
        "endpoints": [endpoint_to_json(e) for e in eps],
    }
    return json.dumps(doc, indent=1, sort_keys=True)


def with_peers(text: str) -> object:
    """The current document shape: an (empty) peers table was added."""
    doc = json.loads(text)
    doc.setdefault("peers", [])
    return doc


def test_a_file_in_the_indented_format_loads(tmp_path: Path) -> None:
    write_state(tmp_path, old_format("agent42", list(BRIDGES), [FULL, MINIMAL, PATH_GUEST]))
    s = FileStore(str(tmp_path))
    assert s.agent_id == "agent42"
    assert dict(s.bridges()) == {b.spec.name: b for b in BRIDGES}
    assert dict(s.endpoints()) == {e.id: e for e in (FULL, MINIMAL, PATH_GUEST)}


def test_the_document_has_the_same_content_with_one_record_per_line(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    text = (tmp_path / "state.json").read_text()
    assert json.loads(text) == {
        "version": SCHEMA_VERSION,
        "agent_id": s.agent_id,
        "bridges": [],
        "endpoints": [],
        "peers": [],
    }
    for b in reversed(BRIDGES):
        s.put_bridge(b)
    for e in (PATH_GUEST, FULL, MINIMAL):
        s.put_endpoint(e)
    text = (tmp_path / "state.json").read_text()
    # Same data as the indented format, records in key order.
    assert json.loads(text) == with_peers(
        old_format(
            s.agent_id,
            sorted(BRIDGES, key=lambda b: b.spec.name),
            sorted((FULL, MINIMAL, PATH_GUEST), key=lambda e: e.id),
        )
    )
    lines = text.splitlines()
    record_lines = [line for line in lines if line.startswith("{") and line != "{"]
    assert [json.loads(line.rstrip(","))["name"] for line in record_lines[:2]] == ["br0", "bri1"]
    assert [json.loads(line.rstrip(","))["id"] for line in record_lines[2:]] == sorted(
        e.id for e in (FULL, MINIMAL, PATH_GUEST)
    )
    assert text.isascii() and text.endswith("}\n")


def test_peers_round_trip(tmp_path: Path) -> None:
    s = FileStore(str(tmp_path))
    a = PeerRecord(ipaddress.ip_address("198.18.0.12"), "h2")
    b = PeerRecord(ipaddress.ip_address("2001:db8::12"), "", "cluster")
    s.put_peer(a)
    s.put_peer(b)
    s.delete_peer("198.18.0.99")  # absent: a no-op
    again = FileStore(str(tmp_path))
    assert dict(again.peers()) == {"198.18.0.12": a, "2001:db8::12": b}
    again.delete_peer("198.18.0.12")
    assert list(FileStore(str(tmp_path)).peers()) == ["2001:db8::12"]
