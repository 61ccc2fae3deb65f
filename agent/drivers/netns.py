"""Network namespace handles, and netlink sockets opened inside them.

A guest namespace is opened once per operation and pinned by its file
descriptor, so a process that exits (and a PID that is reused) mid-call
cannot redirect the work into another namespace.

pyroute2's own netns support forks a helper process for every socket; from a
threaded daemon that is slow and fragile. Instead the calling thread enters
the namespace with setns(2), which affects that thread only, opens the
socket (a socket stays bound to the namespace it was created in) and returns
to the host namespace at once.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import shutil
import socket
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InternalError, InvalidSpec, NotFound

CLONE_NEWNET = 0x40000000
NS_GET_NSTYPE = 0xB703  # _IO(0xb7, 0x3)
NETLINK_ROUTE = 0

_libc = ctypes.CDLL(None, use_errno=True)
_ROOT_FD = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


@dataclass(frozen=True, slots=True)
class NetnsHandle:
    """An open, verified network namespace. ``ident`` is (st_dev, st_ino), the
    namespace's identity for as long as it lives."""

    fd: int
    path: str
    ident: tuple[int, int]

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


def open_netns(path: str, field: str = "guest") -> NetnsHandle:
    """Open and verify a network namespace file.

    Only regular nsfs files are opened (never a FIFO or device that could
    block or have side effects), and the opened file must be a network
    namespace. Raises NotFound when the path does not exist.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist", field=field) from None
    except OSError as e:
        raise InvalidSpec(f"{field}: cannot use {path}: {e.strerror}", field=field) from None
    if not stat.S_ISREG(st.st_mode):
        raise InvalidSpec(f"{field}: {path} is not a network namespace file", field=field)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"network namespace {path} does not exist", field=field) from None
    except OSError as e:
        raise InvalidSpec(f"{field}: cannot open {path}: {e.strerror}", field=field) from None
    try:
        try:
            nstype = fcntl.ioctl(fd, NS_GET_NSTYPE)
        except OSError:
            nstype = -1
        if nstype != CLONE_NEWNET:
            raise InvalidSpec(f"{field}: {path} is not a network namespace", field=field)
        fst = os.fstat(fd)
        return NetnsHandle(fd=fd, path=path, ident=(fst.st_dev, fst.st_ino))
    except BaseException:
        os.close(fd)
        raise


def netns_ident(path: str) -> tuple[int, int] | None:
    """Identity of the namespace at ``path`` now, or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def host_ident() -> tuple[int, int]:
    st = os.fstat(_ROOT_FD)
    return (st.st_dev, st.st_ino)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _return_home() -> None:
    try:
        _setns(_ROOT_FD)
    except OSError as e:  # pragma: no cover - the thread would work in the wrong netns
        os.write(2, f"netplumbd: FATAL: cannot return to the host netns: {e}\n".encode())
        os._exit(70)


def socket_in(handle: NetnsHandle | None, family: int, type_: int, proto: int) -> socket.socket:
    """A socket created inside ``handle``'s namespace (None: the host's)."""
    if handle is None:
        return socket.socket(family, type_, proto)
    try:
        _setns(handle.fd)
    except OSError as e:
        raise InternalError(f"cannot enter network namespace {handle.path}: {e.strerror}") from e
    try:
        return socket.socket(family, type_, proto)
    finally:
        _return_home()


def in_guest(guest: NetnsHandle, program: Sequence[str], binds: Sequence[str] = ()) -> list[str]:
    """The argument list that runs ``program`` inside ``guest`` through
    ``netplumb.agent.nsexec`` (which joins the namespace by the inherited fd:
    pass ``guest.fd`` to the child). ``binds``: SRC:DST bind mounts in a
    private mount namespace."""
    argv = [sys.executable, "-m", "netplumb.agent.nsexec", str(guest.fd)]
    for b in binds:
        argv += ["--bind", b]
    return [*argv, "--", *program]


def find_program(name: str) -> str | None:
    """``name`` on PATH or in the sbin directories (a daemon's PATH may lack them)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/bin:/bin")


def write_sysctl_in(handle: NetnsHandle | None, path: str, value: str) -> None:
    """Write a /proc/sys/net value as seen from inside ``handle``'s namespace
    (the file is opened there; the kernel picks the namespace at open)."""
    fd = -1
    if handle is not None:
        try:
            _setns(handle.fd)
        except OSError as e:
            raise InternalError(
                f"cannot enter network namespace {handle.path}: {e.strerror}"
            ) from e
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    finally:
        if handle is not None:
            _return_home()
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def throwaway_socket(family: int, type_: int, proto: int) -> socket.socket:
    """A socket in a new, empty network namespace that lives exactly as long
    as the socket: for probing kernel features with no effect on the host."""
    if _libc.unshare(CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    try:
        return socket.socket(family, type_, proto)
    finally:
        _return_home()
