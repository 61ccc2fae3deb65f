"""The etcd driver: JSON documents under a key prefix, atomic create and
compare-and-delete, a registration kept alive under a lease, and snapshot
watches. It talks to etcd's gRPC gateway (``/v3``, or ``/v3beta`` on 3.3)
through ``etcd3gw`` and makes no decisions: the cluster logic lives in
``core/cluster.py`` and the engine.

Endpoints. Calls go to one endpoint and stay there while it works. A call
that cannot reach it moves on to the next (and the driver sticks to that
one); while etcd answers "not now" (an election) the endpoints are tried
again until the deadline, but when none can be connected to at all the call
fails at once. Every call, failover included, takes at most about
``timeout`` seconds, split between the endpoints still to try, so a dead or
hung member does not eat the whole budget.

A write that timed out after it was sent (or that etcd answered "request
timed out") may still be applied, e.g. when the member's leader died with
it. It is sent again elsewhere all the same, and the conditional writes
resolve what they find: their transactions read the key when the condition
fails, so a repeated ``create`` that finds exactly its own value, or a
repeated ``delete_if`` that finds the key gone, reports success. (The values
netplumb stores name their host and endpoint, so "exactly its own value"
means "this claim".) ``delete`` then may say False for a key it deleted.

Errors. Connection failures, timeouts and etcd answers that mean "cannot
serve now" (no leader, request timed out) raise DependencyUnavailable; any
other unexpected answer raises InternalError. No ``requests`` or ``etcd3gw``
exception leaves this module.

Keys are relative to the prefix (``hosts/h1`` is ``/netplumb/hosts/h1``):
non-empty ``/``-separated segments, no control characters. A prefix names a
directory: ``hosts/`` (or ``hosts``) covers ``hosts/h1`` but not ``hostsX``;
``""`` covers everything under the driver's prefix. Results carry keys in the
same relative form (``hosts/h1``). Values are JSON objects, stored compact
with sorted keys, so equal values are equal bytes (what ``delete_if``
compares).

Why not etcd3gw's own watch: its ``Watcher`` reads the stream with no
timeout, swallows errors in a thread pool and never reports that the stream
ended, so a restarted etcd would leave it silent forever. The watch here is
the same gateway request, read line by line with a timeout and followed by a
resync whenever it ends. Range calls go through the client's ``post`` rather
than ``get`` because ``get`` drops the response header, whose revision a
watch must start from.

etcd3gw and requests cost ~0.3 s to import; they are imported when a driver
is made, so standalone mode never pays for them.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from ..errors import DependencyUnavailable, InternalError, InvalidSpec, NetplumbError

if TYPE_CHECKING:
    import requests
    from etcd3gw.client import Etcd3Client

log = logging.getLogger("netplumb.etcd")

T = TypeVar("T")
Snapshot = dict[str, dict[str, Any]]

DEFAULT_PORT = 2379
# A watch stream that says nothing for this long is closed and opened again
# after a linearizable read: the only way to notice a member that lost its
# peers (its watches stay open and silent) or a connection to a dead host
# that no call noticed first.
WATCH_IDLE = 10.0
WATCH_COALESCE = 0.05  # deliver once no event came for this long ...
WATCH_COALESCE_MAX = 0.5  # ... or at the latest this long after the first
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 2.0
HINT = (
    "check that etcd runs and that --etcd lists its client URLs (and the TLS files for "
    "https ones); netplumb reconnects by itself"
)
# etcd answers that mean the request was refused before it was proposed, so
# it can be sent again (to any member) even if it is a conditional write.
_NOT_APPLIED = (
    "no leader",
    "too many requests",
    "not capable",
    "unhealthy cluster",
    "proposal dropped",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Kind(Enum):
    UNSENT = "unsent"  # no connection was made: safe to send anywhere
    REFUSED = "refused"  # etcd answered it did not apply it: safe to send again
    AMBIGUOUS = "ambiguous"  # may have been applied
    BAD = "bad"  # an answer that is not "unavailable": no retry


class _LeaseLost(InternalError):
    """etcd does not know the lease (expired, revoked, or etcd lost its data)."""


@dataclass(slots=True)
class _Endpoint:
    url: str
    protocol: str
    host: str
    port: int
    session: requests.Session
    api_path: str | None = None  # found by etcd3gw on first contact


@dataclass(slots=True)
class _Watch:
    prefix: bytes
    callback: Callable[[Snapshot], None]
    thread: threading.Thread | None = None
    response: Any = None  # the open stream (a requests.Response), to cut it on close
    endpoint: _Endpoint | None = None  # where that stream is open
    lock: threading.Lock = field(default_factory=threading.Lock)


class EtcdDriver:
    """JSON documents in etcd under ``prefix``; see the module docstring for
    keys, endpoints and errors. Thread-safe: calls may come from any thread."""

    def __init__(
        self,
        endpoints: list[str],
        prefix: str = "/netplumb",
        ca: str = "",
        cert: str = "",
        key: str = "",
        timeout: float = 3.0,
    ) -> None:
        if not endpoints:
            raise InvalidSpec("no etcd endpoint given", field="etcd")
        if timeout <= 0:
            raise InvalidSpec(f"etcd timeout must be positive, not {timeout}", field="etcd")
        if key and not cert:
            raise InvalidSpec("an etcd client key needs its certificate too", field="etcd")
        for path in (ca, cert, key):
            if path:
                try:
                    with open(path, "rb"):
                        pass
                except OSError as e:
                    raise InvalidSpec(
                        f"cannot read etcd TLS file {path}: {e.strerror}", field="etcd"
                    ) from e
        self.timeout = timeout
        self._tls_ca, self._tls_cert, self._tls_key = ca, cert, key
        self._root = _root(prefix)
        self._endpoints = [self._endpoint(url) for url in endpoints]
        self._current = 0
        self._state_lock = threading.Lock()
        self._up = False
        self._detail = "not connected to etcd yet"
        self._stop = threading.Event()
        # Registrations: one lease for all of them, kept by one thread.
        self._reg_lock = threading.RLock()
        self._regs: dict[bytes, bytes] = {}  # absolute key -> encoded value
        self._dirty: set[bytes] = set()  # keys to put again under the lease
        self._lease: int | None = None
        self._lease_ttl = 0
        self._reg_wake = threading.Event()
        self._reg_thread: threading.Thread | None = None
        self._watches: list[_Watch] = []

    # ------------------------------------------------------------ status

    @property
    def up(self) -> bool:
        """True when the last etcd call or keepalive succeeded."""
        return self._up

    @property
    def detail(self) -> str:
        """``etcd at URL`` when up, else the last error (for ``netplumb status``)."""
        return self._detail

    @property
    def endpoints(self) -> list[str]:
        return [ep.url for ep in self._endpoints]

    @property
    def prefix(self) -> str:
        """The key prefix, normalised (``/netplumb``)."""
        return self._root

    # -------------------------------------------------------- documents

    def get(self, key: str) -> dict[str, Any] | None:
        """The document at ``key``, or None when there is none."""
        k = self._key(key)
        resp = self._call(lambda c: c.post(c.get_url("/kv/range"), json={"key": _b64(k)}))
        kvs = resp.get("kvs") or []
        if not kvs:
            return None
        doc = _decode_doc(_unb64(kvs[0].get("value", "")))
        if doc is None:
            raise InternalError(f"etcd key {k.decode()} does not hold a JSON object")
        return doc

    def get_prefix(self, prefix: str) -> tuple[Snapshot, int]:
        """Every document under ``prefix`` by relative key, and the store
        revision the read saw (a watch from revision+1 misses nothing).
        Entries that are not JSON objects are skipped with a warning."""
        raw, revision = self._range(self._dir(prefix))
        return _decode_all(raw), revision

    def put(self, key: str, value: dict[str, Any]) -> None:
        """Write ``value`` at ``key`` (created or replaced)."""
        k, v = self._key(key), _encode_doc(value)
        self._call(lambda c: c.put(k, v))

    def create(
        self, key: str, value: dict[str, Any], unchanged: tuple[str, int] | None = None
    ) -> bool:
        """Write ``value`` at ``key`` only if there is no such key (one
        transaction) and, with ``unchanged`` (prefix, revision), only if no
        key under that prefix was written after that revision: a decision
        made from a get_prefix snapshot holds when the write lands. True if it
        was created, False if not. (Sent again after a failover mid-call, True
        means the key holds ``value``.)"""
        k, v = self._key(key), _encode_doc(value)
        compare: list[dict[str, Any]] = [
            {"key": _b64(k), "result": "EQUAL", "target": "CREATE", "create_revision": 0}
        ]
        if unchanged is not None:
            d = self._dir(unchanged[0])
            compare.append(
                {
                    "key": _b64(d),
                    "range_end": _b64(_prefix_end(d)),
                    "result": "LESS",
                    "target": "MOD",
                    "mod_revision": unchanged[1] + 1,
                }
            )
        txn = {
            "compare": compare,
            "success": [{"request_put": {"key": _b64(k), "value": _b64(v)}}],
            "failure": [{"request_range": {"key": _b64(k)}}],
        }
        resp, repeated = self._call_tracked(lambda c: c.transaction(txn))
        if resp.get("succeeded", False):
            return True
        # Sent again after an attempt that may have been applied: the key
        # holding exactly our value means that attempt created it.
        return repeated and _txn_value(resp) == v

    def delete(self, key: str) -> bool:
        """Delete ``key``; True if it existed. Deleting a missing key is no
        error. (Sent again to another member after a failover mid-call, it
        may answer False for a key that the first attempt deleted.)"""
        k = self._key(key)
        resp = self._call(lambda c: c.post(c.get_url("/kv/deleterange"), json={"key": _b64(k)}))
        return int(resp.get("deleted", 0)) > 0

    def delete_if(self, key: str, value: dict[str, Any]) -> bool:
        """Delete ``key`` only if it holds exactly ``value`` (one transaction).
        True if it was deleted; False if it is missing or holds something else.
        (Sent again after a failover mid-call, True means the key is gone.)"""
        k, v = self._key(key), _encode_doc(value)
        txn = {
            "compare": [{"key": _b64(k), "result": "EQUAL", "target": "VALUE", "value": _b64(v)}],
            "success": [{"request_delete_range": {"key": _b64(k)}}],
            "failure": [{"request_range": {"key": _b64(k)}}],
        }
        resp, repeated = self._call_tracked(lambda c: c.transaction(txn))
        if resp.get("succeeded", False):
            return True
        # Sent again after an attempt that may have been applied: the key
        # gone means that attempt deleted it.
        return repeated and _txn_value(resp) is None

    # ----------------------------------------------------- registration

    def keep_registered(self, key: str, value: dict[str, Any], ttl: int) -> None:
        """Keep ``value`` at ``key`` under a lease of ``ttl`` seconds, kept
        alive by a background thread (a refresh every ttl/3). If the lease is
        lost (etcd unreachable for longer than ``ttl``, or etcd lost its data),
        the thread registers again under a new lease as soon as etcd answers.

        Calling it again updates the value under the same lease; several keys
        may be registered, all under one lease. The first write is tried at
        once; if etcd is unreachable this does not raise (``up``/``detail``
        say so) and the thread keeps trying. Raises InvalidSpec for a bad key
        or ttl."""
        k, v = self._key(key), _encode_doc(value)
        if ttl < 1:
            raise InvalidSpec(f"lease TTL must be at least 1 s, not {ttl}", field="ttl")
        with self._reg_lock:
            self._regs[k] = v
            self._dirty.add(k)
            if ttl != self._lease_ttl:
                if self._lease is not None:
                    # The keys move to a new lease; the old one expires empty.
                    self._dirty = set(self._regs)
                self._lease, self._lease_ttl = None, ttl
            try:
                self._sync_registrations()
            except NetplumbError as e:
                log.warning("cannot register %s in etcd yet (retrying): %s", key, e)
            if self._reg_thread is None:
                self._reg_thread = threading.Thread(
                    target=self._keep_alive, name="etcd-keepalive", daemon=True
                )
                self._reg_thread.start()
        self._reg_wake.set()

    def unregister(self, key: str) -> None:
        """Stop keeping ``key`` registered and remove it now: the lease is
        revoked when it was the last registration (the graceful stop), else
        the key is deleted. Not registered: nothing happens. The registration
        is dropped even if etcd is unreachable (then this raises
        DependencyUnavailable, and the key goes when its lease expires)."""
        k = self._key(key)
        with self._reg_lock:
            if self._regs.pop(k, None) is None:
                return
            self._dirty.discard(k)
            lease = self._lease
            if lease is None:
                return
            if self._regs:
                self._call(lambda c: c.post(c.get_url("/kv/deleterange"), json={"key": _b64(k)}))
                return
            self._lease = None
            self._call(partial(_revoke, lease=lease))

    def _sync_registrations(self) -> None:
        """Grant a lease if there is none and put every key that needs it.
        Caller holds ``_reg_lock``."""
        for _ in range(2):
            if not self._regs:
                return
            if self._lease is None:
                self._lease = self._call(partial(_grant, ttl=self._lease_ttl))
                self._dirty = set(self._regs)
            lease = self._lease
            try:
                for k in sorted(self._dirty):
                    self._call(partial(_put, key=k, value=self._regs[k], lease=lease))
                    self._dirty.discard(k)
                return
            except _LeaseLost:
                log.warning("etcd lost lease %x before the put; granting a new one", lease)
                self._lease = None
        raise InternalError("etcd keeps losing the lease just granted")

    def _keep_alive(self) -> None:
        delay = 0.0
        failing_since = 0.0
        while not self._stop.is_set():
            self._reg_wake.wait(delay)
            self._reg_wake.clear()
            if self._stop.is_set():
                return
            with self._reg_lock:
                if not self._regs:
                    delay = 3600.0
                    continue
                refresh = max(self._lease_ttl / 3, 0.2)
                try:
                    if self._lease is not None and not self._dirty:
                        lease = self._lease
                        if self._call(partial(_refresh, lease=lease)) <= 0:
                            log.warning("etcd lease %x is gone; registering again", lease)
                            self._lease = None
                    self._sync_registrations()
                    if failing_since:
                        log.info(
                            "etcd registration kept again after %.1f s",
                            time.monotonic() - failing_since,
                        )
                    failing_since = 0.0
                    delay = refresh
                except NetplumbError as e:
                    # Retry often: a lease that etcd kept must be refreshed
                    # before it expires, and a lost one replaced at once.
                    if not failing_since:
                        failing_since = time.monotonic()
                        log.warning("cannot keep the etcd registration alive: %s", e)
                        delay = BACKOFF_FIRST
                    else:
                        delay = min(delay * 2, refresh, BACKOFF_MAX)

    # ------------------------------------------------------------ watch

    def watch_prefix(
        self, prefix: str, on_snapshot: Callable[[Snapshot], None], first_here: bool = False
    ) -> bool:
        """Call ``on_snapshot`` with every document under ``prefix`` (relative
        keys), on a thread of the driver: once at start, after every change
        (bursts coalesced, ~50 ms after the last event) and after every
        reconnection (a fresh read, then a watch from that revision + 1, so
        nothing is missed). While etcd is unreachable it retries with backoff
        (up to 2 s); nothing is raised to the caller. Exceptions raised by
        ``on_snapshot`` are logged.

        With ``first_here`` the first snapshot is read and delivered on the
        caller's thread before this returns (the thread then follows from
        that read's revision, so every snapshot is delivered once, in order).
        Returns whether that happened: False when etcd did not answer the
        read (the thread then delivers it as soon as etcd answers) or when
        ``first_here`` is not set."""
        w = _Watch(prefix=self._dir(prefix), callback=on_snapshot)
        start: tuple[dict[str, bytes], int] | None = None
        if first_here:
            try:
                start = self._range(w.prefix)
            except NetplumbError as e:
                log.warning("etcd watch on %s: cannot read at start: %s", prefix, e.message)
            else:
                self._deliver(w, start[0])
        w.thread = threading.Thread(
            target=self._watch_loop, args=(w, start), name=f"etcd-watch {prefix}", daemon=True
        )
        with self._state_lock:
            self._watches.append(w)
        w.thread.start()
        return start is not None

    def _watch_loop(self, w: _Watch, start: tuple[dict[str, bytes], int] | None = None) -> None:
        """``start``: a read already delivered (state, revision) to follow
        from; None to read first."""
        name = w.prefix.decode()
        state: dict[str, bytes] = {}
        revision = 0  # every event up to here is in ``state``
        resync = True
        just_read = start is not None  # no probe needed before the first stream
        if start is not None:
            (state, revision), resync = start, False
        backoff = BACKOFF_FIRST
        lost_since = 0.0
        while not self._stop.is_set():
            try:
                if resync:
                    state, revision = self._range(w.prefix)
                elif just_read:
                    just_read = False
                else:
                    # Renewing a stream closed for silence: a linearizable
                    # read first, so a member cut off from the others (whose
                    # watches stay open and say nothing) is left for another.
                    self._call(partial(_probe, key=w.prefix))
            except NetplumbError as e:
                if not lost_since:
                    lost_since = time.monotonic()
                    log.warning("etcd watch on %s: cannot read (retrying): %s", name, e)
                resync = True
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if lost_since:
                log.info(
                    "etcd watch on %s resynchronised after %.1f s",
                    name,
                    time.monotonic() - lost_since,
                )
                lost_since = 0.0
            if resync:
                self._deliver(w, state)
                resync = False
            opened = time.monotonic()
            outcome, revision = self._follow(w, state, revision)
            if outcome == "idle":
                backoff = BACKOFF_FIRST
                continue
            resync = True
            if self._stop.is_set():
                return
            if outcome != "resync":
                lost_since = time.monotonic()
                log.warning("etcd watch on %s lost (%s); resynchronising", name, outcome)
            if time.monotonic() - opened < 1.0:
                # A stream that fails at once (a member refusing watches):
                # do not spin on read-deliver-fail.
                self._stop.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
            else:
                backoff = BACKOFF_FIRST

    def _follow(self, w: _Watch, state: dict[str, bytes], revision: int) -> tuple[str, int]:
        """Stream the events after ``revision`` into ``state``, delivering
        coalesced snapshots, until the stream ends. Returns why it ended
        ("idle": closed for silence; "resync": etcd cancelled the watch, e.g.
        compaction; else what went wrong) and the revision of the last event
        applied."""
        ep = self._endpoints[self._current]
        session = self._session()
        body: dict[str, Any] = {
            "create_request": {
                "key": _b64(w.prefix),
                "range_end": _b64(_prefix_end(w.prefix)),
                "start_revision": revision + 1,
            }
        }
        events: queue.Queue[tuple[str, Any]] = queue.Queue()
        try:
            url = self._client(ep, self.timeout).get_url("/watch")
            resp = session.post(url, json=body, stream=True, timeout=(self.timeout, WATCH_IDLE))
        except Exception as e:
            session.close()
            return f"cannot open a watch at {ep.url}: {_classify(e)[1]}", revision
        if resp.status_code != 200:
            resp.close()
            session.close()
            return f"etcd at {ep.url} refused the watch: HTTP {resp.status_code}", revision
        with w.lock:
            w.response, w.endpoint = resp, ep
        if self._stop.is_set():
            _cut(resp)
        reader = threading.Thread(
            target=_read_stream, args=(resp, events), name="etcd-watch-reader", daemon=True
        )
        reader.start()
        try:
            while True:
                what, data = events.get()
                if what != "events":
                    return str(data), revision
                revision = max(revision, _apply(state, self._root, data))
                first = time.monotonic()
                while (left := first + WATCH_COALESCE_MAX - time.monotonic()) > 0:
                    try:
                        what, data = events.get(timeout=min(WATCH_COALESCE, left))
                    except queue.Empty:
                        break
                    if what != "events":
                        self._deliver(w, state)
                        return str(data), revision
                    revision = max(revision, _apply(state, self._root, data))
                self._deliver(w, state)
        finally:
            with w.lock:
                w.response, w.endpoint = None, None
            _cut(resp)
            resp.close()
            session.close()

    def _deliver(self, w: _Watch, state: dict[str, bytes]) -> None:
        if self._stop.is_set():
            return
        try:
            w.callback(_decode_all(state))
        except Exception:
            log.exception("etcd watch callback for %s failed", w.prefix.decode())

    # ------------------------------------------------------------ close

    def close(self) -> None:
        """Stop the keepalive and watch threads. Leases are not revoked: a
        registration then expires after its TTL, as after a crash; call
        ``unregister`` first for a graceful stop."""
        self._stop.set()
        self._reg_wake.set()
        with self._state_lock:
            watches = list(self._watches)
        for w in watches:
            with w.lock:
                if w.response is not None:
                    _cut(w.response)
        threads = [w.thread for w in watches] + [self._reg_thread]
        deadline = time.monotonic() + 2.0
        for t in threads:
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        for ep in self._endpoints:
            ep.session.close()

    # ------------------------------------------------------- machinery

    def _endpoint(self, url: str) -> _Endpoint:
        try:
            parts = urlsplit(url)
            port = parts.port or DEFAULT_PORT
        except ValueError as e:
            raise InvalidSpec(f"bad etcd URL {url!r}: {e}", field="etcd") from e
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidSpec(
                f"bad etcd URL {url!r}: expected http://HOST:PORT or https://HOST:PORT",
                field="etcd",
            )
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise InvalidSpec(f"bad etcd URL {url!r}: no path expected", field="etcd")
        return _Endpoint(
            url=url.rstrip("/"),
            protocol=parts.scheme,
            host=parts.hostname,
            port=port,
            session=self._session(),
        )

    def _session(self) -> requests.Session:
        import requests

        s = requests.Session()
        s.trust_env = False  # no proxies from the environment between an agent and etcd
        if self._tls_ca:
            s.verify = self._tls_ca
        if self._tls_cert:
            s.cert = (self._tls_cert, self._tls_key) if self._tls_key else self._tls_cert
        return s

    def _client(self, ep: _Endpoint, timeout: float | tuple[float, float]) -> Etcd3Client:
        from etcd3gw.client import Etcd3Client

        # etcd3gw hands ``timeout`` to requests, which also takes (connect, read).
        return Etcd3Client(
            host=ep.host,
            port=ep.port,
            protocol=ep.protocol,
            timeout=timeout,  # type: ignore[arg-type]
            api_path=ep.api_path,
            session=ep.session,
        )

    def _call(self, fn: Callable[[Etcd3Client], T]) -> T:
        """``fn`` against the endpoint in use, failing over to the others
        (see the module docstring). Raises DependencyUnavailable or InternalError."""
        return self._call_tracked(fn)[0]

    def _call_tracked(self, fn: Callable[[Etcd3Client], T]) -> tuple[T, bool]:
        """``_call``, and whether ``fn`` was sent again after an attempt that
        may have reached etcd (so a write may have been applied twice)."""
        deadline = time.monotonic() + self.timeout
        n = len(self._endpoints)
        start = self._current
        failures: dict[str, str] = {}
        repeated = False
        while True:
            reached = False
            for k in range(n):
                i = (start + k) % n
                ep = self._endpoints[i]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # Split what is left between the endpoints still to try, so a
                # dead or hung member cannot eat the whole budget.
                share = remaining / (n - k)
                client = self._client(ep, (share, share))
                try:
                    result = fn(client)
                    if ep.api_path is None:
                        ep.api_path = client.api_path
                except Exception as e:
                    kind, reason = _classify(e)
                else:
                    self._succeeded(i)
                    return result, repeated
                if kind is _Kind.BAD:
                    self._set(True, f"etcd at {ep.url}")
                    if "lease not found" in reason:
                        raise _LeaseLost(f"etcd at {ep.url}: {reason}")
                    raise InternalError(f"unexpected answer from etcd at {ep.url}: {reason}")
                failures[ep.url] = reason
                self._failed(ep)
                repeated = repeated or kind is _Kind.AMBIGUOUS
                reached = reached or kind is not _Kind.UNSENT
            # Nothing answered at all: etcd is down, say so now. Something
            # answered "not now" (an election): try again until the deadline.
            if not reached or deadline - time.monotonic() < 0.15:
                break
            time.sleep(0.1)
            start = self._current
        where = ", ".join(f"{url} ({why})" for url, why in failures.items())
        if len(failures) == 1:
            where = "{}: {}".format(*next(iter(failures.items())))
        message = f"etcd is not reachable at {where}"
        if repeated:
            message += " (a write sent may still be applied)"
        err = DependencyUnavailable(message, hint=HINT)
        self._set(False, err.message)
        raise err

    def _succeeded(self, i: int) -> None:
        with self._state_lock:
            if self._current != i:
                log.info("etcd: now using %s", self._endpoints[i].url)
            self._current = i
            self._up = True
            self._detail = f"etcd at {self._endpoints[i].url}"

    def _failed(self, ep: _Endpoint) -> None:
        # Pooled connections to a dead host would hang the next call until
        # its timeout; start afresh when this endpoint is tried again.
        old, ep.session = ep.session, self._session()
        old.close()
        with self._state_lock:
            if self._endpoints[self._current] is ep:
                self._current = (self._current + 1) % len(self._endpoints)
            watches = list(self._watches)
        # A watch stream on a member that stopped answering calls may stay
        # open and silent (a hung member, a dead host): move it now rather
        # than after WATCH_IDLE.
        for w in watches:
            with w.lock:
                if w.endpoint is ep and w.response is not None:
                    _cut(w.response)

    def _set(self, up: bool, detail: str) -> None:
        with self._state_lock:
            self._up, self._detail = up, detail

    def _range(self, prefix: bytes) -> tuple[dict[str, bytes], int]:
        body = {"key": _b64(prefix), "range_end": _b64(_prefix_end(prefix))}
        resp = self._call(lambda c: c.post(c.get_url("/kv/range"), json=body))
        try:
            revision = int(resp["header"]["revision"])
            out: dict[str, bytes] = {}
            for kv in resp.get("kvs") or []:
                rel = _relative(self._root, _unb64(kv["key"]))
                if rel is not None:
                    out[rel] = _unb64(kv.get("value", ""))
        except (KeyError, TypeError, ValueError) as e:
            raise InternalError(f"malformed range answer from etcd: {e!r}") from e
        return out, revision

    def _key(self, key: str) -> bytes:
        _check_path(key, "key")
        return f"{self._root}/{key}".encode()

    def _dir(self, prefix: str) -> bytes:
        prefix = prefix.removesuffix("/")
        if not prefix:
            return f"{self._root}/".encode()
        _check_path(prefix, "prefix")
        return f"{self._root}/{prefix}/".encode()


# ----------------------------------------------------------------- helpers


def _root(prefix: str) -> str:
    root = prefix.rstrip("/")
    if not prefix.startswith("/") or not root:
        raise InvalidSpec(
            f"etcd key prefix {prefix!r} must start with '/' and name a directory, like /netplumb",
            field="etcd_prefix",
        )
    _check_path(root[1:], "etcd_prefix")
    return root


def _check_path(path: str, what: str) -> None:
    if not isinstance(path, str) or not path:
        raise InvalidSpec(f"empty etcd {what}", field=what)
    if any(seg == "" for seg in path.split("/")):
        raise InvalidSpec(f"etcd {what} {path!r} has an empty segment", field=what)
    if _CONTROL.search(path):
        raise InvalidSpec(f"etcd {what} {path!r} contains a control character", field=what)


def _relative(root: str, key: bytes) -> str | None:
    try:
        text = key.decode()
    except UnicodeDecodeError:
        log.warning("etcd key %r is not UTF-8; ignored", key)
        return None
    return text[len(root) + 1 :] if text.startswith(root + "/") else None


def _encode_doc(value: dict[str, Any]) -> bytes:
    if not isinstance(value, dict):
        raise InternalError(f"etcd values are JSON objects, not {type(value).__name__}")
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()
    except (TypeError, ValueError) as e:
        raise InternalError(f"value cannot be stored as JSON: {e}") from e


def _decode_doc(raw: bytes) -> dict[str, Any] | None:
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def _decode_all(raw: dict[str, bytes]) -> Snapshot:
    out: Snapshot = {}
    for key, value in raw.items():
        doc = _decode_doc(value)
        if doc is None:
            log.warning("etcd key %s does not hold a JSON object; ignored", key)
        else:
            out[key] = doc
    return out


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(data: str) -> bytes:
    return base64.b64decode(data)


def _prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    b = bytearray(prefix)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\0"
    b[-1] += 1
    return bytes(b)


def _txn_value(resp: Any) -> bytes | None:
    """The value a transaction's failure branch read (one request_range), or None."""
    try:
        kvs = resp["responses"][0]["response_range"].get("kvs") or []
    except (KeyError, IndexError, TypeError):
        return None
    return _unb64(kvs[0].get("value", "")) if kvs else None


