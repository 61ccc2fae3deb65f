"""pipework, the drop-in: pipework's command line, done through netplumbd.

Existing scripts keep working, and get what pipework could not give them:
the interface survives container restarts, the same command run twice is a
no-op, a failure leaves nothing half-made, and `netplumb detach` undoes it.

Grammar (pipework's, with its options accepted in any order):

    pipework [--direct-phys] HOSTIF [-i IF] [-l IF] [-a 4|6] GUEST ADDR[@GW] [MAC][@VLAN]
    pipework route|rule|tc GUEST ARGS...
    pipework --wait [-i IF] [--timeout S]
    pipework --help

``parse`` is pure (argument list in, a request out); ``main`` sends it.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from .exits import Exit

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import IO

USAGE = """\
Usage:
  pipework [--direct-phys] HOSTIF [-i IF] [-l IF] [-a 4|6] GUEST ADDR/PLEN[@GW] [MAC][@VLAN]
  pipework [--direct-phys] HOSTIF [-i IF] [-l IF] GUEST dhcp[:OPTIONS] [MAC][@VLAN]
  pipework mac:HOSTMAC ...               (the host interface with that MAC)
  pipework route GUEST IP-ROUTE-ARGS...
  pipework rule GUEST IP-RULE-ARGS...
  pipework tc GUEST TC-ARGS...
  pipework --wait [-i IF] [--timeout SECONDS]
  pipework --help
"""

HELP = (
    USAGE
    + """
pipework, done by netplumbd: the guest (a Docker container by name or id, a
named network namespace, pid:PID, or a namespace path) gets a veth pair whose
host end joins HOSTIF:
  an existing Linux bridge or OVS bridge      the host end becomes its port
  a missing name starting with br / ovs       that Linux / OVS bridge is created

ADDR/PLEN[@GW]  an address (IPv4 or IPv6, the family is inferred; -a is
                accepted for compatibility), optionally with the default
                gateway. 0/0 gives no address.
MAC             the guest interface's MAC; U:STRING derives it from STRING as
                pipework did (02: + md5(STRING + newline)), so it stays stable.
@VLAN           the port's access VLAN (OVS tag; Linux bridges need VLAN
                filtering in the kernel).
-i IF           the interface name in the guest (default eth1)
-l IF           the host-side veth name (default np + hash)

Unlike pipework, the result is recorded: netplumbd re-plumbs a container that
restarts (same address and MAC), repeating a command changes nothing, and
`netplumb detach GUEST` removes it. Routes given with `pipework route` are
recorded too. `pipework --wait` inside a guest waits until the interface
exists, is up and has an address (and has a --timeout).

The daemon's socket: $NETPLUMB_SOCKET, else /run/netplumb/netplumbd.sock.
Exit status as netplumb's: 0 ok, 1 internal, 2 usage, 3 not found,
4 invalid or conflict, 5 daemon unavailable.
"""
)

DHCP_CLIENTS = ("dhcp", "udhcpc", "udhcpc-f", "dhclient", "dhclient-f", "dhcpcd")


class UsageError(Exception):
    pass


@dataclass(frozen=True)
class Attach:
    hostif: str
    guest: str
    ifname: str = "eth1"
    host_ifname: str = ""
    addresses: tuple[str, ...] = ()
    gateways: tuple[str, ...] = ()
    mac: str = ""
    vlan: int = 0
    dhcp: str = ""  # client name, "" for static
    dhcp_options: str = ""
    direct_phys: bool = False


@dataclass(frozen=True)
class Sub:
    command: str  # route, rule or tc
    guest: str
    args: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Wait:
    ifname: str = "eth1"
    timeout: float = 0.0  # 0: wait forever, as pipework did


Request = Attach | Sub | Wait


def parse(argv: Sequence[str]) -> Request | None:
    """pipework's arguments as a request; None for --help. Raises UsageError."""
    args = list(argv)
    for a in args:
        try:
            a.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(f"argument {a!r} is not valid UTF-8 text") from None
        if "\0" in a:
            raise UsageError(f"argument {a!r} holds a NUL byte")
    if not args or args[0] in ("--help", "-h", "help"):
        if not args:
            raise UsageError("missing arguments")
        return None
    if args[0] == "--wait":
        return _parse_wait(args[1:])
    direct = False
    if args[0] == "--direct-phys":
        direct = True
        args = args[1:]
        if not args:
            raise UsageError("--direct-phys needs a host interface")
    hostif = args[0]
    if hostif in ("route", "rule", "tc"):
        if len(args) < 3:
            raise UsageError(f"pipework {hostif} needs a guest and {hostif} arguments")
        return Sub(hostif, args[1], tuple(args[2:]))
    opts: dict[str, str] = {}
    positional: list[str] = []
    rest = args[1:]
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok in ("-i", "-l", "-a"):
            if i + 1 >= len(rest):
                raise UsageError(f"{tok} needs a value")
            opts[tok] = rest[i + 1]
            i += 2
            continue
        positional.append(tok)
        i += 1
    if len(positional) < 2:
        raise UsageError("missing the guest or the address")
    if len(positional) > 3:
        raise UsageError(f"unexpected argument {positional[3]!r}")
    guest, ipaddr = positional[0], positional[1]
    macvlan = positional[2] if len(positional) == 3 else ""
    if opts.get("-a", "4") not in ("4", "6"):
        raise UsageError("-a takes 4 or 6")
    if not hostif:
        raise UsageError("empty host interface")
    mac, vlan = _mac_vlan(macvlan)
    attach = Attach(
        hostif=hostif,
        guest=guest,
        ifname=opts.get("-i", "eth1"),
        host_ifname=opts.get("-l", ""),
        mac=mac,
        vlan=vlan,
        direct_phys=direct,
    )
    client, _, dhcp_opts = ipaddr.partition(":")
    if client in DHCP_CLIENTS:
        return _replace(attach, dhcp=client, dhcp_options=dhcp_opts)
    if ipaddr == "0/0":
        return attach
    address, _, gateway = ipaddr.partition("@")
    if "/" not in address:
        raise UsageError(f"the IP address should include a netmask. Maybe you meant {address}/24?")
    if "@" in ipaddr and not gateway:
        raise UsageError(f"{ipaddr!r}: the gateway after '@' is empty")
    return _replace(attach, addresses=(address,), gateways=(gateway,) if gateway else ())


