"""Hostile input, the command line: `netplumb` and `pipework` get random and
malformed argument lists. A malformed one exits 2 (usage) having sent
nothing to the daemon; a well-formed one with bad values is refused by the
daemon (3, 4 or 5); none exits 1 (internal error) or prints a traceback; and
the daemon's host and store are unchanged afterwards. Most cases run
in-process (``main(argv, env, ...)``), some as real subprocesses of the
installed commands. See fixtures/fuzz.py for the daemon under test."""

from __future__ import annotations

import io
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.fuzz import (
    ADDRS_OK,
    COMMAND_WORDS,
    DESTS_OK,
    IPS_OK,
    NASTY,
    FuzzHost,
    bad_addresses,
    bad_destinations,
    bad_guests,
    bad_ifnames,
    bad_ips,
    bad_macs,
    bad_peer_names,
    fuzz_host,
    fuzz_settings,
    long_strings,
    mutated,
    record,
)
from fixtures.host import NETPLUMB, VENV_BIN
from hypothesis import given
from hypothesis import strategies as st

PIPEWORK = str(VENV_BIN / "pipework")
UINT32 = (1 << 32) - 1


@pytest.fixture(scope="module")
def fz() -> Iterator[FuzzHost]:
    with fuzz_host() as host:
        yield host


# ------------------------------------------------------------ running


class Recorder:
    """A client that records which RPCs the command sent."""

    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner = inner
        self._calls = calls

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)

        def call(*args: Any, **kw: Any) -> Any:
            self._calls.append(name)
            return target(*args, **kw)

        return call


def run_inprocess(fz: FuzzHost, tool: str, argv: list[str]) -> tuple[int, str, str, list[str]]:
    """(exit status, stdout, stderr, RPCs sent) of ``netplumb`` or
    ``pipework`` run in-process against the fuzz daemon."""
    from netplumb.cli.client import Client

    calls: list[str] = []

    def factory(path: Any, **kw: Any) -> Recorder:
        if "connect" not in kw:
            kw["transport"] = "wire"
        return Recorder(Client(path, **kw), calls)

    if tool == "netplumb":
        from netplumb.cli.main import main
    else:
        from netplumb.cli.pipework import main  # type: ignore[assignment]
    out, err = io.StringIO(), io.StringIO()
    fz.mention("\0".join(argv).encode(errors="surrogateescape"))
    rc = main(
        argv,
        env={"NETPLUMB_SOCKET": fz.daemon.socket},
        stdout=out,
        stderr=err,
        client_factory=factory,
    )
    return int(rc), out.getvalue(), err.getvalue(), calls


def run_subprocess(
    fz: FuzzHost, tool: str, argv: list[str], timeout: float = 20
) -> tuple[int, str, str]:
    fz.mention("\0".join(argv).encode(errors="surrogateescape"))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "NETPLUMB_SOCKET": fz.daemon.socket}
    env["LANG"] = "C.UTF-8"
    res = subprocess.run(
        [NETPLUMB if tool == "netplumb" else PIPEWORK, *argv],
        capture_output=True,
        env=env,
        timeout=timeout,
    )
    return res.returncode, res.stdout.decode(errors="replace"), res.stderr.decode(errors="replace")


class Tally:
    def __init__(self) -> None:
        self.exits: Counter[int] = Counter()
        self.calls: Counter[str] = Counter()

    def line(self, what: str) -> str:
        n = sum(self.exits.values())
        codes = ", ".join(f"exit {c}: {k}" for c, k in sorted(self.exits.items()))
        record(what, n, {"exits": {str(c): k for c, k in self.exits.items()}})
        return f"fuzz: {n} {what} ({codes})"