def _put(c: Etcd3Client, key: bytes, value: bytes, lease: int) -> None:
    c.post(c.get_url("/kv/put"), json={"key": _b64(key), "value": _b64(value), "lease": lease})


def _grant(c: Etcd3Client, ttl: int) -> int:
    return int(c.post(c.get_url("/lease/grant"), json={"TTL": ttl, "ID": 0})["ID"])


def _refresh(c: Etcd3Client, lease: int) -> int:
    """The lease's new TTL; 0 or less when etcd no longer has it."""
    from etcd3gw.lease import Lease

    return Lease(lease, client=c).refresh()


def _probe(c: Etcd3Client, key: bytes) -> None:
    c.post(c.get_url("/kv/range"), json={"key": _b64(key), "count_only": True})


def _revoke(c: Etcd3Client, lease: int) -> None:
    from etcd3gw.lease import Lease

    try:
        Lease(lease, client=c).revoke()
    except Exception as e:
        if "lease not found" not in _classify(e)[1]:
            raise  # already gone: what revoking wanted


def _apply(state: dict[str, bytes], root: str, events: list[dict[str, Any]]) -> int:
    """Apply watch events to ``state``; the revision of the last one."""
    revision = 0
    for event in events:
        kv = event.get("kv") or {}
        revision = max(revision, int(kv.get("mod_revision", 0)))
        rel = _relative(root, _unb64(kv.get("key", "")))
        if rel is None:
            continue
        if event.get("type") == "DELETE":
            state.pop(rel, None)
        else:
            state[rel] = _unb64(kv.get("value", ""))
    return revision