def _replace(a: Attach, **kw: object) -> Attach:
    from dataclasses import replace

    return replace(a, **kw)  # type: ignore[arg-type]


def _mac_vlan(value: str) -> tuple[str, int]:
    if not value:
        return "", 0
    mac, sep, vlan_s = value.partition("@")
    vlan = 0
    if sep:
        if not (vlan_s.isascii() and vlan_s.isdigit()) or len(vlan_s) > 5:
            raise UsageError(f"{value!r}: the VLAN after '@' must be a number")
        vlan = int(vlan_s)
        if not 1 <= vlan <= 4094:
            raise UsageError(f"VLAN {vlan} is out of range 1..4094")
    if mac.startswith("U:"):
        mac = pipework_mac(mac[2:])
    return mac, vlan


def pipework_mac(seed: str) -> str:
    """pipework's ``U:STRING`` MAC: "02:" then the first 40 bits of
    md5(STRING + newline), as ``echo STRING | md5sum`` gives."""
    from hashlib import md5

    digest = md5(f"{seed}\n".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x02, *digest[:5]))


def _parse_wait(args: list[str]) -> Wait:
    ifname, timeout = "eth1", 0.0
    i = 0
    while i < len(args):
        if args[i] == "-i" and i + 1 < len(args):
            ifname = args[i + 1]
        elif args[i] == "--timeout" and i + 1 < len(args):
            try:
                timeout = float(args[i + 1])
            except ValueError:
                raise UsageError("--timeout takes a number of seconds") from None
            if not 0 <= timeout <= 86400:  # also refuses nan and inf
                raise UsageError("--timeout takes a number of seconds (0 to 86400)")
        else:
            raise UsageError(f"--wait: unexpected argument {args[i]!r}")
        i += 2
    return Wait(ifname, timeout)


# ----------------------------------------------------------------- --wait


def wait_for(ifname: str, timeout: float, sysfs: str = "/sys/class/net") -> bool:
    """Inside a guest: until ``ifname`` exists, is up and has an address
    (pipework only waited for it to exist: #243)."""
    deadline = time.monotonic() + timeout if timeout else None
    while True:
        if _ready(ifname, sysfs):
            return True
        if deadline is not None and time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _ready(ifname: str, sysfs: str) -> bool:
    try:
        with open(f"{sysfs}/{ifname}/flags") as f:
            flags = int(f.read().strip(), 16)
    except (OSError, ValueError):
        return False
    if not flags & 0x1:  # IFF_UP
        return False
    return _has_ipv4(ifname) or _has_ipv6(ifname)


def _has_ipv4(ifname: str) -> bool:
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            fcntl.ioctl(
                s.fileno(), 0x8915, struct.pack("256s", ifname.encode()[:15])
            )  # SIOCGIFADDR
            return True
        except OSError:
            return False


def _has_ipv6(ifname: str) -> bool:
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                # scope 0x20 is link-local, which the kernel adds by itself
                if len(parts) == 6 and parts[5] == ifname and parts[3] != "20":
                    return True
    except OSError:
        pass
    return False