def check(
    fz: FuzzHost,
    tally: Tally,
    tool: str,
    argv: list[str],
    result: tuple[int, str, str, list[str]],
    usage: bool = False,
    refused: bool = False,
) -> None:
    """The rules for one command line: never exit 1 nor print a traceback;
    exit 2 only having sent nothing; ``usage``: exit 2; ``refused``: not 0;
    a refused command leaves the store as it was; one that succeeded and
    changed it is recorded and undone."""
    rc, out, err, calls = result
    tally.exits[rc] += 1
    tally.calls.update(calls)
    shown = (
        f"{tool} {argv!r} -> exit {rc}, RPCs {calls}\nstdout: {out[:500]!r}\nstderr: {err[:500]!r}"
    )
    assert rc != 1 and "Traceback" not in err + out, shown
    assert rc in (0, 2, 3, 4, 5, 6), shown
    if rc == 2:
        assert not calls, f"usage error after sending RPCs: {shown}"
        assert err.strip(), f"usage error without a message: {shown}"
    if usage:
        assert rc == 2, f"a malformed command line must be a usage error: {shown}"
    if refused:
        assert rc != 0, f"a bad value was accepted: {shown}"
    if fz.state_file() != fz.baseline_state():
        assert rc == 0, f"a refused command changed the store: {shown}"
        fz.accepted.append(shown)
        fz.restore()


# ------------------------------------------------------------ values


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _known_bug(s: str) -> bool:
    """Values the main fuzz leaves to the xfail tests below: a number out
    of the uint32 range (exit 1), a string that is no UTF-8 (exit 1), Unicode
    digits that str.isdigit() accepts but int() does not (pipework: exit 1)."""
    if any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        return True
    if _is_int(s) and not 0 <= int(s) <= UINT32:
        return True
    return any(c.isdigit() and not c.isascii() for c in s)


