"""netplumbd configuration: defaults, a TOML file, then command-line flags
(flags win). Unknown keys, bad values and contradictory settings (TCP
without TLS, TLS without TCP) are refused at start, by name, before anything
is touched."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import re
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any, NoReturn

DEFAULT_SOCKET = "/run/netplumb/netplumbd.sock"
DEFAULT_STATE_DIR = "/var/lib/netplumb"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
DEFAULT_METRICS_ADDRESS = "127.0.0.1:9464"
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Config:
    socket: str = DEFAULT_SOCKET  # unix socket the API is served on
    socket_group: str = "netplumb"  # group that may use the socket (mode 0660)
    state_dir: str = DEFAULT_STATE_DIR  # where the desired state is kept
    ovsdb: str = DEFAULT_OVSDB  # OVSDB endpoint (OVS bridges)
    docker_url: str = DEFAULT_DOCKER_URL  # Docker Engine API (Docker guests)
    log_level: str = "info"  # debug, info, warning, error
    # Local tunnel endpoint address; empty: the source address of the route
    # towards each peer.
    underlay_address: str = ""
    # OVS datapath type for the bridges netplumb creates: auto (system where
    # the kernel datapath exists, netdev otherwise), system or netdev.
    ovs_datapath_type: str = "auto"
    # TCP listener, ADDRESS:PORT ([ADDRESS]:PORT for IPv6); empty: unix socket
    # only. Needs the three TLS files below, or insecure_tcp.
    listen: str = ""
    tls_cert: str = ""  # PEM certificate (chain) the daemon presents
    tls_key: str = ""  # PEM private key of tls_cert, unencrypted
    tls_client_ca: str = ""  # PEM CA(s) a client certificate must chain to
    insecure_tcp: bool = False  # plaintext TCP, no client authentication
    # Cluster mode: etcd client URLs, comma-separated; empty: standalone.
    etcd: str = ""
    etcd_prefix: str = "/netplumb"  # key prefix of this cluster in etcd
    etcd_ca: str = ""  # PEM CA of etcd's server certificate (https URLs)
    etcd_cert: str = ""  # PEM client certificate for etcd, if it asks for one
    etcd_key: str = ""  # its private key
    # This host's name in the cluster; empty: the system host name.
    host_name: str = ""
    # Seconds the host's registration outlives the agent: a host that dies
    # leaves its peers' mesh this long after its last keepalive.
    cluster_ttl: int = 10
    # DNS: resolvers for names outside the cluster's networks, comma-separated
    # IP or IP:PORT; empty: such queries are refused.
    dns_upstreams: str = ""
    # Prometheus metrics over HTTP on ADDRESS:PORT ([ADDRESS]:PORT for IPv6);
    # "off": none. The default is reachable from this host only.
    metrics_address: str = DEFAULT_METRICS_ADDRESS


_DEFAULTS = {f.name: f.default for f in fields(Config)}

# Settings that only make sense with a TCP listener.
TLS_KEYS = ("tls_cert", "tls_key", "tls_client_ca")
_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?")


def load(path: str | None, *, check: bool = True) -> Config:
    """The defaults with the TOML file's values. Unknown keys and values of
    the wrong type are refused here; without ``check`` the settings' values
    and how they fit together are left to ``validate`` (flags may still
    complete them)."""
    if not path:
        return Config()
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return _apply(Config(), doc, path, check)


def _apply(cfg: Config, doc: dict[str, Any], origin: str, check: bool = True) -> Config:
    known = {f.name: f for f in fields(Config)}
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{origin}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(known[name].default, bool):
            if not isinstance(value, bool):
                raise ConfigError(f"{origin}: key {key!r} must be true or false")
        elif isinstance(known[name].default, int):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{origin}: key {key!r} must be a whole number")
        elif not isinstance(value, str) or (not value and known[name].default != ""):
            # "" is accepted where it is the default ("off", "automatic")
            raise ConfigError(f"{origin}: key {key!r} must be a non-empty string")
        values[name] = value
    cfg = replace(cfg, **values)
    if check:
        validate(cfg, origin)
    return cfg


def validate(cfg: Config, origin: str) -> None:
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"{origin}: log_level {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    for key in ("socket", "state_dir"):
        if not getattr(cfg, key).startswith("/"):
            raise ConfigError(
                f"{origin}: {key} {getattr(cfg, key)!r} must be an absolute path "
                f"(default {_DEFAULTS[key]})"
            )
    if cfg.socket_group and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}", cfg.socket_group):
        raise ConfigError(
            f"{origin}: socket_group {cfg.socket_group!r} is not a group name "
            "(e.g. netplumb; create it with 'groupadd --system netplumb')"
        )
    _validate_urls(cfg, origin)
    if cfg.ovs_datapath_type not in ("auto", "system", "netdev"):
        raise ConfigError(
            f"{origin}: ovs_datapath_type {cfg.ovs_datapath_type!r} is not auto, system or netdev"
        )
    if cfg.underlay_address:
        try:
            ipaddress.ip_address(cfg.underlay_address)
        except ValueError:
            raise ConfigError(
                f"{origin}: underlay_address {cfg.underlay_address!r} is not an IP address"
            ) from None
    _validate_tcp(cfg, origin)
    _validate_cluster(cfg, origin)
    metrics_endpoint(cfg, origin)


def _validate_urls(cfg: Config, origin: str) -> None:
    """The OVSDB and Docker endpoints, in the forms their clients take."""
    ovsdb = cfg.ovsdb
    if ovsdb.startswith("unix:"):
        ok = ovsdb[5:].startswith("/")
    elif ovsdb.startswith("tcp:"):
        try:
            parse_listen(ovsdb[4:], key="ovsdb")
            ok = True
        except ConfigError:
            ok = False
    else:
        ok = False
    if not ok:
        raise ConfigError(
            f"{origin}: ovsdb {ovsdb!r} is not unix:/PATH or tcp:ADDRESS:PORT "
            f"(default {DEFAULT_OVSDB}; e.g. tcp:198.18.0.1:6640)"
        )
    docker = cfg.docker_url
    scheme, sep, rest = docker.partition("://")
    if not sep or not (
        (scheme == "unix" and rest.startswith("/"))
        or (scheme in ("tcp", "http", "https") and re.fullmatch(r"[^/\s]+:[0-9]{1,5}/?", rest))
    ):
        raise ConfigError(
            f"{origin}: docker_url {docker!r} is not unix:///PATH or tcp://ADDRESS:PORT "
            f"(default {DEFAULT_DOCKER_URL})"
        )


def metrics_endpoint(cfg: Config, origin: str = "") -> tuple[str, int] | None:
    """Where the metrics are served, (host, port), or None when
    metrics_address is ``off``."""
    if cfg.metrics_address == "off":
        return None
    return parse_listen(
        cfg.metrics_address,
        origin,
        key="metrics_address",
        example="127.0.0.1:9464, [::1]:9464 or 198.18.0.1:9464; or off",
    )


def etcd_urls(cfg: Config) -> list[str]:
    return [u.strip() for u in cfg.etcd.split(",") if u.strip()]


def dns_upstreams(cfg: Config) -> list[str]:
    return [u.strip() for u in cfg.dns_upstreams.split(",") if u.strip()]


def _validate_cluster(cfg: Config, origin: str) -> None:
    urls = etcd_urls(cfg)
    for url in urls:
        if not re.fullmatch(r"https?://[^/\s]+(:[0-9]+)?/?", url):
            raise ConfigError(
                f"{origin}: etcd URL {url!r} is not http(s)://HOST:PORT "
                "(e.g. http://198.18.0.1:2379)"
            )
    stray = [k for k in ("etcd_ca", "etcd_cert", "etcd_key", "host_name") if getattr(cfg, k)]
    if stray and not urls:
        raise ConfigError(
            f"{origin}: {_names(stray)} only {'applies' if len(stray) == 1 else 'apply'} "
            "in cluster mode: give etcd (--etcd URL) as well, or drop "
            + ("it" if len(stray) == 1 else "them")
        )
    if bool(cfg.etcd_cert) != bool(cfg.etcd_key):
        raise ConfigError(f"{origin}: etcd_cert and etcd_key go together")
    if not cfg.etcd_prefix.startswith("/") or "//" in cfg.etcd_prefix:
        raise ConfigError(f"{origin}: etcd_prefix {cfg.etcd_prefix!r} must be an absolute key path")
    if cfg.host_name and not re.fullmatch(
        r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?", cfg.host_name
    ):
        raise ConfigError(
            f"{origin}: host_name {cfg.host_name!r} is not a DNS label (letters, digits, '-')"
        )
    if not 2 <= cfg.cluster_ttl <= 3600:
        raise ConfigError(f"{origin}: cluster_ttl {cfg.cluster_ttl} is not 2..3600 seconds")
    for up in dns_upstreams(cfg):
        host, _, port = up.rpartition(":") if up.count(":") == 1 else (up, "", "")
        try:
            ipaddress.ip_address(host.strip("[]") or up)
        except ValueError:
            raise ConfigError(
                f"{origin}: dns_upstreams entry {up!r} is not IP or IP:PORT"
            ) from None
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise ConfigError(f"{origin}: dns_upstreams entry {up!r} has a bad port")


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _names(keys: list[str]) -> str:
    """'a (--a)', 'a (--a) and b (--b)', 'a (--a), b (--b) and c (--c)'."""
    named = [f"{k} ({_flag(k)})" for k in keys]
    return ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]


def _validate_tcp(cfg: Config, origin: str) -> None:
    given = [k for k in TLS_KEYS if getattr(cfg, k)]
    if not cfg.listen:
        stray = given + (["insecure_tcp"] if cfg.insecure_tcp else [])
        if stray:
            raise ConfigError(
                f"{origin}: {_names(stray)} only {'applies' if len(stray) == 1 else 'apply'} "
                "to the TCP listener, which is off: give listen (--listen ADDRESS:PORT) "
                "as well, or drop " + ("it" if len(stray) == 1 else "them")
            )
        return
    parse_listen(cfg.listen, origin)
    if cfg.insecure_tcp:
        if given:
            raise ConfigError(
                f"{origin}: insecure_tcp (--insecure-tcp) contradicts {_names(given)}: "
                "drop insecure_tcp to serve TLS, or drop the TLS files to serve plaintext"
            )
        return
    missing = [k for k in TLS_KEYS if not getattr(cfg, k)]
    if missing:
        raise ConfigError(
            f"{origin}: listen {cfg.listen} serves the API over TCP, which needs TLS with "
            f"client certificates, but {_names(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not set. Give all three "
            "(docs/security.md shows how to make them), or add --insecure-tcp "
            "(insecure_tcp = true) to serve plaintext TCP, which anyone who reaches the "
            "port can use to rewire this host"
        )


def parse_listen(
    value: str,
    origin: str = "",
    *,
    key: str = "listen",
    example: str = "198.18.0.1:7443, [2001:db8::1]:7443 or 0.0.0.0:7443",
) -> tuple[str, int]:
    """``ADDRESS:PORT`` or ``[IPV6]:PORT`` -> (host, port). The host is an IP
    address or a DNS name; the port 1..65535 (not 0: clients must know it).
    ``key`` names the setting in the error."""

    def bad(why: str) -> NoReturn:
        raise ConfigError(
            f"{origin + ': ' if origin else ''}{key} {value!r} {why} "
            f"(expected ADDRESS:PORT, e.g. {example})"
        )

    host, sep, port_text = value.rpartition(":")
    if not sep or not host:
        bad("has no port")
    if host.startswith("[") and host.endswith("]"):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            bad(f"has {host[1:-1]!r} between brackets, which is not an IPv6 address")
        host = host[1:-1]
    elif ":" in host:
        bad("has an IPv6 address without brackets")
    else:
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            if not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
                bad(f"has {host!r}, which is neither an IP address nor a host name")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        bad(f"has port {port_text!r}, which is not 1..65535")
    return host, int(port_text)


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The TCP listener's TLS material, read once at start."""

    cert_chain: bytes
    private_key: bytes
    client_ca: bytes