# ------------------------------------------------------------------- main


def main(
    argv: Sequence[str] | None = None,
    env: Mapping[str, str] | None = None,
    stdout: IO[str] | None = None,
    stderr: IO[str] | None = None,
    client_factory: object = None,
) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    env = os.environ if env is None else env
    try:
        req = parse(list(sys.argv[1:] if argv is None else argv))
    except UsageError as e:
        print(f"pipework: {e}", file=err)
        print(USAGE, file=err, end="")
        return Exit.USAGE
    if req is None:
        print(HELP, file=out, end="")
        return Exit.OK
    if isinstance(req, Wait):
        if wait_for(req.ifname, req.timeout):
            return Exit.OK
        print(f"pipework: {req.ifname} is not up with an address after {req.timeout:g} s", file=err)
        return Exit.UNAVAILABLE
    try:
        from .client import Client, NetplumbError, socket_path

        path = socket_path(None, env)
        factory = client_factory or (lambda p: Client(p, transport="wire"))
        client = factory(path)  # type: ignore[operator]
        try:
            text = _run(client, req)
        finally:
            client.close()
    except UsageError as e:
        print(f"pipework: {e}", file=err)
        return Exit.USAGE
    except NetplumbError as e:
        from .status import exit_for

        print(f"pipework: {e.message}", file=err)
        if e.hint:
            print(f"  hint: {e.hint}", file=err)
        return exit_for(e.code)
    except Exception as e:
        print(f"pipework: internal error: {type(e).__name__}: {e}", file=err)
        return Exit.INTERNAL
    if text:
        print(text, file=out)
    return Exit.OK


def _run(client: object, req: Attach | Sub) -> str:
    c: object = client
    if isinstance(req, Sub):
        return _sub(c, req)
    from .client import NetplumbError
    from .codes import Code

    known = {b.spec.name for b in c.list_bridges()}  # type: ignore[attr-defined]
    kind, parent, bridge = _host_mode(req, known)
    client, options, keep = _dhcp(req)
    for attempt in range(3):
        made = False
        if kind == "veth" and (attempt or bridge not in known):
            # A bridge netplumb already knows is used as it is (it may carry
            # addresses, an MTU or a VNI that an empty request would contradict).
            made = c.create_bridge(bridge, _host_kind(bridge)).created  # type: ignore[attr-defined]
        try:
            _attach(c, req, kind, parent, bridge, client, options, keep)
            return ""
        except Exception as e:
            if made:  # nothing half-made: the bridge this very call created goes too
                try:
                    c.delete_bridge(bridge)  # type: ignore[attr-defined]
                except Exception:  # the attach's error is the one to report
                    pass
            # Another pipework run that made the same new bridge at the same
            # moment failed and took it away again: make it once more.
            gone = (
                isinstance(e, NetplumbError)
                and e.code == Code.NOT_FOUND
                and e.field == "spec.bridge"
            )
            if not (gone and kind == "veth" and attempt < 2):
                raise
    return ""


def _attach(
    c: object,
    req: Attach,
    kind: str,
    parent: str,
    bridge: str,
    client: str,
    options: list[str],
    keep: bool,
) -> None:
    c.attach(  # type: ignore[attr-defined]
        bridge,
        req.guest,
        addresses=req.addresses,
        gateways=req.gateways,
        ifname=req.ifname,
        host_ifname=req.host_ifname if kind == "veth" else "",
        mac=req.mac,
        vlan=req.vlan,
        kind=kind,
        parent=parent,
        dhcp=client,
        dhcp_options=options,
        dhcp_keep=keep,
    )


def _host_mode(req: Attach, known: set[str], sysfs: str = "/sys/class/net") -> tuple[str, str, str]:
    """(endpoint kind, parent, bridge) for pipework's host interface, decided
    as pipework did: a bridge (Linux, OVS, or a missing br*/ovs* name) gets a
    veth; a missing dummy* name a dummy; mac:MAC and any other existing
    interface a macvlan on it, or itself with --direct-phys."""
    hostif = req.hostif
    if hostif.startswith("mac:"):
        return ("phys" if req.direct_phys else "macvlan"), hostif, ""
    exists = os.path.exists(f"{sysfs}/{hostif}")
    if not exists:
        if hostif.startswith("dummy"):
            return "dummy", "", ""
        return "veth", "", hostif  # br*/ovs* are created; others: _host_kind says why not
    if os.path.isdir(f"{sysfs}/{hostif}/bridge"):
        return "veth", "", hostif
    if hostif in known or _is_ovs_bridge(hostif, sysfs):
        return "veth", "", hostif
    if _read(f"{sysfs}/{hostif}/type") == "32":
        raise _unimplemented(
            f"{hostif} is an InfiniBand (IPoIB) interface, which netplumb does not attach",
            "use an Ethernet interface or a bridge",
        )
    return ("phys" if req.direct_phys else "macvlan"), hostif, ""


