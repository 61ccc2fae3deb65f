"""FileStore: durable desired state in one atomically replaced JSON file."""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import stat
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
        RouteSpec(net("10.50.0.0/16"), addr("198.18.0.253"), 0),
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
            st.sampled_from([net("10.60.0.0/16"), net("2001:db8:cc::/48"), net("0.0.0.0/0")]),
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


@pytest.mark.xfail(
    strict=True,
    reason="BUG: store.FileStore._load calls doc.get() before checking that the JSON document "
    "is an object; a state file holding a list or a number raises AttributeError",
)
@pytest.mark.parametrize("content", ["[]", "null", "42", '"state"'])
def test_state_that_is_not_an_object_is_an_internal_error(tmp_path: Path, content: str) -> None:
    write_state(tmp_path, content)
    with pytest.raises(InternalError):
        FileStore(str(tmp_path))


@pytest.mark.xfail(
    strict=True,
    reason="BUG: FileStore.put_* change the in-memory maps before _flush; when the write fails "
    "the engine rolls the host back, but the store keeps serving (and later persists) the "
    "record that was never written",
)
def test_a_failed_write_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = FileStore(str(tmp_path))

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module.os, "fsync", no_space)
    with pytest.raises(OSError):
        s.put_endpoint(MINIMAL)
    monkeypatch.undo()
    assert MINIMAL.id not in s.endpoints()


@pytest.mark.xfail(
    strict=True,
    reason="BUG: FileStore._flush ignores the count os.write returns; a short write (a nearly "
    "full disk) is fsync'd and renamed over the good state file, leaving a torn document",
)
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
