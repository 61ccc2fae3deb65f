"""netplumb: the command-line client of netplumbd.

``main(argv, env)`` returns the exit status and never raises, so tests call it
in-process. It only speaks gRPC to the daemon; it imports no agent code.

Start-up time matters: parsing the command line, --help and usage errors
import neither grpc nor protobuf (nor typing); those are imported once a
command is about to call the daemon.
"""

from __future__ import annotations

import argparse
import io
import os
import sys

from .exits import Exit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from typing import IO, Any, NoReturn

    from _typeshed import SupportsWrite

DESCRIPTION = """\
netplumb wires network namespaces and containers into bridges through the
netplumbd daemon: it creates bridges, attaches guests with a veth pair
(addresses, gateway, routes, MAC, MTU, VLAN), and keeps them that way across
restarts. Every command is idempotent: repeating it changes nothing.
"""

EPILOG = """\
guests:
  netns:NAME | NAME        a named network namespace (/run/netns/NAME)
  pid:PID                  the network namespace of a process
  /proc/PID/ns/net, /run/netns/NAME, or another namespace file path

examples:
  netplumb bridge add bri0 --address 198.18.0.1/24
  netplumb attach bri0 netns:blue 198.18.0.10/24@198.18.0.1 2001:db8::10/64
  netplumb attach bri0 pid:4242 198.18.0.11/24 --ifname eth2 --mtu 1400
  netplumb route add netns:blue 198.19.0.0/16 --via 198.18.0.254
  netplumb bridge add bri0 --kind ovs --vni 100 --tunnel geneve
  netplumb peer add 198.18.0.12 --name h2
  netplumb --json ls
  netplumb detach netns:blue

exit status:
  0 success, 1 internal error, 2 usage, 3 not found,
  4 invalid input or conflict, 5 daemon or a dependency unavailable,
  6 drift found (check), 7 a failing check (doctor)

The socket is --socket, else $NETPLUMB_SOCKET, else /run/netplumb/netplumbd.sock.
A daemon listening on TCP (netplumbd --listen) is reached with
--connect ADDRESS:PORT (or $NETPLUMB_CONNECT) and a client certificate:
  netplumb --connect 198.18.0.1:7443 --tls-cert me.crt --tls-key me.key \\
      --tls-ca ca.crt status
($NETPLUMB_TLS_CERT, $NETPLUMB_TLS_KEY, $NETPLUMB_TLS_CA); see docs/security.md.
"""


DOCTOR_EPILOG = """\
Run it on the daemon's host, as root, in the network namespace netplumbd
runs in (sysctls such as net.ipv4.ip_forward are per namespace). It reads
the daemon's configuration and recorded state (never writes them), looks at
the host, and asks the daemon too when it answers. Each check prints PASS,
FAIL or SKIP (not applicable, or not decidable: the line says why), and
under each FAIL the fix.

checks: config, state-file, socket, socket-permissions (0660 root:GROUP),
  socket-connect, daemon (answers, same version), daemon-config, bridges,
  endpoints (interfaces present in running guests), ovs, ovs-vswitchd,
  ovs-datapath (vs the kernel), userspace-tunnel (netdev overlays: tunnel
  source on a netdev bridge's internal port, OVS's route to each peer),
  tunnels, overlay-mtu (MTUs vs the underlay minus the encapsulation),
  tx-checksum (off on guest ends on netdev bridges), forwarding-ipv4 and
  forwarding-ipv6 (on where a guest's gateway or next hop is an address of
  its bridge), docker (a failure only with Docker guests recorded)

examples:
  netplumb doctor
  netplumb doctor --config /etc/netplumb/netplumbd.toml
  ip netns exec h1 netplumb doctor --config /srv/h1/netplumbd.toml
  netplumb doctor --json | jq '.checks[] | select(.status == "fail")'

exit status: 0 when no check fails, 7 when one does (2 for a bad command line)
"""


class UsageError(Exception):
    pass


