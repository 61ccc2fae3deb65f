"""netplumbd in cluster mode against an etcd that serves only TLS and asks
for client certificates: with --etcd-ca/--etcd-cert/--etcd-key it joins
(registers, defines a network); without a client certificate it still
serves, says etcd is down and why, and refuses what needs etcd."""

from __future__ import annotations

import shutil
import time
from typing import Any

from fixtures.etcd import etcd_cluster, require_etcd
from fixtures.host import Daemon, delete_links, link, require_root, unique


def etcd_dependency(d: Daemon) -> dict[str, Any]:
    (dep,) = [x for x in d.cli_json("status")["dependencies"] if x["name"] == "etcd"]
    return dep  # type: ignore[no-any-return]


def test_daemon_joins_a_tls_etcd_with_client_certificates() -> None:
    require_root()
    require_etcd()
    prefix = "/" + unique("tls")
    net = unique("t")[:10]
    with etcd_cluster(1, tls=True) as etcd:
        url = etcd.endpoints[0]
        assert url.startswith("https://")
        good = Daemon(
            args=[
                "--etcd", url, "--etcd-prefix", prefix, "--host-name", "tls1",
                "--etcd-ca", etcd.ca, "--etcd-cert", etcd.client_cert, "--etcd-key", etcd.client_key,
            ]
        )  # fmt: skip
        bad = Daemon(
            args=["--etcd", url, "--etcd-prefix", prefix, "--host-name", "tls2",
                  "--etcd-ca", etcd.ca]
        )  # fmt: skip
        try:
            good.start()
            assert good.cli_json("status")["mode"] == "cluster"
            deadline = time.monotonic() + 10  # it registers in the background
            while not (dep := etcd_dependency(good))["up"] and time.monotonic() < deadline:
                time.sleep(0.1)
            assert dep["up"], dep
            good.cli_json("network", "create", net, "--subnet", "198.19.126.0/24", "--vni", "4320")
            assert [n["spec"]["name"] for n in good.cli_json("network", "ls")["networks"]] == [net]

            # No client certificate: etcd refuses the handshake. The daemon
            # serves all the same, and says what is wrong.
            bad.start()
            rc, _, err = bad.cli("network", "create", "x" + net[1:], "--subnet", "198.19.127.0/24", "--vni", "4321")  # fmt: skip
            assert rc == 5, err  # UNAVAILABLE
            assert "etcd" in err
            dep = etcd_dependency(bad)
            assert not dep["up"], dep
            assert url in dep["detail"], dep
            print(f"\netcd without a client certificate: {dep['detail']}")
            rc, _, err = good.cli("network", "del", net)
            assert rc == 0, err
            # the agent takes its bridge for the network down by itself
            deadline = time.monotonic() + 10
            while link(net) is not None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert link(net) is None and link("npvx4320") is None
        finally:
            for d in (good, bad):
                d.stop()
                shutil.rmtree(d.dir, ignore_errors=True)
            delete_links(["npvx4320", net])  # whatever a failure left behind