def _read_stream(resp: Any, out: queue.Queue[tuple[str, Any]]) -> None:
    """Parse the gateway's watch stream (one JSON message per line) into
    ("events", [...]) items, and end with one ("end", reason) item:
    "idle", "resync", or what went wrong."""
    import requests
    from urllib3.exceptions import ReadTimeoutError

    buf = b""
    try:
        for chunk in resp.iter_content(chunk_size=None):
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if not line.strip():
                    continue
                msg = json.loads(line)
                if "error" in msg:
                    out.put(("end", f"etcd ended the watch: {msg['error']}"))
                    return
                result = msg.get("result") or {}
                if result.get("canceled") or result.get("compact_revision"):
                    out.put(("end", "resync"))
                    return
                if result.get("events"):
                    out.put(("events", result["events"]))
        out.put(("end", "etcd closed the watch stream"))
    except requests.exceptions.ConnectionError as e:
        inner = e.args[0] if e.args else None
        out.put(("end", "idle" if isinstance(inner, ReadTimeoutError) else _classify(e)[1]))
    except Exception as e:
        out.put(("end", _classify(e)[1]))


def _cut(resp: Any) -> None:
    """Shut down the socket under a streaming response, so that the thread
    blocked reading it wakes up (closing the response from another thread
    does not)."""
    try:
        s = socket.fromfd(resp.raw.fileno(), socket.AF_INET, socket.SOCK_STREAM)
    except (OSError, ValueError, AttributeError):
        return
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        s.close()