def load_tls(cfg: Config) -> TlsFiles | None:
    """Read and check the TLS files of the TCP listener (None when TCP is
    off or plaintext): each is readable PEM, the key is unencrypted and
    belongs to the certificate, the CA file holds certificates. Raises
    ConfigError naming the file; nothing has been touched yet when it does."""
    if not cfg.listen or cfg.insecure_tcp:
        return None
    import ssl

    def encrypted() -> bytes:
        raise ConfigError(
            f"tls_key (--tls-key) {cfg.tls_key}: the key is encrypted; netplumbd needs it "
            "unencrypted and readable by root only "
            "(openssl pkey -in ENCRYPTED.key -out PLAIN.key; chmod 0600 PLAIN.key)"
        )

    files = TlsFiles(
        _read_pem(cfg, "tls_cert"), _read_pem(cfg, "tls_key"), _read_pem(cfg, "tls_client_ca")
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(cfg.tls_cert, cfg.tls_key, password=encrypted)
    except ssl.SSLError as e:
        raise ConfigError(
            f"tls_cert (--tls-cert) {cfg.tls_cert} and tls_key (--tls-key) {cfg.tls_key}: "
            f"not a certificate and its private key ({e.reason or e})"
        ) from None
    try:
        ctx.load_verify_locations(cafile=cfg.tls_client_ca)
    except ssl.SSLError as e:
        raise ConfigError(
            f"tls_client_ca (--tls-client-ca) {cfg.tls_client_ca}: "
            f"no CA certificate in it ({e.reason or e})"
        ) from None
    return files


def check_etcd_files(cfg: Config) -> None:
    """The etcd TLS files are readable PEM (cluster mode). Raises ConfigError
    naming the key; nothing has been touched yet when it does."""
    for key in ("etcd_ca", "etcd_cert", "etcd_key"):
        if getattr(cfg, key):
            _read_pem(cfg, key)


def _read_pem(cfg: Config, key: str) -> bytes:
    """The PEM file the setting ``key`` names. Raises ConfigError naming the
    key when it cannot be read or is not PEM."""
    path = getattr(cfg, key)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"{key} ({_flag(key)}) {path}: cannot read it: {e.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key} ({_flag(key)}) {path}: not a PEM file")
    return data