class _ParserExit(Exception):
    """argparse is done (--help); main() returns ``status``."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


_width: dict[str | None, int] = {}


def _help_width() -> int:
    """What argparse's formatter asks shutil for ($COLUMNS, else the
    terminal's, minus 2), once per value of $COLUMNS: it asks for every
    argument added, and importing shutil costs milliseconds."""
    env = os.environ.get("COLUMNS")
    if env not in _width:
        try:
            columns = int(env or "")
        except ValueError:
            columns = 0
        if columns <= 0:
            try:
                columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
            except (AttributeError, ValueError, OSError):
                columns = 0
        _width[env] = (columns or 80) - 2
    return _width[env]


class _Help(argparse.HelpFormatter):
    def __init__(
        self,
        prog: str,
        indent_increment: int = 2,
        max_help_position: int = 24,
        width: int | None = None,
    ) -> None:
        super().__init__(prog, indent_increment, max_help_position, width or _help_width())


class _RawHelp(argparse.RawDescriptionHelpFormatter, _Help):
    pass


class _Parser(argparse.ArgumentParser):
    """Writes help to the streams main() was given (argparse would use
    sys.stdout) and never calls sys.exit."""

    def __init__(self, *args: Any, out: IO[str] | None = None, **kw: Any) -> None:
        kw.setdefault("formatter_class", _Help)
        super().__init__(*args, **kw)
        self.out = out

    def print_help(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_help(file if file is not None else self.out)

    def print_usage(self, file: SupportsWrite[str] | None = None) -> None:
        super().print_usage(file if file is not None else self.out)

    def error(self, message: str) -> NoReturn:  # argparse would sys.exit(2)
        raise UsageError(f"{self.prog}: {message}\n(try '{self.prog} --help')")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:  # argparse only passes one from error(), overridden above
            raise UsageError(message.rstrip())
        raise _ParserExit(status)


def _common(json_default: Any = argparse.SUPPRESS) -> argparse.ArgumentParser:
    p = _Parser(add_help=False)
    p.add_argument("--socket", metavar="PATH", default=argparse.SUPPRESS, help="daemon socket")
    p.add_argument(
        "--connect",
        metavar="ADDRESS:PORT",
        default=argparse.SUPPRESS,
        help="reach netplumbd over TCP (TLS with the --tls-* files)",
    )
    p.add_argument(
        "--tls-cert", metavar="FILE", default=argparse.SUPPRESS, help="client certificate (PEM)"
    )
    p.add_argument(
        "--tls-key", metavar="FILE", default=argparse.SUPPRESS, help="its private key (PEM)"
    )
    p.add_argument(
        "--tls-ca",
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="CA that signed the daemon's certificate (PEM)",
    )
    p.add_argument(
        "--insecure-tcp",
        action="store_true",
        default=argparse.SUPPRESS,
        help="--connect in plaintext, to a daemon run with --insecure-tcp",
    )
    p.add_argument(
        "--json", action="store_true", default=json_default, help="print one JSON document"
    )
    p.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        default=argparse.SUPPRESS,
        help="call timeout (default 30)",
    )
    return p


def build_parser(out: IO[str] | None = None, only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; --help at any level prints to ``out`` (default
    sys.stdout). With ``only`` (a command name) the other commands are left
    out: building every subcommand's parser costs more than a short
    command's whole round trip to the daemon."""

    def want(name: str) -> bool:
        return only is None or only == name

    common = _common()
    p = _Parser(
        out=out,
        prog="netplumb",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_RawHelp,
        parents=[_common(json_default=False)],
    )
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def cmd(parent: Any, name: str, help_: str, **kw: Any) -> argparse.ArgumentParser:
        return parent.add_parser(  # type: ignore[no-any-return]
            name, help=help_, description=help_, parents=[common], out=out, **kw
        )

    if want("bridge"):
        bridge = cmd(sub, "bridge", "create, delete and list bridges")
        bsub = bridge.add_subparsers(dest="bridge_command", metavar="ACTION", parser_class=_Parser)
        bsub.required = True
        badd = cmd(
            bsub,
            "add",
            "create a bridge, or adopt an existing Linux bridge of that name (never deleted by netplumb)",
            epilog="example: netplumb bridge add bri0 --address 198.18.0.1/24 --address 2001:db8::1/64",
        )
        badd.add_argument("name", metavar="NAME", help="bridge name (at most 15 bytes)")
        badd.add_argument("--kind", choices=["linux", "ovs"], default="linux", help="default linux")
        badd.add_argument(
            "--address",
            action="append",
            default=[],
            metavar="CIDR",
            help="address on the bridge (repeatable)",
        )
        badd.add_argument("--mtu", type=_u32, default=0, metavar="N", help="bridge MTU (68..65535)")
        badd.add_argument(
            "--vni", type=_u32, default=0, metavar="N", help="overlay VNI (joins peers' bridges)"
        )
        badd.add_argument(
            "--tunnel", choices=["vxlan", "geneve", "gre"], default="", help="overlay encapsulation"
        )
        bdel = cmd(bsub, "del", "delete a bridge netplumb created, or forget an adopted one")
        bdel.add_argument("name", metavar="NAME")
        cmd(bsub, "ls", "list bridges")

    if want("attach"):
        att = cmd(
            sub,
            "attach",
            "attach a guest to a bridge with a veth pair (or: a macvlan on a host interface, "
            "the host interface itself, a dummy interface)",
            epilog="""examples:
  netplumb attach bri0 netns:blue 198.18.0.10/24@198.18.0.1 --route 198.19.0.0/16@198.18.0.254
  netplumb attach bri0 web --dhcp udhcpc --dhcp-keep        # DHCP, lease renewed
  netplumb attach --kind macvlan eth2 web 198.18.0.5/24     # a macvlan on eth2
  netplumb attach --kind phys eth3 web 198.18.0.6/24        # eth3 itself moves into web
  netplumb attach --kind phys mac:52:54:00:12:34:56 web 0/0 # the interface with that MAC""",
            formatter_class=_RawHelp,
        )
        att.add_argument(
            "bridge",
            metavar="BRIDGE|HOSTIF",
            help="the bridge; with --kind macvlan or phys the host interface (or mac:MAC); "
            "with --kind dummy '-'",
        )
        att.add_argument(
            "guest", metavar="GUEST", help="netns:NAME, NAME, pid:PID or a namespace path"
        )
        att.add_argument(
            "addresses",
            nargs="*",
            metavar="ADDRESS[@GATEWAY]",
            help="CIDR, optionally with the default gateway of its family after '@'",
        )
        att.add_argument(
            "--ifname", default="", metavar="IF", help="interface name in the guest (default eth1)"
        )
        att.add_argument(
            "--host-ifname",
            default="",
            metavar="IF",
            help="host-side veth name (default np + hash)",
        )
        att.add_argument(
            "--mac", default="", metavar="MAC", help="guest MAC (default stable, derived)"
        )
        att.add_argument(
            "--mtu", type=_u32, default=0, metavar="N", help="MTU (default the bridge's)"
        )
        att.add_argument(
            "--vlan", type=_u32, default=0, metavar="ID", help="access VLAN of the port (1..4094)"
        )
        att.add_argument(
            "--route",
            action="append",
            default=[],
            metavar="DEST[@VIA]",
            help="extra route in the guest (repeatable)",
        )
        att.add_argument(
            "--kind",
            choices=["veth", "macvlan", "phys", "dummy"],
            default="veth",
            help="what the guest's interface is (default veth)",
        )
        att.add_argument(
            "--name",
            default="",
            metavar="NAME",
            help="cluster networks: publish the endpoint under NAME (containers: their name)",
        )
        att.add_argument(
            "--dhcp",
            default="",
            metavar="CLIENT",
            help="get the IPv4 address by DHCP: udhcpc, dhclient, dhcpcd, or dhcp (any installed)",
        )
        att.add_argument(
            "--dhcp-keep", action="store_true", help="keep the client running to renew the lease"
        )
        att.add_argument(
            "--dhcp-option",
            action="append",
            default=[],
            metavar="ARG",
            help="extra argument for the DHCP client (repeatable)",
        )

    if want("detach"):
        det = cmd(sub, "detach", "remove a guest's endpoints (all of them without --ifname)")
        det.add_argument("guest", metavar="GUEST")
        det.add_argument("--ifname", default="", metavar="IF")

    if want("ls"):
        cmd(sub, "ls", "list endpoints")

    for tool, example in (
        ("rule", "netplumb rule web add from 198.18.0.0/24 table 100 priority 100"),
        (
            "tc",
            "netplumb tc web qdisc add dev eth1 root tbf rate 10mbit burst 32kbit latency 400ms",
        ),
    ):
        if not want(tool):
            continue
        t = cmd(
            sub,
            tool,
            f"run an 'ip {tool}' command inside an attached guest and record it"
            if tool == "rule"
            else "run a tc command inside an attached guest and record it",
            epilog=f"example: {example}\n(recorded with the guest's endpoint and applied again "
            "whenever its interface is re-created; 'del' forgets)",
            formatter_class=_RawHelp,
        )
        t.add_argument("--ifname", default="", metavar="IF", help="endpoint to record it with")
        t.add_argument("guest", metavar="GUEST")
        t.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS")

    if want("route"):
        route = cmd(sub, "route", "add or remove routes inside an attached guest")
        rsub = route.add_subparsers(dest="route_command", metavar="ACTION", parser_class=_Parser)
        rsub.required = True
        radd = cmd(rsub, "add", "add a route (recorded, restored after restarts)")
        radd.add_argument("guest", metavar="GUEST")
        radd.add_argument("destination", metavar="DEST", help="CIDR or 'default'")
        radd.add_argument("--via", default="", metavar="GW", help="next hop (default on-link)")
        radd.add_argument("--metric", type=_u32, default=0, metavar="N")
        radd.add_argument(
            "--ifname", default="", metavar="IF", help="needed when the guest has several endpoints"
        )
        rdel = cmd(rsub, "del", "remove a route")
        rdel.add_argument("guest", metavar="GUEST")
        rdel.add_argument("destination", metavar="DEST")
        rdel.add_argument("--ifname", default="", metavar="IF")

    if want("peer"):
        peer = cmd(
            sub, "peer", "add, remove and list peer hosts (overlay tunnels go to every peer)"
        )
        psub = peer.add_subparsers(dest="peer_command", metavar="ACTION", parser_class=_Parser)
        psub.required = True
        padd = cmd(
            psub,
            "add",
            "add a peer host: every overlay bridge gets a tunnel to it",
            epilog="example: netplumb peer add 198.18.0.12 --name h2",
        )
        padd.add_argument(
            "address",
            metavar="ADDRESS",
            nargs="+",
            help="the peer's underlay address (several: one call)",
        )
        padd.add_argument("--name", default="", metavar="NAME", help="a name for the peer")
        pdel = cmd(psub, "del", "remove a peer and its tunnels")
        pdel.add_argument("peer", metavar="ADDRESS|NAME")
        cmd(psub, "ls", "list peers and the state of each tunnel")

    if want("network"):
        network = cmd(
            sub,
            "network",
            "cluster mode: define, delete and list networks (every host builds the same bridge)",
        )
        nsub = network.add_subparsers(
            dest="network_command", metavar="ACTION", parser_class=_Parser
        )
        nsub.required = True
        ncreate = cmd(
            nsub,
            "create",
            "define a network for the whole cluster: a bridge of that name on every host, joined by "
            "an overlay; attaches to it get addresses from SUBNET and the names resolve everywhere",
            epilog="example: netplumb network create web --subnet 198.19.10.0/24 --vni 10\n"
            "         netplumb attach web mycontainer       # an address from the subnet, by name",
            formatter_class=_RawHelp,
        )
        ncreate.add_argument("name", metavar="NAME", help="network (and bridge, and DNS zone) name")
        ncreate.add_argument(
            "--subnet", required=True, metavar="CIDR", help="addresses come from it"
        )
        ncreate.add_argument("--vni", required=True, type=_u32, metavar="N", help="overlay VNI")
        ncreate.add_argument(
            "--kind", choices=["linux", "ovs"], default="linux", help="default linux"
        )
        ncreate.add_argument(
            "--tunnel", choices=["vxlan", "geneve", "gre"], default="", help="default vxlan"
        )
        ncreate.add_argument(
            "--gateway", default="", metavar="IP", help="default the subnet's first address"
        )
        ncreate.add_argument(
            "--dns-address",
            default="",
            metavar="IP",
            help="where guests ask DNS (default the gateway)",
        )
        ndel = cmd(nsub, "del", "delete a network (refused while endpoints use it anywhere)")
        ndel.add_argument("name", metavar="NAME")
        cmd(nsub, "ls", "list the cluster's networks")

    if want("doctor"):
        about = "check this host's set-up for netplumb, with or without a running daemon"
        # Its own options: doctor looks at this host, never through --connect.
        doc = sub.add_parser(
            "doctor",
            help=about,
            description=about,
            epilog=DOCTOR_EPILOG,
            formatter_class=_RawHelp,
            out=out,
        )
        doc.add_argument(
            "--config",
            metavar="FILE",
            default=None,
            help="netplumbd's configuration (default /etc/netplumb/netplumbd.toml if present)",
        )
        doc.add_argument(
            "--socket",
            metavar="PATH",
            default=argparse.SUPPRESS,
            help="the daemon's socket (default: the configuration's, else $NETPLUMB_SOCKET, "
            "else /run/netplumb/netplumbd.sock)",
        )
        doc.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
        )
        doc.add_argument(
            "--timeout",
            type=_seconds,
            metavar="SECONDS",
            default=argparse.SUPPRESS,
            help="how long to wait for the daemon and each dependency (default 3)",
        )
    if want("status"):
        cmd(sub, "status", "show the daemon's status")
    if want("check"):
        cmd(sub, "check", "report drift between the records and the host (exit 6 if any)")
    if want("reconcile"):
        cmd(sub, "reconcile", "repair drift now, as the daemon does at start")
    return p


