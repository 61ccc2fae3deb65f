"""agent/sdnotify.py: the sd_notify(3) datagrams, and the watchdog interval
read from systemd's environment."""

from __future__ import annotations

import os
import secrets
import socket
import tempfile
import threading
import time

from netplumb.agent.sdnotify import notify, start_watchdog, watchdog_interval


def test_notify_sends_one_datagram_to_a_path_or_an_abstract_socket() -> None:
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "notify.sock")
        for address, env_value in (
            (path, path),
            ("\0" + (name := secrets.token_hex(8)), "@" + name),
        ):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(address)
                sock.settimeout(5)
                assert notify("READY=1\nSTATUS=serving", {"NOTIFY_SOCKET": env_value})
                assert sock.recv(4096) == b"READY=1\nSTATUS=serving"


def test_notify_without_a_socket_does_nothing() -> None:
    assert not notify("READY=1", {})
    # a socket that went away is logged, not raised: the daemon goes on
    assert not notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/notify.sock"})


def test_watchdog_interval_is_half_of_what_systemd_asked_for_this_process() -> None:
    me = str(os.getpid())
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": me}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    for usec in ("", "0", "-5", "soon"):
        assert watchdog_interval({"WATCHDOG_USEC": usec}) is None
    assert watchdog_interval({}) is None


def test_watchdog_beats_until_stopped() -> None:
    stop = threading.Event()
    assert start_watchdog(stop, {}) is None  # not asked for: no thread
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "notify.sock")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.bind(path)
            sock.settimeout(5)
            thread = start_watchdog(stop, {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "100000"})
            assert thread is not None
            started = time.monotonic()
            assert [sock.recv(64) for _ in range(3)] == [b"WATCHDOG=1"] * 3
            assert time.monotonic() - started >= 0.15  # every 50 ms, not at once
            stop.set()
            thread.join(5)
            assert not thread.is_alive()