def _classify(e: BaseException) -> tuple[_Kind, str]:
    """What a failure means for a retry, and a short reason for messages."""
    import requests
    from etcd3gw import exceptions as gw
    from urllib3.exceptions import ConnectTimeoutError, MaxRetryError, NewConnectionError

    if isinstance(e, gw.Etcd3Exception):
        # etcd3gw turns requests' exceptions into these two with only the
        # text; the original is still the implicit context.
        ctx = e.__context__
        if isinstance(e, (gw.ConnectionFailedError, gw.ConnectionTimeoutError)) and isinstance(
            ctx, requests.RequestException
        ):
            return _classify(ctx)
        text = _etcd_error(e)
        if any(s in text for s in _NOT_APPLIED):
            return _Kind.REFUSED, text
        if isinstance(e, (gw.ConnectionFailedError, gw.ConnectionTimeoutError)):
            return _Kind.AMBIGUOUS, text  # HTTP 503/504: "request timed out", "leader changed"
        return _Kind.BAD, text
    if isinstance(e, requests.exceptions.ConnectTimeout):
        return _Kind.UNSENT, "connection timed out"
    if isinstance(e, requests.exceptions.SSLError):
        return _Kind.UNSENT, f"TLS error: {_os_reason(e)}"
    if isinstance(e, requests.exceptions.ConnectionError):
        inner = e.args[0] if e.args else None
        if isinstance(inner, MaxRetryError):
            inner = inner.reason
        if isinstance(inner, NewConnectionError):  # before: it subclasses ConnectTimeoutError
            return _Kind.UNSENT, _os_reason(inner)
        if isinstance(inner, ConnectTimeoutError):
            return _Kind.UNSENT, "connection timed out"
        return _Kind.AMBIGUOUS, _os_reason(e)
    if isinstance(e, requests.exceptions.Timeout):
        return _Kind.AMBIGUOUS, "timed out"
    if isinstance(e, requests.exceptions.ChunkedEncodingError):
        return _Kind.AMBIGUOUS, "connection broken mid-answer"
    if isinstance(e, (requests.RequestException, KeyError, TypeError, ValueError)):
        return _Kind.BAD, f"malformed answer: {e!r}"
    if isinstance(e, OSError):
        return _Kind.BAD, str(e)
    return _Kind.BAD, repr(e)


_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\")\]]+)")
_SSL = re.compile(r"\[SSL: \w+\] ([^'\"(]+)")


def _os_reason(e: BaseException) -> str:
    """'Connection refused' rather than urllib3's paragraph."""
    text = str(e)
    m = _SSL.search(text) or _ERRNO.search(text)
    if m:
        return m.group(1).strip().rstrip(".")
    if "timed out" in text:
        return "timed out"
    return text[:200]


def _etcd_error(e: Any) -> str:
    """The message in an etcd gateway error body, or the HTTP reason."""
    detail = getattr(e, "detail_text", None) or ""
    try:
        body = json.loads(detail)
        if isinstance(body, dict) and body.get("error"):
            return str(body["error"])
    except ValueError:
        pass
    reason = " ".join(str(a) for a in e.args if a)
    return (detail.strip() or reason or type(e).__name__)[:200]