def _is_text(arg: str) -> bool:
    """False for an argument that is not UTF-8 (Python hands such bytes over
    as lone surrogates) or holds a NUL."""
    try:
        arg.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return "\0" not in arg


def _u32(text: str) -> int:
    """An unsigned 32-bit number (the daemon checks each field's own range)."""
    if not text.isascii() or not text.isdigit() or int(text) > 0xFFFFFFFF:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to 4294967295")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 < S <= 86400)")
    return value


def _split(value: str, what: str) -> tuple[str, str]:
    head, sep, tail = value.rpartition("@")
    if not sep:
        return value, ""
    if not head or not tail:
        raise UsageError(f"netplumb: {what} {value!r}: expected X@Y")
    return head, tail


# --------------------------------------------------------------- commands


def _attach(c: Any, a: argparse.Namespace) -> Any:
    addresses: list[str] = []
    gateways: list[str] = []
    for item in a.addresses:
        addr, gw = _split(item, "address")
        if addr == "0/0":  # pipework's "no address"
            continue
        addresses.append(addr)
        if gw and gw not in gateways:
            gateways.append(gw)
    routes = [_split(r, "route") for r in a.route]
    if (a.dhcp_keep or a.dhcp_option) and not a.dhcp:
        raise UsageError("netplumb: --dhcp-keep and --dhcp-option go with --dhcp CLIENT")
    bridge, parent = a.bridge, ""
    if a.kind in ("macvlan", "phys"):
        bridge, parent = "", a.bridge
    elif a.kind == "dummy":
        if a.bridge != "-":
            raise UsageError("netplumb: a dummy interface has no bridge: give '-' in its place")
        bridge = ""
    return c.attach(
        bridge,
        a.guest,
        kind=a.kind if a.kind != "veth" else "",
        parent=parent,
        dhcp=a.dhcp,
        dhcp_options=a.dhcp_option,
        dhcp_keep=a.dhcp_keep,
        name=a.name,
        addresses=addresses,
        gateways=gateways,
        ifname=a.ifname,
        host_ifname=a.host_ifname,
        mac=a.mac,
        mtu=a.mtu,
        vlan=a.vlan,
        routes=routes,
    )


