"""netplumb-dhcp-hook: the script udhcpc (``-s``) and dhclient (``-sf``) run
on every lease event, inside the guest's network namespace.

It replaces the clients' stock scripts, which would run in the host's mount
namespace and rewrite the host's /etc/resolv.conf (pipework's bug). It does
only what the interface needs, through netlink:
- bound, renew (udhcpc) / BOUND, RENEW, REBIND, REBOOT (dhclient): the
  interface's IPv4 address becomes exactly the leased one, and the first
  router, if any, becomes the default route;
- deconfig, leasefail, nak / EXPIRE, FAIL, RELEASE, STOP: the leased address
  and that default route go;
- PREINIT (dhclient): the interface is brought up.
IPv6 addresses are never touched. DNS servers are not applied: a guest's
resolv.conf is its own business (Docker manages it).
"""

from __future__ import annotations

import ipaddress
import os
import sys

RTPROT_DHCP = 16  # "dhcp" in /etc/iproute2/rt_protos

BOUND = {"bound", "renew", "BOUND", "RENEW", "REBIND", "REBOOT"}
UNBOUND = {"deconfig", "leasefail", "nak", "EXPIRE", "FAIL", "RELEASE", "STOP", "EXPIRE6"}


def lease(event: str, env: dict[str, str]) -> tuple[str, ipaddress.IPv4Interface | None, str]:
    """(what to do, the leased address, the router) from a client's event and
    environment; what is "bound", "unbound", "up" or "" (nothing). Pure."""
    if event == "PREINIT":
        return "up", None, ""
    if event in UNBOUND:
        return "unbound", None, ""
    if event not in BOUND:
        return "", None, ""
    if "new_ip_address" in env:  # dhclient
        ip, mask = env.get("new_ip_address", ""), env.get("new_subnet_mask", "")
        routers = env.get("new_routers", "")
    else:  # udhcpc
        ip, mask = env.get("ip", ""), env.get("subnet", "") or env.get("mask", "")
        routers = env.get("router", "")
    if not ip:
        return "", None, ""
    try:
        addr = ipaddress.IPv4Interface(f"{ip}/{mask or 32}")
    except ValueError:
        return "", None, ""
    router = routers.split()[0] if routers.split() else ""
    return "bound", addr, router


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    env = dict(os.environ)
    ifname = env.get("interface", "")
    event = args[0] if args else env.get("reason", "")
    what, addr, router = lease(event, env)
    if not ifname or not what:
        return 0
    from pyroute2 import IPRoute
    from pyroute2.netlink.exceptions import NetlinkError

    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=ifname)
        if not found:
            return 1
        index = found[0]
        if what == "up":
            ipr.link("set", index=index, state="up")
            return 0
        for msg in ipr.get_addr(index=index, family=2):
            have = ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
            if addr is None or have != addr:
                try:
                    ipr.addr("del", index=index, address=str(have.ip), prefixlen=msg["prefixlen"])
                except NetlinkError:
                    pass
        if addr is None:
            return 0
        ipr.link("set", index=index, state="up")
        try:
            ipr.addr(
                "add",
                index=index,
                address=str(addr.ip),
                prefixlen=addr.network.prefixlen,
                broadcast=str(addr.network.broadcast_address),
            )
        except NetlinkError as e:
            if e.code != 17:  # EEXIST: a renewal of the same lease
                raise
        if router:
            ipr.route(
                "replace", dst="0.0.0.0", dst_len=0, gateway=router, oif=index, proto=RTPROT_DHCP
            )
    return 0


def run() -> None:
    """Console-script entry point."""
    try:
        status = main()
    except Exception as e:  # the client only logs the status; say why here
        print(f"netplumb-dhcp-hook: {type(e).__name__}: {e}", file=sys.stderr)
        status = 1
    sys.exit(status)
