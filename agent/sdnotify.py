"""systemd's notify protocol (sd_notify(3)): READY, STOPPING, STATUS and the
watchdog. A no-op when NOTIFY_SOCKET is not set."""

from __future__ import annotations

import logging
import os
import socket
import threading

log = logging.getLogger("netplumb.daemon")


def notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send one notification; True when a notify socket was there to take it."""
    env = dict(os.environ) if env is None else env
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(path)
            s.sendall(message.encode())
        return True
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", env.get("NOTIFY_SOCKET"), e)
        return False


def watchdog_interval(env: dict[str, str] | None = None) -> float | None:
    """Half the watchdog timeout systemd asked for (WATCHDOG_USEC), in
    seconds; None when it asked for none, or asked another process
    (WATCHDOG_PID)."""
    env = dict(os.environ) if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None
    return int(usec) / 2_000_000


def start_watchdog(
    stop: threading.Event, env: dict[str, str] | None = None
) -> threading.Thread | None:
    """Send WATCHDOG=1 every half of the interval systemd asked for, until
    ``stop`` is set; None (and no thread) when it asked for none. Systemd
    arms the watchdog only once READY=1 is sent: start it after that."""
    env = dict(os.environ) if env is None else env
    interval = watchdog_interval(env)
    if interval is None:
        return None

    def beat() -> None:
        while not stop.wait(interval):
            notify("WATCHDOG=1", env)

    t = threading.Thread(target=beat, name="watchdog", daemon=True)
    t.start()
    return t