def _safe(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return strategy.filter(lambda s: not _known_bug(s))


# Hostile values of any kind, for any position.
VALUES = _safe(
    st.one_of(
        st.text(max_size=16),
        st.sampled_from(NASTY),
        st.sampled_from(ADDRS_OK + IPS_OK + DESTS_OK + COMMAND_WORDS),
        mutated(ADDRS_OK),
        bad_guests(),
        bad_ifnames(),
        long_strings(max_size=300),
    )
)
NOT_INT = VALUES.filter(lambda s: not _is_int(s))
NOT_FLOAT = VALUES.filter(lambda s: not _is_float(s))
NUMBERS = st.one_of(
    st.sampled_from([0, 1, 67, 68, 1280, 4094, 4095, 65535, 65536, 1 << 24, UINT32]),
    st.integers(0, UINT32),
).map(str)
# Guests that are no namespace, or do not exist: never a real one.
GUESTS = _safe(st.one_of(bad_guests(), st.sampled_from(["netns:npfz-nosuch", "npfz-nosuch"])))
NOWHERE = "/nonexistent/netplumb-fuzz.sock"


def _positions(draw: Any, argv: list[str], start: int) -> int:
    return draw(st.integers(start, len(argv)))  # type: ignore[no-any-return]


# ------------------------------------------------- netplumb: templates
#
# Strategies are built once, at import: hypothesis validates each strategy
# object the first time it is drawn from, which is slow.

NODASH = VALUES.filter(lambda s: not s.startswith("-"))
GUEST = GUESTS.filter(lambda s: not s.startswith("-"))
WORDS = st.lists(st.sampled_from(COMMAND_WORDS), min_size=1, max_size=4)


def _form(head: list[str], n: int, *tail: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """(argv, n): ``head`` then one value drawn from each of ``tail`` (a
    list value is spliced in); n is how many leading words name the command."""

    def build(*values: Any) -> tuple[list[str], int]:
        argv = list(head)
        for v in values:
            argv.extend(v if isinstance(v, list) else [v])
        return argv, n

    return st.tuples(*tail).map(lambda t: build(*t))


# A well-formed netplumb command with hostile values (anything the daemon
# must judge).
NP_TEMPLATES = st.one_of(
    _form(["bridge", "add"], 2, NODASH),
    _form(["bridge", "del"], 2, NODASH),
    _form(["bridge", "ls"], 2),
    _form(["attach"], 1, NODASH, GUEST),
    _form(["detach"], 1, GUEST),
    _form(["ls"], 1),
    _form(["route", "add"], 2, GUEST, NODASH),
    _form(["route", "del"], 2, GUEST, NODASH),
    _form(["peer", "add"], 2, NODASH),
    _form(["peer", "del"], 2, NODASH),
    _form(["peer", "ls"], 2),
    _form(["status"], 1),
    _form(["check"], 1),
    _form(["reconcile"], 1),
    _form(["rule"], 1, GUEST, WORDS),
    _form(["tc"], 1, GUEST, WORDS),
)

INT_OPTIONS = {
    ("bridge", "add"): ["--mtu", "--vni"],
    ("attach",): ["--mtu", "--vlan"],
    ("route", "add"): ["--metric"],
}
VALUE_OPTIONS = {
    ("bridge", "add"): ["--address", "--mtu", "--vni", "--kind", "--tunnel"],
    ("attach",): ["--ifname", "--host-ifname", "--mac", "--mtu", "--vlan", "--route", "--kind"],
    ("detach",): ["--ifname"],
    ("route", "add"): ["--via", "--metric", "--ifname"],
    ("route", "del"): ["--ifname"],
    ("peer", "add"): ["--name"],
}
CHOICES = {
    ("bridge", "add"): {"--kind": ["linux", "ovs"], "--tunnel": ["vxlan", "geneve", "gre"]},
    ("attach",): {"--kind": ["veth", "macvlan", "phys", "dummy"]},
}
LONG_OPTIONS = (
    "--socket --connect --tls-cert --tls-key --tls-ca --insecure-tcp --json --timeout --help "
    "--kind --address --mtu --vni --tunnel --ifname --host-ifname --mac --vlan --route --dhcp "
    "--dhcp-keep --dhcp-option --via --metric --name"
).split()
COMMANDS = {"bridge", "attach", "detach", "ls", "route", "peer", "status", "check", "reconcile"}
COMMANDS |= {"rule", "tc"}

NOT_COMMAND = NODASH.filter(lambda s: s not in COMMANDS)
NOT_ACTION = st.one_of(st.just(""), NODASH.filter(lambda s: s not in ("add", "del", "ls")))
UNKNOWN_OPTION = st.one_of(
    st.sampled_from(["--nope", "-z", "--jsonx", "--socket-path", "---x", "-jx"]),
    st.text(min_size=1, max_size=8).map(lambda s: "--" + s),
).filter(lambda o: not any(k.startswith(o.split("=")[0]) for k in LONG_OPTIONS))
NOT_INT_NODASH = NOT_INT.filter(lambda s: not s.startswith("-"))
NOT_FLOAT_NODASH = NOT_FLOAT.filter(lambda s: not s.startswith("-"))
NOT_CHOICE = NODASH.filter(
    lambda s: (
        s not in ("linux", "ovs", "vxlan", "geneve", "gre", "veth", "macvlan", "phys", "dummy")
    )
)
BAD_CONNECT = st.sampled_from(["x", ":", ":1", "a:", "[::1", "[::1]", "a:99999", "a:-1", "a:0"])
HALF = st.sampled_from(ADDRS_OK + IPS_OK)


def _key(argv: list[str], n: int) -> tuple[str, ...]:
    return tuple(argv[:n])


# ------------------------------------------------- netplumb: usage errors


@st.composite
def np_usage(draw: Any) -> list[str]:
    """A netplumb command line that is malformed: the parser (or the
    command's own checks before any call) must refuse it."""
    argv, n = draw(NP_TEMPLATES)
    key = _key(argv, n)
    kind = draw(st.integers(0, 13))
    if kind == 0:  # a command that does not exist
        return [draw(NOT_COMMAND), *argv[1:]]
    if kind == 1 and n == 2:  # an action that does not exist, or none
        word = draw(NOT_ACTION)
        return argv[:1] if not word else [argv[0], word, *argv[2:]]
    if kind == 2 and len(argv) > n and argv[0] not in ("rule", "tc", "peer", "attach"):
        i = draw(st.integers(n, len(argv) - 1))  # a positional argument missing
        return argv[:i] + argv[i + 1 :]
    if kind == 2 and argv[0] == "attach":
        return argv[:2]  # no guest
    if kind == 3 and argv[0] not in ("attach", "rule", "tc", "peer"):  # one positional too many
        return [*argv, draw(NODASH)]
    if kind == 4:  # an option no command has (nor abbreviates: argparse takes prefixes)
        at = draw(st.integers(0, n if argv[0] in ("rule", "tc") else len(argv)))
        return [*argv[:at], draw(UNKNOWN_OPTION), *argv[at:]]
    options = VALUE_OPTIONS.get(key, [])
    if kind == 5 and options and argv[0] not in ("rule", "tc"):  # an option without its value
        return [*argv, draw(st.sampled_from(options))]
    ints = INT_OPTIONS.get(key, [])
    if kind == 6 and ints:  # an integer option with no integer
        return [*argv, draw(st.sampled_from(ints)), draw(NOT_INT_NODASH)]
    choices = CHOICES.get(key, {})
    if kind == 7 and choices:  # a value outside an option's choices
        return [*argv, draw(st.sampled_from(sorted(choices))), draw(NOT_CHOICE)]
    if kind == 8:  # --timeout with no number
        return ["--timeout", draw(NOT_FLOAT_NODASH), *argv]
    if kind == 9 and argv[0] == "attach":  # ADDRESS@GATEWAY or DEST@VIA with a side empty
        half = draw(HALF)
        bad = draw(st.sampled_from([f"@{half}", f"{half}@", "@"]))
        return [*argv, bad] if draw(st.booleans()) else [*argv, "--route", bad]
    if kind == 10 and argv[0] == "attach":  # option combinations the command refuses
        bridge = argv[1] if argv[1] != "-" else "x"
        return draw(
            st.sampled_from(
                [
                    [*argv, "--dhcp-keep"],
                    [*argv, "--dhcp-option", "-x"],
                    ["attach", "--kind", "dummy", bridge, argv[2]],
                ]
            )
        )
    if kind == 11:  # peer add: several addresses and a name
        peers = draw(st.lists(st.sampled_from(IPS_OK), min_size=2, max_size=3))
        return ["peer", "add", *peers, "--name", "h2"]
    if kind == 12 and argv[0] in ("rule", "tc"):  # no arguments for the tool
        return argv[:2]
    if kind == 13:  # TCP options that are not ADDRESS:PORT, or without --connect
        return draw(
            st.sampled_from(
                [
                    ["--connect", draw(BAD_CONNECT), *argv],
                    ["--tls-cert", "/nonexistent.pem", *argv],
                    ["--tls-ca", "/nonexistent.pem", *argv],
                    ["--insecure-tcp", *argv],
                ]
            )
        )
    return []  # no arguments at all


# --------------------------------------- netplumb: well-formed, bad values


def _positional(head: list[str], value: str) -> list[str]:
    """``head`` then ``value`` as a positional argument, after "--" when it
    looks like an option."""
    return [*head, "--", value] if value.startswith("-") else [*head, value]


_G = "netns:npfz-nosuch"
_B = "npfzbr0"
# A well-formed command whose one bad value the daemon must refuse.
NP_REFUSED = st.tuples(
    st.booleans(),
    st.one_of(
        _safe(bad_ifnames(allow_empty=True)).map(lambda v: _positional(["bridge", "add"], v)),
        _safe(bad_addresses(link_local_ok=True)).map(
            lambda v: ["bridge", "add", _B, f"--address={v}"]
        ),
        st.sampled_from(["1", "67", "65536", "70000", str(UINT32)]).map(
            lambda v: ["bridge", "add", _B, "--mtu", v]
        ),
        st.sampled_from([str(1 << 24), str(UINT32)]).map(
            lambda v: ["bridge", "add", _B, "--vni", v]
        ),
        st.just(["bridge", "add", _B, "--tunnel", "gre"]),  # a tunnel needs a VNI
        _safe(bad_guests()).map(lambda v: _positional(["attach", _B], v)),
        _safe(bad_addresses()).map(lambda v: _positional(["attach", _B, _G], v)),
        _safe(bad_macs()).map(lambda v: ["attach", _B, _G, f"--mac={v}"]),
        _safe(bad_ifnames()).map(lambda v: ["attach", _B, _G, f"--ifname={v}"]),
        st.sampled_from(["4095", "65535", str(UINT32)]).map(
            lambda v: ["attach", _B, _G, "--vlan", v]
        ),
        _safe(bad_destinations()).map(lambda v: _positional(["route", "add", _G], v)),
        _safe(bad_ips(peer=True)).map(lambda v: _positional(["peer", "add"], v)),
        _safe(bad_peer_names()).map(lambda v: ["peer", "add", "198.18.0.12", f"--name={v}"]),
        WORDS.map(lambda w: ["rule", _G, *w]),
        WORDS.map(lambda w: ["tc", _G, *w]),
    ),
).map(lambda t: ["--json", *t[1]] if t[0] else t[1])


def np_refused() -> st.SearchStrategy[list[str]]:
    return NP_REFUSED


# Any words, mostly after a command: commands, options, values, in any order
# (never --connect, nor --socket to anything but a path that does not exist).
_NP_WORDS = st.one_of(
    st.sampled_from([*sorted(COMMANDS), "add", "del", "ls", "-"]),
    st.sampled_from(
        [
            *("--json", "--ifname", "--mtu", "--vlan", "--route", "--kind", "--address", "--vni"),
            *("--tunnel", "--via", "--metric", "--name", "--mac", "--host-ifname", "--dhcp", "--"),
        ]
    ),
    VALUES,
    GUESTS,
)
NP_SOUP = st.tuples(
    st.integers(0, 9),
    st.one_of(NP_TEMPLATES.map(lambda t: t[0]), st.just([])),
    st.lists(_NP_WORDS, max_size=6),
).map(lambda t: (["--socket", NOWHERE] if t[0] == 0 else []) + t[1] + t[2])


def np_soup() -> st.SearchStrategy[list[str]]:
    return NP_SOUP


def test_fuzz_netplumb_argv(fz: FuzzHost) -> None:
    """netplumb, in-process: malformed command lines exit 2 having sent
    nothing; bad values are refused by the daemon; random word soups do no
    harm; nothing exits 1."""
    since = len(fz.accepted)
    tallies = {"usage": Tally(), "refused": Tally(), "soup": Tally()}

    @fuzz_settings(max_examples=400)
    @given(np_usage())
    def usage(argv: list[str]) -> None:
        check(
            fz, tallies["usage"], "netplumb", argv, run_inprocess(fz, "netplumb", argv), usage=True
        )

    @fuzz_settings(max_examples=120)
    @given(np_refused())
    def refused(argv: list[str]) -> None:
        check(
            fz,
            tallies["refused"],
            "netplumb",
            argv,
            run_inprocess(fz, "netplumb", argv),
            refused=True,
        )

    @fuzz_settings(max_examples=150)
    @given(np_soup())
    def soup(argv: list[str]) -> None:
        check(fz, tallies["soup"], "netplumb", argv, run_inprocess(fz, "netplumb", argv))

    usage()
    refused()
    soup()
    for name, tally in tallies.items():
        print(tally.line(f"netplumb argv cases ({name}, in-process)"))
    _accepted(fz, since)
    fz.assert_healthy_and_unchanged()


def _accepted(fz: FuzzHost, since: int) -> None:
    if fz.accepted[since:]:
        print(f"fuzz: {len(fz.accepted) - since} valid commands changed the store (undone):")
        print("\n".join(fz.accepted[since:]))


# ------------------------------------------------------------ pipework

# Host interfaces pipework would create (br*, ovs*, dummy*) or that exist
# here are left to the tests that mean to create something.
HOSTIFS = _safe(
    st.one_of(
        st.sampled_from(["npfz0", "x", "veth9", "e", "-", "-x", "eth99z", "bri0x"]),
        bad_ifnames(),
        st.text(max_size=8),
    )
).filter(
    lambda s: (
        not s.startswith(("br", "ovs", "dummy", "mac:", "--", "-h"))
        and s not in ("route", "rule", "tc", "help", "")
        and not os.path.exists(f"/sys/class/net/{s}")
    )
)
PW_ADDRESSES = st.one_of(
    st.sampled_from(["198.18.0.5/24", "198.18.0.5/24@198.18.0.1", "2001:db8::5/64", "0/0", "dhcp"]),
    st.sampled_from(["udhcpc", "dhclient-f", "dhcp:-f", "udhcpc:-x -y"]),
    VALUES,
)
PW_MACS = st.one_of(
    st.sampled_from(["02:00:00:00:00:01", "U:web1", "02:00:00:00:00:01@10", "@4094", "U:"]),
    VALUES,
)


_DHCP = ("dhcp", "udhcpc", "udhcpc-f", "dhclient", "dhclient-f", "dhcpcd")
NON_DIGIT = VALUES.filter(lambda s: not s.isdigit() and "@" not in s)
PW_OPTS = st.lists(
    st.sampled_from([["-i", "eth2"], ["-l", "np0"], ["-a", "4"], ["-a", "6"]]), max_size=2
).map(lambda opts: [w for o in opts for w in o])
NOT_FAMILY = VALUES.filter(lambda s: s not in ("4", "6"))
NO_PREFIX = st.one_of(
    st.sampled_from(["198.18.0.5", "2001:db8::5", "x", "198.18.0.5@198.18.0.1"]), NON_DIGIT
).filter(lambda s: "/" not in s.split("@")[0] and s.split(":")[0] not in _DHCP)
BAD_VLAN = st.one_of(NON_DIGIT, st.sampled_from(["0", "4095", "99999", "00000"]))
WAIT_EXTRA = st.one_of(
    st.sampled_from([["-x"], ["eth1"], ["--timeout"], ["-i"], ["--timeout", "-1"]]),
    NON_DIGIT.filter(lambda s: not _is_float(s)).map(lambda s: ["--timeout", s]),
)
ROUTE_TAILS = st.sampled_from(
    [["via"], ["dev"], ["metric"], ["table", "100"], ["proto", "static"], ["scope", "link"]]
)


@st.composite
def pw_usage(draw: Any) -> list[str]:
    """A pipework command line its grammar refuses."""
    hostif = draw(HOSTIFS)
    guest = draw(GUEST)
    addr = draw(st.sampled_from(["198.18.0.5/24", "0/0", "udhcpc"]))
    flat = draw(PW_OPTS)
    kind = draw(st.integers(0, 12))
    if kind == 0:
        return []
    if kind == 1:
        return ["--direct-phys"]
    if kind == 2:  # route, rule, tc without a guest or arguments
        tool = draw(st.sampled_from(["route", "rule", "tc"]))
        return [tool, guest] if draw(st.booleans()) else [tool]
    if kind == 3:  # fewer than a guest and an address
        return [hostif, *flat, *([guest] if draw(st.booleans()) else [])]
    if kind == 4:  # more than guest, address and MAC
        return [hostif, guest, addr, "02:00:00:00:00:01", draw(VALUES), *flat]
    if kind == 5:  # an option without its value
        return [hostif, guest, addr, draw(st.sampled_from(["-i", "-l", "-a"]))]
    if kind == 6:  # -a neither 4 nor 6
        return [hostif, "-a", draw(NOT_FAMILY), guest, addr]
    if kind == 7:  # an address without a prefix length, or an empty gateway
        bare = draw(st.one_of(NO_PREFIX, st.sampled_from(["198.18.0.5/24@", "2001:db8::5/64@"])))
        return [hostif, *flat, guest, bare]
    if kind == 8:  # MAC@VLAN with no number, or out of 1..4094
        return [hostif, guest, addr, f"02:00:00:00:00:01@{draw(BAD_VLAN)}"]
    if kind == 9:  # --wait with something it does not take (and a timeout: never hangs)
        return ["--wait", "--timeout", "0.01", *draw(WAIT_EXTRA)]
    if kind == 10:  # "empty host interface"
        return ["", guest, addr]
    # route forms netplumb does not record
    verb = draw(st.sampled_from([[], ["add"], ["replace"], ["del"]]))
    dest = draw(st.sampled_from(DESTS_OK))
    if kind == 11:
        return ["route", guest, *verb, dest, *draw(ROUTE_TAILS)]
    if kind == 12:
        return ["route", guest, *verb, dest, "metric", draw(NON_DIGIT)]
    return ["route", guest, *verb]


# pipework words in any order: host interfaces that are not created here,
# guests that do not exist, addresses, MACs, options.
PW_SOUP = st.tuples(
    st.one_of(HOSTIFS, st.sampled_from(["route", "rule", "tc", "--direct-phys"])),
    st.lists(
        st.one_of(
            HOSTIFS,
            GUESTS,
            PW_ADDRESSES,
            PW_MACS,
            st.sampled_from(
                ["-i", "-l", "-a", "4", "6", "--direct-phys", "route", "rule", "tc", "via", "dev"]
            ),
        ),
        max_size=6,
    ),
).map(lambda t: [t[0], *t[1]])


def pw_soup() -> st.SearchStrategy[list[str]]:
    return PW_SOUP


def test_fuzz_pipework_argv(fz: FuzzHost) -> None:
    """pipework, in-process: what its grammar refuses exits 2 having sent
    nothing; word soups do no harm; nothing exits 1."""
    since = len(fz.accepted)
    tallies = {"usage": Tally(), "soup": Tally()}

    @fuzz_settings(max_examples=350)
    @given(pw_usage())
    def usage(argv: list[str]) -> None:
        check(
            fz, tallies["usage"], "pipework", argv, run_inprocess(fz, "pipework", argv), usage=True
        )

    @fuzz_settings(max_examples=200)
    @given(pw_soup())
    def soup(argv: list[str]) -> None:
        check(fz, tallies["soup"], "pipework", argv, run_inprocess(fz, "pipework", argv))

    usage()
    soup()
    for name, tally in tallies.items():
        print(tally.line(f"pipework argv cases ({name}, in-process)"))
    _accepted(fz, since)
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------------- real processes


def _encodable(argv: list[str]) -> bool:
    """What execve can pass: no NUL (lone surrogates are left to the xfail
    test, which passes bytes that are no UTF-8)."""
    return all("\0" not in a for a in argv)


def test_fuzz_argv_as_subprocesses(fz: FuzzHost) -> None:
    """The installed commands, as a shell would run them: usage errors exit
    2 with a message on stderr and nothing on stdout, bad values are
    refused, no traceback, nothing changed."""
    since = len(fz.accepted)
    tally = Tally()

    def sub(tool: str, argv: list[str], **kw: bool) -> None:
        rc, out, err = run_subprocess(fz, tool, argv)
        check(fz, tally, tool, argv, (rc, out, err, []), **kw)
        if rc == 2:
            assert out == "", (argv, out)

    @fuzz_settings(max_examples=25)
    @given(np_usage().filter(_encodable))
    def np_usage_case(argv: list[str]) -> None:
        sub("netplumb", argv, usage=True)

    @fuzz_settings(max_examples=10)
    @given(np_refused().filter(_encodable))
    def np_refused_case(argv: list[str]) -> None:
        sub("netplumb", argv, refused=True)

    @fuzz_settings(max_examples=20)
    @given(pw_usage().filter(_encodable))
    def pw_usage_case(argv: list[str]) -> None:
        sub("pipework", argv, usage=True)

    @fuzz_settings(max_examples=5)
    @given(pw_soup().filter(_encodable))
    def pw_soup_case(argv: list[str]) -> None:
        sub("pipework", argv)

    for case in (np_usage_case, np_refused_case, pw_usage_case, pw_soup_case):
        case()
    print(tally.line("argv cases as subprocesses (netplumb and pipework)"))
    _accepted(fz, since)
    fz.assert_healthy_and_unchanged()


# ------------------------------------------------ bugs the fuzz found (fixed)


def test_netplumb_numbers_out_of_range_are_usage_errors(fz: FuzzHost) -> None:
    cases = [
        ["bridge", "add", "npfzbr0", "--mtu", "-1"],
        ["bridge", "add", "npfzbr0", "--vni", str(1 << 32)],
        ["attach", "b", "netns:npfz-nosuch", "--vlan", "-1"],
        ["attach", "b", "netns:npfz-nosuch", "--mtu", str(1 << 40)],
        ["route", "add", "netns:npfz-nosuch", "default", "--metric", "-1"],
        ["route", "add", "netns:npfz-nosuch", "default", "--metric", str(1 << 32)],
        ["--timeout", "nan", "ls"],
        ["--timeout", "inf", "ls"],
        ["--timeout", "-1", "ls"],
        ["--timeout", "1e400", "ls"],
    ]
    _expect_usage(fz, "netplumb", cases)


def test_argv_that_is_not_utf8_is_a_usage_error(fz: FuzzHost) -> None:
    wrong = []
    for tool, argv in (
        ("netplumb", [b"bridge", b"del", b"\xff"]),
        ("netplumb", [b"detach", b"netns:\xc3\x28"]),
        ("netplumb", [b"attach", b"b", b"netns:npfz-nosuch", b"--ifname", b"eth\xed\xa0\x80"]),
        ("pipework", [b"route", b"netns:npfz-nosuch", b"198.19.0.0/16", b"dev", b"\xff"]),
        ("pipework", [b"route", b"netns:\xff", b"198.19.0.0/16"]),
    ):
        env = {"PATH": os.environ.get("PATH", ""), "NETPLUMB_SOCKET": fz.daemon.socket}
        exe = NETPLUMB if tool == "netplumb" else PIPEWORK
        res = subprocess.run([exe.encode(), *argv], capture_output=True, env=env, timeout=20)
        if res.returncode != 2:
            wrong.append(f"{tool} {argv!r} -> {res.returncode}: {res.stderr[-300:]!r}")
    fz.assert_healthy_and_unchanged()
    assert not wrong, "\n".join(wrong)


def test_pipework_numbers_that_are_not_numbers_are_usage_errors(fz: FuzzHost) -> None:
    cases = [
        ["npfz0", "netns:npfz-nosuch", "198.18.0.5/24", "02:00:00:00:00:01@\u00b2"],
        ["route", "netns:npfz-nosuch", "198.19.0.0/16", "metric", "\u00b2"],
        ["route", "netns:npfz-nosuch", "198.19.0.0/16", "metric", str(1 << 32)],
    ]
    _expect_usage(fz, "pipework", cases)


def test_pipework_wait_refuses_a_timeout_that_is_not_a_number(fz: FuzzHost) -> None:
    try:
        rc, _, err = run_subprocess(
            fz, "pipework", ["--wait", "--timeout", "nan", "-i", "npfz0"], 2
        )
    except subprocess.TimeoutExpired:
        raise AssertionError("pipework --wait --timeout nan did not return in 2 s") from None
    assert rc == 2, err


def test_refused_pipework_command_creates_no_bridge(fz: FuzzHost) -> None:
    bridge = f"brfz{fz.tag}"
    try:
        rc, _out, err, calls = run_inprocess(
            fz, "pipework", [bridge, "netns:npfz-nosuch", "198.18.0.5/24"]
        )
        assert rc == 3, (rc, err)
        assert fz.state_file() == fz.baseline_state(), (
            f"pipework exited {rc} ({err.strip()}) after {calls}, and the store now "
            f"records bridge {bridge}"
        )
    finally:
        if fz.state_file() != fz.baseline_state():
            fz.restore()
    fz.assert_healthy_and_unchanged()


def _expect_usage(fz: FuzzHost, tool: str, cases: list[list[str]]) -> None:
    wrong = []
    for argv in cases:
        rc, _out, err, calls = run_inprocess(fz, tool, argv)
        if rc != 2 or calls:
            wrong.append(f"{tool} {argv!r} -> {rc} after {calls}: {err.strip()[-200:]}")
    fz.assert_healthy_and_unchanged()
    assert not wrong, "\n".join(wrong)
