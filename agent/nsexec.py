"""Run a program inside a guest's network namespace: the launcher of DHCP
clients (``python -m netplumb.agent.nsexec``).

    nsexec NETNS_FD [--bind SRC:DST]... -- PROGRAM ARGS...

It joins the namespace given as an inherited file descriptor (not a path: a
PID that died and was reused in between cannot redirect it, pipework's
#204), optionally in a private mount namespace where SRC is bind-mounted on
DST (dhcpcd keeps its pidfile and sockets under /run/dhcpcd by interface
name, so two guests' eth1 would collide there), then execs PROGRAM with the
argument list as given. No shell is involved. Imports nothing heavy: it
starts in a few milliseconds.
"""

from __future__ import annotations

import ctypes
import os
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000


def _check(rc: int, what: str) -> None:
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def main(argv: list[str]) -> int:
    if "--" not in argv or len(argv) < 3:
        print("usage: nsexec NETNS_FD [--bind SRC:DST]... -- PROGRAM ARGS...", file=sys.stderr)
        return 2
    cut = argv.index("--")
    head, program = argv[:cut], argv[cut + 1 :]
    if not program or not head:
        print("nsexec: missing the namespace fd or the program", file=sys.stderr)
        return 2
    fd = int(head[0])
    binds: list[tuple[str, str]] = []
    rest = head[1:]
    while rest:
        if rest[0] != "--bind" or len(rest) < 2 or ":" not in rest[1]:
            print(f"nsexec: unexpected argument {rest[0]!r}", file=sys.stderr)
            return 2
        src, _, dst = rest[1].partition(":")
        binds.append((src, dst))
        rest = rest[2:]
    libc = ctypes.CDLL(None, use_errno=True)
    if binds:
        _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
        _check(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None), "make / private")
        for src, dst in binds:
            os.makedirs(dst, exist_ok=True)
            _check(libc.mount(src.encode(), dst.encode(), None, MS_BIND, None), f"bind {dst}")
    _check(libc.setns(fd, CLONE_NEWNET), "setns")
    os.close(fd)
    os.execvp(program[0], program)
    return 127  # pragma: no cover - execvp does not return


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except OSError as e:
        print(f"nsexec: {e}", file=sys.stderr)
        sys.exit(126)
