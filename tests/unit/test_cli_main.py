"""The CLI's main(argv, env, stdout, stderr, client_factory) in-process, with
a fake client that records calls and returns canned protobuf replies."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

import grpc
import pytest
from netplumb.cli.client import DEFAULT_SOCKET, NetplumbError
from netplumb.cli.main import main
from netplumb.v1 import agent_pb2 as pb

Code = grpc.StatusCode

ENDPOINT = pb.Endpoint(
    spec=pb.EndpointSpec(bridge="br0", guest="netns:blue", addresses=["198.18.0.10/24"]),
    id="0123456789abcdef",
    guest="netns:blue",
    ifname="eth1",
    host_ifname="np0123456789ab",
    mac="02:aa:bb:cc:dd:ee",
    mtu=1500,
    addresses=["198.18.0.10/24"],
    routes=[pb.Route(destination="default", via="198.18.0.1")],
    state=pb.ENDPOINT_STATE_READY,
    bridge="br0",
)
BRIDGE = pb.Bridge(
    spec=pb.BridgeSpec(name="br0", kind=pb.BRIDGE_KIND_LINUX), owned=True, present=True, mtu=1500
)
DRIFT = pb.Drift(object="endpoint", name="0123", detail="differs", repair=["set eth1 up (guest)"])


class FakeClient:
    """Stands in for cli.client.Client: records the socket and the calls."""

    def __init__(self, socket: str, timeout: float = 30.0) -> None:
        self.socket = socket
        self.timeout = timeout
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.closed = False
        self.error: BaseException | None = None
        self.drift: list[pb.Drift] = []

    def close(self) -> None:
        self.closed = True

    def _record(self, name: str, args: tuple[Any, ...], kw: dict[str, Any], reply: Any) -> Any:
        self.calls.append((name, args, kw))
        if self.error is not None:
            raise self.error
        return reply

    def create_bridge(self, *a: Any, **kw: Any) -> pb.Bridge:
        return self._record("create_bridge", a, kw, BRIDGE)

    def delete_bridge(self, *a: Any, **kw: Any) -> pb.DeleteBridgeResponse:
        return self._record(
            "delete_bridge", a, kw, pb.DeleteBridgeResponse(existed=True, deleted_link=True)
        )

    def list_bridges(self, *a: Any, **kw: Any) -> list[pb.Bridge]:
        return self._record("list_bridges", a, kw, [BRIDGE])

    def guest_command(self, *a: Any, **kw: Any) -> pb.Endpoint:
        return self._record("guest_command", a, kw, ENDPOINT)

    def attach(self, *a: Any, **kw: Any) -> pb.Endpoint:
        return self._record("attach", a, kw, ENDPOINT)

    def detach(self, *a: Any, **kw: Any) -> list[pb.Endpoint]:
        return self._record("detach", a, kw, [ENDPOINT])

    def list_endpoints(self, *a: Any, **kw: Any) -> list[pb.Endpoint]:
        return self._record("list_endpoints", a, kw, [ENDPOINT, ENDPOINT])

    def add_route(self, *a: Any, **kw: Any) -> pb.Endpoint:
        return self._record("add_route", a, kw, ENDPOINT)

    def delete_route(self, *a: Any, **kw: Any) -> pb.Endpoint:
        return self._record("delete_route", a, kw, ENDPOINT)

    def status(self, *a: Any, **kw: Any) -> pb.HostStatus:
        return self._record(
            "status", a, kw, pb.HostStatus(version="0.1.0", hostname="h", mode="standalone")
        )

    def check(self, *a: Any, **kw: Any) -> list[pb.Drift]:
        return self._record("check", a, kw, self.drift)

    def reconcile(self, *a: Any, **kw: Any) -> pb.ReconcileResponse:
        return self._record("reconcile", a, kw, pb.ReconcileResponse(repaired=[DRIFT]))


class Run:
    def __init__(
        self,
        *argv: str,
        env: dict[str, str] | None = None,
        error: BaseException | None = None,
        drift: list[pb.Drift] | None = None,
    ) -> None:
        self.clients: list[FakeClient] = []

        def factory(socket: str, timeout: float = 30.0) -> FakeClient:
            c = FakeClient(socket, timeout)
            c.error, c.drift = error, drift or []
            self.clients.append(c)
            return c

        out, err = io.StringIO(), io.StringIO()
        self.rc = main(list(argv), env or {}, out, err, factory)
        self.out, self.err = out.getvalue(), err.getvalue()

    @property
    def client(self) -> FakeClient:
        (c,) = self.clients
        return c


# -------------------------------------------------------------------- usage


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["frob"],
        ["attach"],
        ["attach", "br0"],
        ["attach", "br0", "netns:blue", "--mtu", "abc"],
        ["attach", "br0", "netns:blue", "--vlan", "1.5"],
        ["attach", "br0", "netns:blue", "--bogus"],
        ["bridge"],
        ["bridge", "add"],
        ["bridge", "add", "br0", "--kind", "vde"],
        ["bridge", "add", "br0", "--mtu", "9k"],
        ["route", "add", "netns:blue"],
        ["route", "frob"],
        ["--timeout", "soon", "ls"],
        ["ls", "extra"],
    ],
)
def test_usage_errors_exit_2_on_stderr_without_a_traceback(argv: list[str]) -> None:
    r = Run(*argv)
    assert r.rc == 2
    assert r.out == "" and r.err.startswith("netplumb")
    assert "Traceback" not in r.err and "--help" in r.err
    assert r.clients == []  # the daemon is never called


@pytest.mark.parametrize(
    "argv",
    [
        ["attach", "br0", "netns:blue", "198.18.0.4/24@"],
        ["attach", "br0", "netns:blue", "@198.18.0.4"],
        ["attach", "br0", "netns:blue", "198.18.0.2/24", "--route", "198.18.128.0/17@"],
    ],
)
def test_bad_address_at_gateway_is_a_usage_error(argv: list[str]) -> None:
    r = Run(*argv)
    assert r.rc == 2 and "expected X@Y" in r.err and "Traceback" not in r.err
    assert r.out == "" and all(not c.calls for c in r.clients)


def test_help_exits_0_with_the_examples() -> None:
    r = Run("--help")
    assert r.rc == 0
    assert "examples:" in r.out and "netplumb attach bri0 netns:blue" in r.out
    assert "exit status:" in r.out and "NETPLUMB_SOCKET" in r.out


@pytest.mark.parametrize(
    ("argv", "usage"),
    [
        (["--help"], "usage: netplumb [-h]"),
        (["-h"], "usage: netplumb [-h]"),
        (["--json", "--help"], "usage: netplumb [-h]"),
        (["attach", "--help"], "usage: netplumb attach"),
        (["bridge", "--help"], "usage: netplumb bridge"),
        (["bridge", "add", "--help"], "usage: netplumb bridge add"),
        (["route", "del", "-h"], "usage: netplumb route del"),
        (["ls", "--help", "--bogus"], "usage: netplumb ls"),
    ],
)
def test_help_at_any_level_goes_to_the_given_stdout(
    argv: list[str], usage: str, capsys: pytest.CaptureFixture[str]
) -> None:
    r = Run(*argv)
    assert r.rc == 0
    assert r.out.startswith(usage) and r.err == ""
    assert r.clients == []
    assert capsys.readouterr() == ("", "")  # nothing on the process's own streams


# ------------------------------------------------------------------- socket


def test_socket_comes_from_the_flag_then_the_environment_then_the_default() -> None:
    env = {"NETPLUMB_SOCKET": "/env/np.sock"}
    assert Run("--socket", "/flag/np.sock", "ls", env=env).client.socket == "/flag/np.sock"
    assert Run("ls", "--socket", "/flag/np.sock", env=env).client.socket == "/flag/np.sock"
    assert Run("ls", env=env).client.socket == "/env/np.sock"
    assert Run("ls").client.socket == DEFAULT_SOCKET == "/run/netplumb/netplumbd.sock"


def test_timeout_reaches_the_client() -> None:
    assert Run("--timeout", "2.5", "ls").client.timeout == 2.5
    assert Run("ls").client.timeout == 30.0


def test_client_is_closed() -> None:
    assert Run("ls").client.closed
    assert Run("ls", error=NetplumbError(Code.INTERNAL, "x")).client.closed


# -------------------------------------------------------------- dispatching


def test_attach_splits_addresses_gateways_and_routes() -> None:
    r = Run(
        "attach",
        "br0",
        "netns:blue",
        "198.18.0.10/24@198.18.0.1",
        "198.18.0.11/24@198.18.0.1",
        "2001:db8::10/64",
        "0/0",
        "--route",
        "198.19.0.0/16@198.18.0.254",
        "--route",
        "198.19.192.0/24",
        "--ifname",
        "data0",
        "--mtu",
        "1400",
        "--vlan",
        "7",
        "--mac",
        "02:aa:bb:cc:dd:ee",
        "--host-ifname",
        "vdata0",
    )
    assert r.rc == 0, r.err
    ((name, args, kw),) = r.client.calls
    assert (name, args) == ("attach", ("br0", "netns:blue"))
    assert kw == {
        "addresses": ["198.18.0.10/24", "198.18.0.11/24", "2001:db8::10/64"],
        "gateways": ["198.18.0.1"],
        "ifname": "data0",
        "host_ifname": "vdata0",
        "mac": "02:aa:bb:cc:dd:ee",
        "mtu": 1400,
        "vlan": 7,
        "routes": [("198.19.0.0/16", "198.18.0.254"), ("198.19.192.0/24", "")],
        "kind": "",
        "parent": "",
        "dhcp": "",
        "dhcp_options": [],
        "dhcp_keep": False,
        "name": "",
    }
    assert r.out.startswith("attached netns:blue eth1: 198.18.0.10/24 via 198.18.0.1")


@pytest.mark.parametrize(
    ("argv", "want"),
    [
        (
            ["--kind", "macvlan", "eth2", "web", "198.18.0.5/24"],
            {"kind": "macvlan", "parent": "eth2", "bridge": ""},
        ),
        (["--kind", "phys", "mac:52:54:00:00:00:01", "web"], {"kind": "phys", "bridge": ""}),
        (["--kind", "dummy", "-", "web"], {"kind": "dummy", "parent": "", "bridge": ""}),
        (
            ["br0", "web", "--dhcp", "dhclient", "--dhcp-keep", "--dhcp-option=-v"],
            {"dhcp": "dhclient", "dhcp_keep": True, "dhcp_options": ["-v"], "bridge": "br0"},
        ),
    ],
)
def test_attach_kinds_and_dhcp(argv: list[str], want: dict[str, object]) -> None:
    r = Run("attach", *argv)
    assert r.rc == 0, r.err
    ((_, args, kw),) = r.client.calls
    got = {**kw, "bridge": args[0]}
    assert {k: got[k] for k in want} == want


@pytest.mark.parametrize(
    "argv",
    [
        ["--kind", "dummy", "br0", "web"],  # a dummy has no bridge
        ["br0", "web", "--dhcp-keep"],  # keep without a client
        ["--kind", "bond", "br0", "web"],
    ],
)
def test_attach_kind_usage_errors(argv: list[str]) -> None:
    r = Run("attach", *argv)
    assert r.rc == 2 and not any(c.calls for c in r.clients)


def test_rule_and_tc_go_to_the_guest_command_call() -> None:
    r = Run("rule", "web", "add", "from", "198.18.0.0/24", "table", "5")
    assert r.rc == 0, r.err
    assert r.client.calls[0][:2] == (
        "guest_command",
        ("web", "rule", ["add", "from", "198.18.0.0/24", "table", "5"], ""),
    )
    assert Run("tc", "web").rc == 2


@pytest.mark.parametrize(
    ("argv", "call"),
    [
        (["bridge", "add", "br0", "--address", "198.18.0.1/24", "--mtu", "9000"], "create_bridge"),
        (["bridge", "del", "br0"], "delete_bridge"),
        (["bridge", "ls"], "list_bridges"),
        (["detach", "netns:blue", "--ifname", "eth1"], "detach"),
        (["ls"], "list_endpoints"),
        (["route", "add", "netns:blue", "198.18.128.0/17", "--via", "198.18.0.1"], "add_route"),
        (["route", "del", "netns:blue", "198.18.128.0/17"], "delete_route"),
        (["status"], "status"),
        (["check"], "check"),
        (["reconcile"], "reconcile"),
    ],
)
def test_every_command_calls_the_daemon_once_and_prints(argv: list[str], call: str) -> None:
    r = Run(*argv)
    assert r.rc == 0, r.err
    assert [c[0] for c in r.client.calls] == [call]
    assert r.out.strip() and r.err == ""


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "ls"],
        ["ls", "--json"],
        ["--json", "attach", "br0", "netns:blue", "198.18.0.10/24"],
        ["--json", "bridge", "ls"],
        ["--json", "bridge", "add", "br0"],
        ["--json", "detach", "netns:blue"],
        ["--json", "status"],
        ["--json", "check"],
        ["--json", "reconcile"],
    ],
)
def test_json_output_is_one_document(argv: list[str]) -> None:
    r = Run(*argv)
    assert r.rc == 0, r.err
    doc = json.loads(r.out)  # the whole output, nothing before or after
    assert isinstance(doc, dict) and r.out.endswith("}\n")


def test_json_endpoint_shape() -> None:
    doc = json.loads(Run("--json", "ls").out)
    (ep, _) = doc["endpoints"]
    assert ep["state"] == "ready" and ep["host_ifname"] == "np0123456789ab"
    assert ep["spec"]["guest"] == "netns:blue" and ep["vlan"] == 0  # defaults are printed


def test_check_exits_6_on_drift() -> None:
    r = Run("check", drift=[DRIFT])
    assert r.rc == 6 and "repair: set eth1 up (guest)" in r.out
    r = Run("check")
    assert r.rc == 0 and "no drift" in r.out


# ------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("code", "status"),
    [
        (Code.INTERNAL, 1),
        (Code.UNIMPLEMENTED, 1),
        (Code.NOT_FOUND, 3),
        (Code.INVALID_ARGUMENT, 4),
        (Code.ALREADY_EXISTS, 4),
        (Code.FAILED_PRECONDITION, 4),
        (Code.UNAVAILABLE, 5),
        (Code.DEADLINE_EXCEEDED, 5),
    ],
)
def test_daemon_errors_map_to_exit_statuses_with_the_hint(
    code: grpc.StatusCode, status: int
) -> None:
    error = NetplumbError(
        code, "bridge br9 does not exist", "not-found", "spec.bridge", "netplumb bridge add br9"
    )
    r = Run("attach", "br9", "netns:blue", error=error)
    assert r.rc == status
    assert r.out == ""
    assert "netplumb: error: bridge br9 does not exist" in r.err
    assert "field: spec.bridge" in r.err and "hint: netplumb bridge add br9" in r.err
    assert "Traceback" not in r.err


def test_json_errors_are_a_document_on_stdout() -> None:
    error = NetplumbError(Code.ALREADY_EXISTS, "different spec", "conflict", "spec", "detach first")
    r = Run("--json", "attach", "br0", "netns:blue", error=error)
    assert r.rc == 4
    assert json.loads(r.out) == {
        "error": {
            "code": "ALREADY_EXISTS",
            "reason": "conflict",
            "message": "different spec",
            "field": "spec",
            "hint": "detach first",
        }
    }
    assert "hint: detach first" in r.err


def test_unexpected_client_exception_is_exit_1_without_a_traceback() -> None:
    r = Run("ls", error=ValueError("surprise"))
    assert r.rc == 1 and "internal error: ValueError: surprise" in r.err
    assert "Traceback" not in r.err


def test_a_real_client_on_a_missing_socket_is_unavailable(tmp_path: Any) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = main(["--timeout", "2", "ls"], {"NETPLUMB_SOCKET": str(tmp_path / "no.sock")}, out, err)
    assert rc == 5
    assert "cannot reach netplumbd" in err.getvalue() and "hint:" in err.getvalue()


class NewerDaemon(FakeClient):
    """Replies with enum values this client does not know."""

    def create_bridge(self, *a: Any, **kw: Any) -> pb.Bridge:
        return pb.Bridge(spec=pb.BridgeSpec(name="br0", kind=7), owned=True)

    def list_bridges(self, *a: Any, **kw: Any) -> list[pb.Bridge]:
        return [pb.Bridge(spec=pb.BridgeSpec(name="br0", kind=7))]

    def list_endpoints(self, *a: Any, **kw: Any) -> list[pb.Endpoint]:
        return [pb.Endpoint(guest="netns:blue", state=9)]


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["bridge", "ls"], "unknown(7)"),
        (["bridge", "add", "br0"], "bridge br0 (unknown(7), mtu 0) created"),
        (["ls"], "netns:blue"),
    ],
)
def test_an_enum_value_from_a_newer_daemon_is_rendered(argv: list[str], shown: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    rc = main(argv, {}, out, err, NewerDaemon)
    assert rc == 0 and err.getvalue() == ""
    assert shown in out.getvalue()


def test_an_enum_value_from_a_newer_daemon_is_a_number_in_json() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert main(["--json", "bridge", "ls"], {}, out, err, NewerDaemon) == 0
    assert json.loads(out.getvalue())["bridges"][0]["spec"]["kind"] == 7
    out = io.StringIO()
    assert main(["--json", "ls"], {}, out, err, NewerDaemon) == 0
    assert json.loads(out.getvalue())["endpoints"][0]["state"] == "unknown"


@pytest.mark.parametrize("json_mode", [False, True])
def test_main_never_raises_on_a_reply_it_cannot_render(json_mode: bool) -> None:
    class Broken(FakeClient):
        def list_bridges(self, *a: Any, **kw: Any) -> list[Any]:
            return [pb.Bridge(spec=pb.BridgeSpec(name="br0")), object()]  # not a Bridge

    out, err = io.StringIO(), io.StringIO()
    rc = main(["--json"] * json_mode + ["bridge", "ls"], {}, out, err, Broken)
    assert rc == 1
    assert out.getvalue() == ""  # nothing half-printed
    (line,) = err.getvalue().splitlines()
    assert line.startswith("netplumb: internal error: cannot print the reply: ")


def test_internal_errors_are_one_line() -> None:
    r = Run("ls", error=RuntimeError("first\nsecond\n"))
    assert r.rc == 1 and r.err == "netplumb: internal error: RuntimeError: first second\n"


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # buffered, as usual
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env
    )


@pytest.mark.parametrize(
    ("argv", "status"),
    [
        (["--help"], 0),
        (["attach", "--help"], 0),
        (["bridge", "add", "--help"], 0),
        (["bridge"], 2),
        (["attach", "br0"], 2),
        (["frob"], 2),
    ],
)
def test_help_and_usage_errors_import_neither_grpc_nor_protobuf(
    argv: list[str], status: int
) -> None:
    """Start-up time: parsing the command line needs neither."""
    code = (
        "import io, sys; from netplumb.cli import main; "
        f"rc = main.main({argv!r}, env={{}}, stdout=io.StringIO(), stderr=io.StringIO()); "
        f"assert rc == {status}, rc; "
        "heavy = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('grpc', 'google') or m.startswith('netplumb.v1')); "
        "assert not heavy, heavy"
    )
    res = _python(code)
    assert res.returncode == 0, res.stderr


def test_run_flushes_and_exits_without_interpreter_teardown() -> None:
    """run() leaves with os._exit: atexit handlers (grpc's among them) do
    not run, and what main() printed is flushed first."""
    code = (
        "import atexit, sys; atexit.register(print, 'ATEXIT-RAN', file=sys.stderr); "
        "from netplumb.cli.main import run; run()"
    )
    res = _python(code, "--help")
    assert res.returncode == 0 and "examples:" in res.stdout
    assert "ATEXIT-RAN" not in res.stderr
    res = _python(code, "bridge")
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.startswith("netplumb bridge: ") and "ATEXIT-RAN" not in res.stderr
    res = _python(code, "--socket", "/nonexistent/np.sock", "--timeout", "5", "ls")
    assert res.returncode == 5 and "cannot reach netplumbd" in res.stderr
    assert "ATEXIT-RAN" not in res.stderr


def test_the_cli_never_imports_agent_code() -> None:
    code = (
        "import netplumb.cli.main, sys; import netplumb.cli.client; "
        "assert not any(m.startswith('netplumb.agent') for m in sys.modules), "
        "sorted(m for m in sys.modules if m.startswith('netplumb.agent'))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


# ------------------------------------------------- lazily built command line


def _subcommands(parser: Any) -> dict[str, Any]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_the_command_list_is_the_full_parsers() -> None:
    from netplumb.cli.main import COMMANDS, build_parser

    assert set(_subcommands(build_parser())) == COMMANDS


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["attach", "br0", "netns:a"], "attach"),
        (["--json", "ls"], "ls"),
        (["--socket", "ls", "attach", "br0", "netns:a"], "attach"),  # a value named like a command
        (["--socket=/run/x.sock", "bridge", "ls"], "bridge"),
        (["--timeout", "5", "--insecure-tcp", "status"], "status"),
        (["--sock", "/run/x.sock", "ls"], None),  # abbreviated: argparse decides
        (["--help", "attach"], None),  # the top-level help lists every command
        (["--json=1", "ls"], None),
        (["frob"], None),
        ([], None),
    ],
)
def test_the_command_is_found_before_parsing_or_left_to_the_full_parser(
    argv: list[str], command: str | None
) -> None:
    from netplumb.cli.main import command_in

    assert command_in(argv) == command


@pytest.mark.parametrize(
    "argv",
    [
        ["bridge", "add", "br0", "--address", "198.18.0.1/24", "--kind", "ovs"],
        ["--json", "attach", "br0", "netns:blue", "198.18.0.10/24@198.18.0.1", "--mtu", "1400"],
        ["detach", "netns:blue", "--ifname", "eth1"],
        ["--timeout", "3", "ls"],
        ["rule", "web", "add", "from", "198.18.0.0/24", "table", "100"],
        ["tc", "web", "qdisc", "show"],
        ["route", "add", "netns:blue", "default", "--via", "198.18.0.1"],
        ["peer", "add", "198.18.0.2", "198.18.0.3"],
        ["network", "create", "web", "--subnet", "198.19.10.0/24", "--vni", "10"],
        ["doctor", "--json"],
        ["status"],
        ["check"],
        ["reconcile"],
    ],
)
def test_a_command_parses_and_helps_the_same_with_only_its_parser_built(argv: list[str]) -> None:
    from netplumb.cli.main import build_parser, command_in

    only = command_in(argv)
    assert only is not None
    full, lazy = build_parser(io.StringIO()), build_parser(io.StringIO(), only=only)
    assert vars(lazy.parse_args(argv)) == vars(full.parse_args(argv))
    assert list(_subcommands(lazy)) == [only]
    assert _subcommands(lazy)[only].format_help() == _subcommands(full)[only].format_help()