def _is_ovs_bridge(name: str, sysfs: str) -> bool:
    """An OVS bridge's local port is an "openvswitch" device (a "tun" one with
    the userspace datapath); the daemon then adopts it from OVSDB, or says
    it is no bridge."""
    return _driver(name) == "openvswitch" or _read(f"{sysfs}/{name}/tun_flags") != ""


def _driver(name: str) -> str:
    """The interface's driver name, as `ethtool -i` shows it ("" if unknown)."""
    import array
    import fcntl
    import socket
    import struct

    info = array.array("B", struct.pack("I", 0x3) + bytes(192))  # ETHTOOL_GDRVINFO
    addr, _ = info.buffer_info()
    req = struct.pack("16sP", name.encode()[:15], addr)
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sk:
            fcntl.ioctl(sk.fileno(), 0x8946, req)  # SIOCETHTOOL
    except OSError:
        return ""
    return bytes(info[4:36]).split(b"\0", 1)[0].decode(errors="replace")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def _dhcp(req: Attach) -> tuple[str, list[str], bool]:
    """(client, options, keep) of pipework's DHCP forms: ``udhcpc-f`` and
    ``dhclient-f`` keep the client (renewing); so does ``-f`` among the
    options, as with pipework's ``dhcp:-f``."""
    if not req.dhcp:
        return "", [], False
    client, keep = req.dhcp, False
    if client.endswith("-f"):
        client, keep = client[:-2], True
    options = req.dhcp_options.split()
    if "-f" in options:
        options.remove("-f")
        keep = True
    return client, options, keep


def _host_kind(hostif: str, sysfs: str = "/sys/class/net") -> str:
    """pipework's classification of its host interface, by name and by what
    exists: the daemon adopts an existing bridge of either kind."""
    if os.path.isdir(f"{sysfs}/{hostif}/bridge"):
        return "linux"
    if hostif.startswith("ovs"):
        return "ovs" if not os.path.exists(f"{sysfs}/{hostif}") else "auto"
    if os.path.exists(f"{sysfs}/{hostif}"):
        return "auto"  # an OVS bridge (or another interface: the daemon says so)
    if hostif.startswith("br"):
        return "linux"
    raise _not_found(
        f"I do not know how to set up interface {hostif}: it does not exist, and only "
        "names starting with br (Linux bridge), ovs (OVS bridge) or dummy are created"
    )


def _unimplemented(what: str, hint: str) -> Exception:
    from .client import NetplumbError
    from .codes import Code

    return NetplumbError(Code.UNIMPLEMENTED, what, reason="unimplemented", hint=hint)


def _not_found(message: str) -> Exception:
    from .client import NetplumbError
    from .codes import Code

    return NetplumbError(Code.NOT_FOUND, message, reason="not-found")


def _sub(c: object, req: Sub) -> str:
    if req.command != "route":
        c.guest_command(req.guest, req.command, req.args)  # type: ignore[attr-defined]
        return ""
    verb, dest, via, dev, metric = _ip_route(req.args)
    if verb == "del":
        c.delete_route(req.guest, dest, ifname=dev)  # type: ignore[attr-defined]
    else:
        c.add_route(req.guest, dest, via=via, ifname=dev, metric=metric)  # type: ignore[attr-defined]
    return ""


def _ip_route(args: Sequence[str]) -> tuple[str, str, str, str, int]:
    """The `ip route` forms netplumb records: [add|replace|del] DEST [via GW]
    [dev IF] [metric N]."""
    words = list(args)
    verb = "add"
    if words and words[0] in ("add", "replace", "append", "del", "delete"):
        verb = "del" if words[0] in ("del", "delete") else "add"
        words = words[1:]
    if not words:
        raise UsageError("route: missing the destination")
    dest, words = words[0], words[1:]
    via = dev = ""
    metric = 0
    while words:
        key = words[0]
        if len(words) < 2:
            raise UsageError(f"route: {key!r} needs a value")
        value = words[1]
        if key == "via":
            via = value
        elif key == "dev":
            dev = value
        elif key in ("metric", "priority", "preference"):
            if not (value.isascii() and value.isdigit()) or int(value) > 0xFFFFFFFF:
                raise UsageError(f"route: metric {value!r} is not a number from 0 to 4294967295")
            metric = int(value)
        else:
            raise UsageError(
                f"route: {key!r} is not supported (netplumb records DEST [via GW] [dev IF] [metric N])"
            )
        words = words[2:]
    return verb, dest, via, dev, metric


def run() -> None:
    """Console-script entry point."""
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
