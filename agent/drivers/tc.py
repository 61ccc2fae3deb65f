"""Runs ``tc`` inside a guest (``pipework tc``): tc's argument syntax is
open-ended, so the program itself does the work, with an argument list
through ``netplumb.agent.nsexec`` (never a shell)."""

from __future__ import annotations

import subprocess

from ..errors import DependencyUnavailable, InvalidSpec
from .netns import NetnsHandle, find_program, in_guest

TIMEOUT = 10.0


def run_tc(guest: NetnsHandle, words: tuple[str, ...]) -> None:
    """``tc WORDS...`` in ``guest``; InvalidSpec with tc's own message when
    tc refuses them."""
    tc = find_program("tc")
    if tc is None:
        raise DependencyUnavailable(
            "tc is not installed on this host", field="args", hint="install iproute2"
        )
    argv = in_guest(guest, [tc, *words])
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            pass_fds=(guest.fd,),
            timeout=TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise DependencyUnavailable(
            f"tc {' '.join(words)} did not finish in {TIMEOUT:g} s"
        ) from None
    if done.returncode != 0:
        why = (done.stderr or done.stdout).strip().splitlines()
        raise InvalidSpec(
            f"tc {' '.join(words)} failed: {why[0] if why else f'status {done.returncode}'}",
            field="args",
            hint="the same arguments as for tc(8), e.g. qdisc add dev eth1 root netem delay 10ms",
        )
