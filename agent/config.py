"""netplumbd configuration: defaults, a TOML file, then command-line flags
(flags win). Unknown keys and bad values are refused at start, by name."""

from __future__ import annotations

import argparse
import logging
import tomllib
from dataclasses import dataclass, fields, replace
from typing import Any

DEFAULT_SOCKET = "/run/netplumb/netplumbd.sock"
DEFAULT_STATE_DIR = "/var/lib/netplumb"
DEFAULT_OVSDB = "unix:/var/run/openvswitch/db.sock"
DEFAULT_DOCKER_URL = "unix:///var/run/docker.sock"
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


def load(path: str | None) -> Config:
    if not path:
        return Config()
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return _apply(Config(), doc, path)


def _apply(cfg: Config, doc: dict[str, Any], origin: str) -> Config:
    known = {f.name: f for f in fields(Config)}
    values: dict[str, Any] = {}
    for key, value in doc.items():
        name = key.replace("-", "_")
        if name not in known:
            raise ConfigError(f"{origin}: unknown key {key!r} (known: {', '.join(sorted(known))})")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{origin}: key {key!r} must be a non-empty string")
        values[name] = value
    cfg = replace(cfg, **values)
    validate(cfg, origin)
    return cfg


def validate(cfg: Config, origin: str) -> None:
    if cfg.log_level not in LOG_LEVELS:
        raise ConfigError(
            f"{origin}: log_level {cfg.log_level!r} is not one of {', '.join(LOG_LEVELS)}"
        )
    for key in ("socket", "state_dir"):
        if not getattr(cfg, key).startswith("/"):
            raise ConfigError(f"{origin}: {key} must be an absolute path")
    if cfg.ovs_datapath_type not in ("auto", "system", "netdev"):
        raise ConfigError(
            f"{origin}: ovs_datapath_type {cfg.ovs_datapath_type!r} is not auto, system or netdev"
        )
    if cfg.underlay_address:
        import ipaddress

        try:
            ipaddress.ip_address(cfg.underlay_address)
        except ValueError:
            raise ConfigError(
                f"{origin}: underlay_address {cfg.underlay_address!r} is not an IP address"
            ) from None


def from_args(args: argparse.Namespace) -> Config:
    cfg = load(args.config)
    flags = {
        "socket": args.socket,
        "socket_group": args.socket_group,
        "state_dir": args.state_dir,
        "ovsdb": args.ovsdb,
        "docker_url": args.docker_url,
        "log_level": args.log_level,
        "underlay_address": args.underlay_address,
        "ovs_datapath_type": args.ovs_datapath_type,
    }
    cfg = replace(cfg, **{k: v for k, v in flags.items() if v is not None})
    validate(cfg, "command line")
    return cfg


def log_level(cfg: Config) -> int:
    return int(getattr(logging, cfg.log_level.upper()))
