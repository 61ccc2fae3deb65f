"""Who may call netplumbd: the unix socket is root's and one group's (tried
with real unprivileged users), TCP is off unless asked for, and then needs
TLS with a client certificate signed by the daemon's client CA (certificates
made here at run time with openssl), or an explicit --insecure-tcp.

Everything made here (users, groups, certificates, daemons, directories) is
removed afterwards, also when a test fails."""

from __future__ import annotations

import functools
import grp
import os
import pwd
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fixtures.host import NETPLUMB, NETPLUMBD, Daemon, require_root, run, running_daemon
from grpc_health.v1 import health_pb2, health_pb2_grpc
from netplumb.cli.client import Client, NetplumbError
from netplumb.cli.codes import Code

# --------------------------------------------------------------- unix socket


class Accounts:
    """A throwaway system group and two users, one in the group and one not;
    deleted by ``remove`` whatever was made before a failure."""

    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.group = f"npg-{tag}"
        self.member = f"npm-{tag}"
        self.outsider = f"npo-{tag}"
        self.users: list[str] = []
        self.groups: list[str] = []

    def create(self) -> None:
        run("groupadd", "--system", self.group)
        self.groups.append(self.group)
        for user, extra in ((self.member, ["--groups", self.group]), (self.outsider, [])):
            # No home, no login shell, no group of its own: only what the test needs.
            run(
                "useradd",
                "--system",
                "--no-create-home",
                "--no-user-group",
                "--shell",
                "/usr/sbin/nologin",
                *extra,
                user,
            )
            self.users.append(user)

    def remove(self) -> None:
        for user in reversed(self.users):
            run("userdel", user, check=False)
        for group in self.groups:
            run("groupdel", group, check=False)

    def gid(self) -> int:
        return grp.getgrnam(self.group).gr_gid


@pytest.fixture(scope="module")
def accounts() -> Iterator[Accounts]:
    require_root()
    a = Accounts()
    try:
        a.create()
        yield a
    finally:
        a.remove()
    assert not any(_exists(pwd.getpwnam, u) for u in (a.member, a.outsider))
    assert not _exists(grp.getgrnam, a.group)


def _exists(lookup: object, name: str) -> bool:
    try:
        lookup(name)  # type: ignore[operator]
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def group_daemon(accounts: Accounts) -> Iterator[Daemon]:
    with running_daemon(args=["--socket-group", accounts.group]) as d:
        # The test directory is mkdtemp's 0700; the users must be able to
        # reach the socket inside it, the socket's own mode decides the rest.
        os.chmod(d.dir, 0o711)
        yield d


# The interpreter of this virtualenv may sit where an unprivileged user
# cannot execute it (pyenv under /root, mode 0700). The same Python version
# elsewhere (the system's) runs the same code from the virtualenv's
# site-packages, which only need to be readable: -S and addsitedir give it
# exactly those, not the system's own packages.
BOOT = (
    "import site, sys; site.addsitedir(sys.argv.pop(1)); "
    "from netplumb.cli.main import main; from netplumb.cli.client import Client; "
    "grpc_client = lambda path, timeout: Client(path, timeout=timeout, transport='grpc'); "
    "sys.exit(main(sys.argv[2:], client_factory=grpc_client if sys.argv[1] == 'grpc' else None))"
)


@functools.cache
def _interpreter(uid: int, gid: int) -> str:
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidates = [sys.executable] + [
        p for p in (f"/usr/bin/{version}", f"/usr/local/bin/{version}") if os.path.exists(p)
    ]
    for python in candidates:
        try:
            res = subprocess.run(
                [python, "-S", "-c", "pass"], user=uid, group=gid, capture_output=True, timeout=30
            )
        except PermissionError:
            continue
        if res.returncode == 0:
            return python
    pytest.fail(f"no {version} that an unprivileged user can run (tried {candidates})")


