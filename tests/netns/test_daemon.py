"""The daemon process itself: systemd notification, configuration, signals."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time

from fixtures.host import NETPLUMBD, Daemon, require_root


def test_notifies_systemd_ready_and_watchdog() -> None:
    require_root()
    work = tempfile.mkdtemp(prefix="netplumb-notify-")
    path = os.path.join(work, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    d = Daemon(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"})
    try:
        d.start()
        messages = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sum(m == "WATCHDOG=1" for m in messages) < 2:
            messages.append(sock.recv(4096).decode())
        first = messages[0].split("\n")
        assert "READY=1" in first, messages
        assert f"MAINPID={d.proc.pid}" in first  # type: ignore[union-attr]
        assert messages.count("WATCHDOG=1") >= 2, messages
        d.stop()
        assert sock.recv(4096).decode() == "STOPPING=1"
    finally:
        d.stop()
        sock.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(d.dir, ignore_errors=True)


def test_config_file_and_flags() -> None:
    require_root()
    work = tempfile.mkdtemp(prefix="netplumb-config-")
    bad = os.path.join(work, "bad.toml")
    with open(bad, "w") as f:
        f.write('socket = "/tmp/x.sock"\nsokcet_group = "wheel"\n')
    res = subprocess.run([NETPLUMBD, "--config", bad], capture_output=True, text=True, timeout=10)
    assert res.returncode == 2
    assert "sokcet_group" in res.stderr

    good = os.path.join(work, "good.toml")
    with open(good, "w") as f:
        f.write(f'socket = "{work}/from-file.sock"\nlog_level = "warning"\n')
    d = Daemon(workdir=work, args=["--config", good])  # --socket flag wins over the file
    try:
        d.start()
        assert os.path.exists(d.socket)
        assert not os.path.exists(f"{work}/from-file.sock")
        assert oct(os.stat(d.socket).st_mode & 0o777) == "0o660"
    finally:
        d.stop()
        shutil.rmtree(work, ignore_errors=True)


def test_help_documents_every_flag() -> None:
    res = subprocess.run([NETPLUMBD, "--help"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0
    for flag in ("--config", "--socket", "--state-dir", "--ovsdb", "--docker-url", "--log-level"):
        assert flag in res.stdout


def test_check_config_validates_and_touches_nothing() -> None:
    """netplumbd --check-config, the real program: 0 and one line for a
    good file, 2 naming the key for a bad one; no socket, no state dir."""
    work = tempfile.mkdtemp(prefix="netplumb-check-")
    try:
        good = os.path.join(work, "good.toml")
        with open(good, "w") as f:
            f.write(
                f'socket = "{work}/run/np.sock"\nstate_dir = "{work}/state"\n'
                'metrics_address = "[::1]:9100"\n'
            )
        res = subprocess.run(
            [NETPLUMBD, "--config", good, "--check-config"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert (res.returncode, res.stderr) == (0, "")
        assert res.stdout.startswith(f"netplumbd: configuration OK: from {good}, socket {work}/")
        assert "metrics on [::1]:9100" in res.stdout and res.stdout.count("\n") == 1
        bad = os.path.join(work, "bad.toml")
        with open(bad, "w") as f:
            f.write(f'state_dir = "{work}/state"\nmetrics_address = "localhost"\n')
        res = subprocess.run(
            [NETPLUMBD, "--config", bad, "--socket", f"{work}/run/np.sock", "--check-config"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        assert res.returncode == 2 and res.stdout == ""
        assert f"{bad} and the command line: metrics_address 'localhost' has no port" in res.stderr
        assert sorted(os.listdir(work)) == ["bad.toml", "good.toml"]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_help_documents_every_key_and_metrics() -> None:
    res = subprocess.run([NETPLUMBD, "--help"], capture_output=True, text=True, timeout=10)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for word in ("--metrics-address", "--check-config", "metrics_address", "127.0.0.1:9464"):
        assert word in text
