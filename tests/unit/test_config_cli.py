"""Where the command and the Python Client call: the unix socket or
--connect ADDRESS:PORT with client certificate files, from flags or the
environment. Combinations that do not fit are usage errors (exit 2) and
nothing is sent."""

from __future__ import annotations

import io
from typing import Any

import pytest
from netplumb.cli.client import DEFAULT_SOCKET, Client, target
from netplumb.cli.main import main

CERTS = ["--tls-cert", "me.crt", "--tls-key", "me.key", "--tls-ca", "ca.crt"]
CERT_ENV = {"NETPLUMB_TLS_CERT": "e.crt", "NETPLUMB_TLS_KEY": "e.key", "NETPLUMB_TLS_CA": "eca.crt"}


def test_the_unix_socket_by_default() -> None:
    assert str(target(env={})) == DEFAULT_SOCKET
    assert target(env={"NETPLUMB_SOCKET": "/e.sock"}).socket == "/e.sock"
    assert target("/f.sock", env={"NETPLUMB_SOCKET": "/e.sock"}).socket == "/f.sock"
    # TLS variables set for another use do not matter on the socket
    t = target(env=CERT_ENV)
    assert (t.socket, t.address, t.tls_cert) == (DEFAULT_SOCKET, "", "")


def test_connect_from_flags_or_environment() -> None:
    t = target(None, "198.18.0.1:7443", "me.crt", "me.key", "ca.crt", env={})
    assert (t.address, t.tls_cert, t.tls_key, t.tls_ca, t.insecure_tcp) == (
        "198.18.0.1:7443",
        "me.crt",
        "me.key",
        "ca.crt",
        False,
    )
    t = target(env={"NETPLUMB_CONNECT": "[2001:db8::1]:7443", **CERT_ENV})
    assert (str(t), t.tls_cert, t.tls_key, t.tls_ca) == (
        "[2001:db8::1]:7443",
        "e.crt",
        "e.key",
        "eca.crt",
    )
    # a flag wins over its variable
    assert target(tls_cert="f.crt", env={"NETPLUMB_CONNECT": "h:1", **CERT_ENV}).tls_cert == "f.crt"
    # --socket wins over $NETPLUMB_CONNECT
    assert target("/f.sock", env={"NETPLUMB_CONNECT": "h:1"}).socket == "/f.sock"
    t = target(connect="127.0.0.1:7443", insecure_tcp=True, env=CERT_ENV)
    assert (t.address, t.insecure_tcp, t.tls_cert) == ("127.0.0.1:7443", True, "")


@pytest.mark.parametrize(
    ("kw", "env", "says"),
    [
        ({"socket": "/s", "connect": "h:1"}, {}, "--socket and --connect name two daemons"),
        (
            {},
            {"NETPLUMB_SOCKET": "/s", "NETPLUMB_CONNECT": "h:1"},
            "NETPLUMB_SOCKET and NETPLUMB_CONNECT are both set",
        ),
        (
            {"connect": "h:1"},
            {},
            "--connect h:1 needs --tls-cert, --tls-key, --tls-ca "
            "(or $NETPLUMB_TLS_CERT, $NETPLUMB_TLS_KEY, $NETPLUMB_TLS_CA)",
        ),
        ({"connect": "h:1", "tls_cert": "c", "tls_key": "k"}, {}, "needs --tls-ca"),
        ({"tls_cert": "c"}, {}, "--tls-cert: only with --connect ADDRESS:PORT"),
        ({"insecure_tcp": True}, {}, "--insecure-tcp: only with --connect"),
        ({"connect": "h:1", "insecure_tcp": True, "tls_ca": "a"}, {}, "contradicts --tls-ca"),
        ({"connect": "198.18.0.1"}, {}, "expected ADDRESS:PORT"),
        ({"connect": "h:0"}, {}, "expected ADDRESS:PORT"),
        ({"connect": "2001:db8::1:7443"}, {}, "IPv6 address in brackets"),
    ],
)
def test_combinations_that_do_not_fit(kw: dict[str, Any], env: dict[str, str], says: str) -> None:
    with pytest.raises(ValueError) as e:
        target(env=env, **kw)
    assert says in str(e.value)