def summary(cfg: Config, path: str | None) -> str:
    """One line that says what the configuration amounts to."""
    parts = [
        f"from {path}" if path else "defaults and flags",
        f"socket {cfg.socket}",
        f"state in {cfg.state_dir}",
    ]
    if not cfg.listen:
        parts.append("TCP off")
    elif cfg.insecure_tcp:
        parts.append(f"TCP {cfg.listen} INSECURE plaintext")
    else:
        parts.append(f"TCP {cfg.listen} with TLS")
    parts.append(
        "metrics off" if cfg.metrics_address == "off" else f"metrics on {cfg.metrics_address}"
    )
    urls = etcd_urls(cfg)
    parts.append(f"cluster mode via {len(urls)} etcd endpoint(s)" if urls else "standalone")
    return "configuration OK: " + ", ".join(parts)


def from_args(args: argparse.Namespace) -> Config:
    cfg = load(args.config, check=False)
    # Every key has a flag of the same name (dest); None: not given.
    flags = {f.name: getattr(args, f.name) for f in fields(Config)}
    given = {k: v for k, v in flags.items() if v is not None}
    cfg = replace(cfg, **given)
    # The file and the flags are checked together: a file may name the TCP
    # listener and leave its TLS files to flags.
    if not args.config:
        origin = "command line"
    else:
        origin = f"{args.config} and the command line" if given else args.config
    validate(cfg, origin)
    return cfg


def log_level(cfg: Config) -> int:
    return int(getattr(logging, cfg.log_level.upper()))