def _dispatch(c: Any, a: argparse.Namespace) -> tuple[Any, str]:
    """Returns (reply, kind) where kind names the renderer."""
    if a.command == "bridge":
        if a.bridge_command == "add":
            b = c.create_bridge(a.name, a.kind, a.address, a.mtu, a.vni, a.tunnel)
            return b, "bridge"
        if a.bridge_command == "del":
            return c.delete_bridge(a.name), "bridge-del"
        return c.list_bridges(), "bridges"
    if a.command == "attach":
        return _attach(c, a), "endpoint"
    if a.command == "detach":
        return c.detach(a.guest, a.ifname), "detached"
    if a.command == "ls":
        return c.list_endpoints(), "endpoints"
    if a.command in ("rule", "tc"):
        if not a.args:
            raise UsageError(f"netplumb {a.command}: give the {a.command} arguments")
        return c.guest_command(a.guest, a.command, a.args, a.ifname), "endpoint"
    if a.command == "route":
        if a.route_command == "add":
            return c.add_route(a.guest, a.destination, a.via, a.ifname, a.metric), "endpoint"
        return c.delete_route(a.guest, a.destination, a.ifname), "endpoint"
    if a.command == "peer":
        if a.peer_command == "add":
            if len(a.address) == 1:
                return c.add_peer(a.address[0], a.name), "peer"
            if a.name:
                raise UsageError("netplumb: --name goes with a single address")
            return c.add_peers([(addr, "") for addr in a.address]), "peers"
        if a.peer_command == "del":
            return c.remove_peer(a.peer), "peer-del"
        return c.list_peers(), "peers"
    if a.command == "network":
        if a.network_command == "create":
            n = c.create_network(
                a.name, a.subnet, a.vni, a.kind, a.tunnel, a.gateway, a.dns_address
            )
            return n, "network"
        if a.network_command == "del":
            return c.delete_network(a.name), "network-del"
        return c.list_networks(), "networks"
    if a.command == "status":
        return c.status(), "status"
    if a.command == "check":
        return c.check(), "check"
    if a.command == "reconcile":
        return c.reconcile(), "reconcile"
    raise UsageError(f"netplumb: unknown command {a.command!r}")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


