"""The daemon process itself: systemd notification, configuration, signals."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time

from fixtures.host import (
    NETPLUMBD,
    Daemon,
    Namespaces,
    delete_links,
    link,
    require_root,
    run,
    unique,
)


def test_notifies_systemd_ready_after_the_start_up_reconcile_then_the_watchdog(
    netns: Namespaces,
) -> None:
    """READY=1 (what Type=notify waits for) comes only once the start-up
    reconcile has repaired the host and the socket serves; then WATCHDOG=1
    every half WATCHDOG_USEC; STOPPING=1 on SIGTERM."""
    require_root()
    work = tempfile.mkdtemp(prefix="netplumb-notify-")
    path = os.path.join(work, "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(15)
    d = Daemon(workdir=work)
    br = unique("nptb")
    try:
        d.start()
        a = netns.new()
        d.cli_json("bridge", "add", br)
        ep = d.cli_json("attach", br, f"netns:{a}", "198.18.23.10/24")
        d.stop()
        run("ip", "link", "del", ep["host_ifname"])  # drift while the daemon is down
        assert link("eth1", a) is None

        d.env.update(NOTIFY_SOCKET=path, WATCHDOG_USEC="1000000")
        with open(d.log_path, "ab") as log:
            d.proc = subprocess.Popen(
                [NETPLUMBD, "--socket", d.socket, "--state-dir", d.state_dir],
                stdout=log,
                stderr=log,
                env=d.env,
            )
        first = sock.recv(4096).decode().split("\n")
        # Frozen the moment READY arrives: what is done now was done before it.
        os.kill(d.proc.pid, signal.SIGSTOP)
        try:
            assert "READY=1" in first, first
            assert f"MAINPID={d.proc.pid}" in first
            guest = link("eth1", a)
            assert guest is not None and guest["address"] == ep["mac"]
            assert link(ep["host_ifname"])["master"] == br  # type: ignore[index]
            assert "reconciled at start: 1 repaired" in d.log()
            assert stat.S_ISSOCK(os.stat(d.socket).st_mode)
        finally:
            os.kill(d.proc.pid, signal.SIGCONT)
        d.wait_ready(15)

        beats: list[float] = []
        while len(beats) < 5:
            assert sock.recv(4096).decode() == "WATCHDOG=1"
            beats.append(time.monotonic())
        gaps = sorted(later - earlier for earlier, later in itertools.pairwise(beats))
        # half of WATCHDOG_USEC (1 s); a loaded machine may add to a wait, never take
        assert 0.45 <= gaps[len(gaps) // 2] <= 0.8, gaps

        d.stop()
        last = sock.recv(4096).decode()
        while last == "WATCHDOG=1":
            last = sock.recv(4096).decode()
        assert last == "STOPPING=1"
    finally:
        d.stop()
        sock.close()
        delete_links([br])
        shutil.rmtree(work, ignore_errors=True)


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