def run_as(
    user: str, extra_groups: list[int], transport: str, *argv: str
) -> subprocess.CompletedProcess[str]:
    """The netplumb command as ``user`` (uid, primary gid, exactly
    ``extra_groups``), on the wire transport or on grpcio."""
    pw = pwd.getpwnam(user)
    python = _interpreter(pw.pw_uid, pw.pw_gid)
    site = sysconfig.get_paths()["purelib"]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/", "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run(
        [python, "-S", "-c", BOOT, site, transport, *argv],
        user=pw.pw_uid,
        group=pw.pw_gid,
        extra_groups=extra_groups,
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_socket_is_0660_root_and_the_configured_group(
    group_daemon: Daemon, accounts: Accounts
) -> None:
    st = os.stat(group_daemon.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert (st.st_uid, st.st_gid) == (0, accounts.gid())


@pytest.mark.parametrize("transport", ["wire", "grpc"])
def test_a_member_of_the_socket_group_is_served(
    group_daemon: Daemon, accounts: Accounts, transport: str
) -> None:
    res = run_as(
        accounts.member, [accounts.gid()], transport, "--socket", group_daemon.socket, "status"
    )
    assert res.returncode == 0, res.stderr
    assert "netplumbd" in res.stdout


@pytest.mark.parametrize("transport", ["wire", "grpc"])
def test_a_user_outside_the_socket_group_is_refused(
    group_daemon: Daemon, accounts: Accounts, transport: str
) -> None:
    res = run_as(accounts.outsider, [], transport, "--socket", group_daemon.socket, "status")
    assert res.returncode == 5, (res.stdout, res.stderr)
    assert res.stdout == ""
    assert f"permission denied on {group_daemon.socket}" in res.stderr
    assert "member of the socket's group" in res.stderr
    # The same user with the group is let in: the group alone made the difference.
    res = run_as(
        accounts.outsider, [accounts.gid()], transport, "--socket", group_daemon.socket, "status"
    )
    assert res.returncode == 0, res.stderr


# ----------------------------------------------------------------------- TCP


class Pki:
    """A CA, a daemon certificate for 127.0.0.1, a client certificate, and a
    second CA with a client certificate of its own, made with openssl."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="netplumb-pki-"))

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def make(self) -> None:
        self._ca("ca")
        self._ca("other-ca")
        self._leaf("server", "ca", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost")
        self._leaf("client", "ca", "clientAuth")
        self._leaf("stranger", "other-ca", "clientAuth")

    def _req(self, name: str, subject: str, *extra: str) -> None:
        run(
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-keyout",
            self.path(f"{name}.key"),
            "-out",
            self.path(f"{name}.crt"),
            "-subj",
            f"/CN={subject}",
            *extra,
        )

    def _ca(self, name: str) -> None:
        self._req(
            name,
            f"netplumb test {name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )

    def _leaf(self, name: str, ca: str, usage: str, *ext: str) -> None:
        extra = [x for e in ext for x in ("-addext", e)]
        self._req(
            name,
            f"netplumb test {name}",
            "-CA",
            self.path(f"{ca}.crt"),
            "-CAkey",
            self.path(f"{ca}.key"),
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            f"extendedKeyUsage={usage}",
            *extra,
        )

    def server_args(self) -> list[str]:
        return [
            "--tls-cert",
            self.path("server.crt"),
            "--tls-key",
            self.path("server.key"),
            "--tls-client-ca",
            self.path("ca.crt"),
        ]

    def client_args(self, name: str = "client") -> list[str]:
        return [
            "--tls-cert",
            self.path(f"{name}.crt"),
            "--tls-key",
            self.path(f"{name}.key"),
            "--tls-ca",
            self.path("ca.crt"),
        ]

    def read(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


@pytest.fixture(scope="module")
def pki() -> Iterator[Pki]:
    p = Pki()
    try:
        p.make()
        yield p
    finally:
        shutil.rmtree(p.dir, ignore_errors=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def tls_daemon(pki: Pki) -> Iterator[tuple[Daemon, str]]:
    address = f"127.0.0.1:{free_port()}"
    with running_daemon(args=["--listen", address, *pki.server_args()]) as d:
        yield d, address


def health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return int(reply.status)


def cli(*argv: str) -> subprocess.CompletedProcess[str]:
    """The installed netplumb command, with no NETPLUMB_* from this environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NETPLUMB_")}
    return subprocess.run([NETPLUMB, *argv], capture_output=True, text=True, timeout=60, env=env)


def test_a_client_with_a_certificate_from_the_ca_is_served(
    tls_daemon: tuple[Daemon, str], pki: Pki
) -> None:
    d, address = tls_daemon
    res = cli("--connect", address, *pki.client_args(), "status")
    assert res.returncode == 0, res.stderr
    assert "netplumbd" in res.stdout
    with Client(
        connect=address,
        tls_cert=pki.path("client.crt"),
        tls_key=pki.path("client.key"),
        tls_ca=pki.path("ca.crt"),
    ) as c:
        assert c.status().version
        assert c.list_bridges() == []
    assert "serving on tcp:" + address + " (TLS, client certificates required)" in d.log()


def test_a_client_without_a_certificate_is_refused(
    tls_daemon: tuple[Daemon, str], pki: Pki
) -> None:
    _, address = tls_daemon
    creds = grpc.ssl_channel_credentials(root_certificates=pki.read("ca.crt"))
    with grpc.secure_channel(address, creds) as ch, pytest.raises(grpc.RpcError) as e:
        health(ch)
    assert e.value.code() is grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    _assert_still_serves(address, pki)


def test_a_client_certificate_from_another_ca_is_refused(
    tls_daemon: tuple[Daemon, str], pki: Pki
) -> None:
    _, address = tls_daemon
    res = cli("--connect", address, *pki.client_args("stranger"), "status")
    assert res.returncode == 5, (res.stdout, res.stderr)
    assert res.stdout == ""
    assert f"cannot reach netplumbd at {address}" in res.stderr
    assert "--tls-client-ca" in res.stderr  # the hint names what to check
    with pytest.raises(NetplumbError) as e:
        with Client(
            connect=address,
            tls_cert=pki.path("stranger.crt"),
            tls_key=pki.path("stranger.key"),
            tls_ca=pki.path("ca.crt"),
        ) as c:
            c.status()
    assert e.value.code is Code.UNAVAILABLE
    _assert_still_serves(address, pki)


def test_a_plaintext_client_is_refused_by_a_tls_listener(
    tls_daemon: tuple[Daemon, str], pki: Pki
) -> None:
    _, address = tls_daemon
    res = cli("--connect", address, "--insecure-tcp", "status")
    assert res.returncode == 5, (res.stdout, res.stderr)
    assert "instead of --insecure-tcp" in res.stderr
    _assert_still_serves(address, pki)


def _assert_still_serves(address: str, pki: Pki) -> None:
    """The refusal was the certificate's doing: a good client gets in."""
    creds = grpc.ssl_channel_credentials(
        pki.read("ca.crt"), pki.read("client.key"), pki.read("client.crt")
    )
    with grpc.secure_channel(address, creds) as ch:
        assert health(ch) == health_pb2.HealthCheckResponse.SERVING


def test_tcp_is_off_by_default(tls_daemon: tuple[Daemon, str]) -> None:
    with running_daemon() as d:
        assert d.proc is not None
        out = run("ss", "-Hltnp").stdout
        assert f"pid={d.proc.pid}," not in out, out
    # and the daemon with --listen shows up the same way: the check can see one
    tls, _ = tls_daemon
    assert tls.proc is not None
    assert f"pid={tls.proc.pid}," in run("ss", "-Hltnp").stdout


def _start_refused(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """netplumbd with ``args`` that must refuse to start; returns its result
    and checks it left nothing behind."""
    work = tempfile.mkdtemp(prefix="netplumb-refuse-")
    try:
        sock, state = os.path.join(work, "np.sock"), os.path.join(work, "state")
        res = subprocess.run(
            [NETPLUMBD, "--socket", sock, "--state-dir", state, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )
        leftovers = sorted(os.listdir(work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return res, ", ".join(leftovers)


@pytest.mark.parametrize(
    ("given", "missing"),
    [
        ([], ["--tls-cert", "--tls-key", "--tls-client-ca"]),
        (["--tls-cert", "server.crt"], ["--tls-key", "--tls-client-ca"]),
        (["--tls-cert", "server.crt", "--tls-key", "server.key"], ["--tls-client-ca"]),
    ],
)
def test_listen_without_tls_refuses_to_start_and_says_why(
    pki: Pki, given: list[str], missing: list[str]
) -> None:
    require_root()
    port = free_port()
    args = [pki.path(a) if a.endswith((".crt", ".key")) else a for a in given]
    res, leftovers = _start_refused("--listen", f"127.0.0.1:{port}", *args)
    assert res.returncode == 2, res.stderr
    assert leftovers == ""  # no socket, no state dir: refused before touching anything
    message = " ".join(res.stderr.split())
    assert "needs TLS with client certificates" in message
    for flag in missing:
        assert f"({flag})" in message
    assert "--insecure-tcp" in message
    assert not listening(port)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--tls-cert", "server.crt"], "only applies to the TCP listener"),
        (["--insecure-tcp"], "only applies to the TCP listener"),
        (["--listen", "LISTEN", "--insecure-tcp", "--tls-key", "server.key"], "contradicts"),
        (["--listen", "127.0.0.1"], "has no port"),
        (["--listen", "::1:7443"], "IPv6 address without brackets"),
        (
            ["--listen", "LISTEN", "--tls-cert", "server.crt", "--tls-key", "client.key"],
            "not a certificate and its private key",
        ),
        (["--listen", "LISTEN", "--tls-client-ca", "server.key"], "no CA certificate"),
        (["--listen", "LISTEN", "--tls-cert", "missing.crt"], "cannot read it"),
    ],
)
def test_bad_tcp_settings_refuse_to_start(pki: Pki, args: list[str], says: str) -> None:
    require_root()
    full = {"--tls-cert": "server.crt", "--tls-key": "server.key", "--tls-client-ca": "ca.crt"}
    if "--listen" in args and "--insecure-tcp" not in args:
        # the TLS options not under test are good ones
        for flag, name in full.items():
            if flag not in args:
                args = [*args, flag, name]
    address = f"127.0.0.1:{free_port()}"
    argv = [
        address if a == "LISTEN" else pki.path(a) if a.endswith((".crt", ".key")) else a
        for a in args
    ]
    res, leftovers = _start_refused(*argv)
    assert res.returncode == 2, res.stderr
    assert leftovers == ""
    assert says in " ".join(res.stderr.split())


def test_insecure_tcp_serves_plaintext_and_warns() -> None:
    address = f"127.0.0.1:{free_port()}"
    with running_daemon(args=["--listen", address, "--insecure-tcp"]) as d:
        with grpc.insecure_channel(address) as ch:
            assert health(ch) == health_pb2.HealthCheckResponse.SERVING
        res = cli("--connect", address, "--insecure-tcp", "status")
        assert res.returncode == 0, res.stderr
        with Client(connect=address, insecure_tcp=True) as c:
            assert c.status().version
        assert f"INSECURE: serving on tcp:{address} in plaintext without any authentication" in (
            d.log()
        )


def test_a_listen_address_in_use_fails_start_and_leaves_no_socket(pki: Pki) -> None:
    require_root()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        address = f"127.0.0.1:{busy.getsockname()[1]}"
        res, leftovers = _start_refused("--listen", address, *pki.server_args())
    assert res.returncode == 1, res.stderr
    assert f"cannot serve: cannot listen on tcp:{address}" in res.stderr
    assert "np.sock" not in leftovers