COMMANDS = frozenset(
    {
        "bridge",
        "attach",
        "detach",
        "ls",
        "rule",
        "tc",
        "route",
        "peer",
        "network",
        "doctor",
        "status",
        "check",
        "reconcile",
    }
)
_GLOBAL_VALUED = frozenset(
    {"--socket", "--connect", "--tls-cert", "--tls-key", "--tls-ca", "--timeout"}
)
_GLOBAL_FLAGS = frozenset({"--json", "--insecure-tcp"})


def command_in(argv: Sequence[str]) -> str | None:
    """The command ``argv`` runs, found as argparse will find it, or None
    when that is not certain (help, an abbreviated or unknown option, no
    command): then the whole parser is built and judges."""
    i = 0
    while i < len(argv):
        a = argv[i]
        if not a.startswith("-"):
            return a if a in COMMANDS else None
        name, eq, _ = a.partition("=")
        if name in _GLOBAL_VALUED:
            i += 1 if eq else 2
        elif name in _GLOBAL_FLAGS and not eq:
            i += 1
        else:
            return None
    return None


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    client_factory: Callable[..., Any] | None = None,
) -> int:
    env = os.environ if env is None else env
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(out, only=command_in(argv))
    try:
        for a in argv:
            if not _is_text(a):
                raise UsageError(f"netplumb: argument {a!r} is not valid UTF-8 text")
        args = parser.parse_args(argv)
    except UsageError as e:
        print(str(e), file=err)
        return Exit.USAGE
    except _ParserExit as e:  # --help, printed to out
        return e.status
    json_mode = bool(getattr(args, "json", False))
    if args.command == "doctor":
        return _doctor(args, env, out, err, json_mode)
    # protobuf is imported only from here on; grpcio only for --connect: on
    # the unix socket the command talks through the light wire transport
    # (see wire.py).
    try:
        from . import render
        from .client import Client, NetplumbError, target
    except Exception as e:  # a broken installation: say so, not a NameError below
        print(f"netplumb: internal error: cannot load the client: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    try:
        timeout = getattr(args, "timeout", 30.0)
        try:
            where = target(
                getattr(args, "socket", None),
                getattr(args, "connect", None),
                getattr(args, "tls_cert", None),
                getattr(args, "tls_key", None),
                getattr(args, "tls_ca", None),
                getattr(args, "insecure_tcp", False),
                env,
            )
            if where.address:
                tcp: dict[str, Any] = {
                    "connect": where.address,
                    "tls_cert": where.tls_cert,
                    "tls_key": where.tls_key,
                    "tls_ca": where.tls_ca,
                    "insecure_tcp": where.insecure_tcp,
                }
                client = (client_factory or Client)(None, timeout=timeout, **tcp)
            elif client_factory is not None:
                client = client_factory(where.socket, timeout=timeout)
            else:
                client = Client(where.socket, timeout=timeout, transport="wire")
        except ValueError as e:  # nothing was sent: a usage error
            raise UsageError(f"netplumb: {e}") from None
        try:
            reply, kind = _dispatch(client, args)
        finally:
            client.close()
    except UsageError as e:
        print(str(e), file=err)
        return Exit.USAGE
    except NetplumbError as e:
        from .status import exit_for

        status = exit_for(e.code)
        try:
            render.error(e, json_mode, out, err)
        except Exception:
            print(f"netplumb: error: {_one_line(e)}", file=err)
        return status
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(f"netplumb: internal error: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    # Rendered whole before anything is written: a reply the renderer
    # chokes on prints nothing on stdout, one line on stderr, and exits 1.
    try:
        buf = io.StringIO()
        render.reply(kind, reply, json_mode, buf)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(f"netplumb: internal error: cannot print the reply: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    try:
        out.write(buf.getvalue())
    except OSError as e:  # e.g. a pipe whose reader went away
        print(f"netplumb: cannot write the output: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    if kind == "check" and reply:
        return Exit.DRIFT
    return Exit.OK


def _doctor(
    args: argparse.Namespace, env: Mapping[str, str], out: IO[str], err: IO[str], json_mode: bool
) -> int:
    """Checks this host locally, in-process (the daemon may be down): the
    agent's doctor module, imported only here."""
    if getattr(args, "connect", None):
        print(
            "netplumb doctor: checks the host it runs on: run it there (as root), "
            "not through --connect",
            file=err,
        )
        return Exit.USAGE
    try:
        from netplumb.agent import doctor

        timeout = getattr(args, "timeout", doctor.WAIT)
        checks = doctor.diagnose(args.config, getattr(args, "socket", None), _ask, env, timeout)
        if json_mode:
            import json

            text = json.dumps(doctor.as_dict(checks), indent=2, sort_keys=True) + "\n"
        else:
            text = doctor.as_text(checks)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        print(f"netplumb doctor: internal error: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    try:
        out.write(text)
    except OSError as e:
        print(f"netplumb: cannot write the output: {_one_line(e)}", file=err)
        return Exit.INTERNAL
    return Exit.UNHEALTHY if doctor.failed(checks) else Exit.OK


def _ask(socket: str, timeout: float) -> Any:
    """The daemon's view for doctor: Status and ListPeers over the socket."""
    from netplumb.agent.doctor import DaemonView, TunnelState

    from .client import Client

    with Client(socket, timeout=timeout, transport="wire") as c:
        st = c.status()
        peers = c.list_peers()
    return DaemonView(
        version=st.version,
        state_dir=st.state_dir,
        uptime_seconds=st.uptime_seconds,
        tunnels=tuple(
            TunnelState(p.address, t.bridge, t.port, t.state) for p in peers for t in p.tunnels
        ),
    )


def _flush(status: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # stdout closed or its reader gone: the output is lost
            if stream is sys.stdout and status == Exit.OK:
                status = Exit.INTERNAL
    return status


def run() -> None:
    """Console-script entry point.

    Leaves with os._exit once stdout and stderr are flushed: the normal
    interpreter teardown (grpc's atexit hooks and threads) has nothing left
    to do (main() closed the channel) and would add tens of milliseconds to
    every command.
    """
    try:
        status = int(main())
    except KeyboardInterrupt:
        status = 130
    os._exit(_flush(status))