class Recorder:
    """A client factory that records how main() made its client."""

    def __init__(self) -> None:
        self.made: list[tuple[Any, dict[str, Any]]] = []

    def __call__(self, socket: Any, **kw: Any) -> Any:
        self.made.append((socket, kw))
        recorder = self

        class Fake:
            def status(self) -> Any:
                from netplumb.v1 import agent_pb2 as pb

                return pb.HostStatus(version="test")

            def close(self) -> None:
                recorder.made.append(("closed", {}))

        return Fake()


def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str, Recorder]:
    rec, out, err = Recorder(), io.StringIO(), io.StringIO()
    rc = main(list(argv), env or {}, out, err, rec)
    return rc, out.getvalue(), err.getvalue(), rec


def test_main_passes_connect_and_the_certificate_files() -> None:
    rc, _, err, rec = run("--connect", "198.18.0.1:7443", *CERTS, "--json", "status")
    assert rc == 0, err
    socket, kw = rec.made[0]
    assert socket is None
    assert kw == {
        "timeout": 30.0,
        "connect": "198.18.0.1:7443",
        "tls_cert": "me.crt",
        "tls_key": "me.key",
        "tls_ca": "ca.crt",
        "insecure_tcp": False,
    }
    # after the command, like --socket
    rc, _, err, rec = run("status", "--connect", "h:1", "--insecure-tcp")
    assert rc == 0, err
    assert rec.made[0][1]["insecure_tcp"] is True


def test_main_on_the_socket_as_before() -> None:
    rc, _, _, rec = run("status", env={"NETPLUMB_SOCKET": "/e.sock"})
    assert rc == 0
    assert rec.made[0] == ("/e.sock", {"timeout": 30.0})


@pytest.mark.parametrize(
    ("argv", "env", "says"),
    [
        (["--connect", "h:1", "status"], {}, "needs --tls-cert, --tls-key, --tls-ca"),
        (["--socket", "/s", "--connect", "h:1", "status"], {}, "name two daemons"),
        (["--tls-cert", "c", "status"], {}, "only with --connect"),
        (["status"], {"NETPLUMB_SOCKET": "/s", "NETPLUMB_CONNECT": "h:1"}, "both set"),
    ],
)
def test_main_usage_errors_send_nothing(argv: list[str], env: dict[str, str], says: str) -> None:
    rc, out, err, rec = run(*argv, env=env)
    assert rc == 2
    assert out == ""
    assert err.startswith("netplumb: ")
    assert says in err
    assert rec.made == []  # no client was even made


def test_help_shows_the_tcp_options() -> None:
    out = io.StringIO()
    assert main(["--help"], {}, out, io.StringIO()) == 0
    for word in ("--connect", "--tls-cert", "--tls-key", "--tls-ca", "--insecure-tcp"):
        assert word in out.getvalue()
    assert "NETPLUMB_CONNECT" in out.getvalue()


def test_client_refuses_what_it_cannot_use(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="wire transport reaches a unix socket only"):
        Client(connect="127.0.0.1:7443", insecure_tcp=True, transport="wire")
    with pytest.raises(ValueError, match=r"--tls-cert .*/nope.crt: cannot read it"):
        Client(
            connect="127.0.0.1:7443",
            tls_cert=str(tmp_path / "nope.crt"),
            tls_key=str(tmp_path / "nope.key"),
            tls_ca=str(tmp_path / "ca.crt"),
        )
    (tmp_path / "junk.crt").write_text("junk\n")
    with pytest.raises(ValueError, match="not a PEM file"):
        Client(
            connect="127.0.0.1:7443",
            tls_cert=str(tmp_path / "junk.crt"),
            tls_key="k",
            tls_ca="a",
        )


def test_unreadable_certificate_is_a_usage_error(tmp_path: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = main(
        [
            "--connect",
            "127.0.0.1:7443",
            *[str(tmp_path / a) if "." in a else a for a in CERTS],
            "ls",
        ],
        {},
        out,
        err,
    )
    assert rc == 2
    assert "cannot read it: No such file or directory" in err.getvalue()
    assert out.getvalue() == ""
