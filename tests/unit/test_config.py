"""netplumbd's configuration: TOML keys and flags in sync, the TCP listener's
settings refused by name when they do not fit together, and the TLS files
checked before anything is touched."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
from netplumb.agent import config
from netplumb.agent.daemon import EPILOG, parser

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "deploy" / "config" / "netplumbd.toml"


def from_argv(*argv: str) -> config.Config:
    return config.from_args(parser().parse_args(list(argv)))


def test_tcp_is_off_by_default() -> None:
    cfg = config.Config()
    assert (cfg.listen, cfg.insecure_tcp) == ("", False)
    assert config.load_tls(cfg) is None
    assert from_argv() == cfg


def test_every_key_is_a_flag_in_the_help_and_in_the_example() -> None:
    flags = {a.dest for a in parser()._actions}
    example = EXAMPLE.read_text()
    for f in fields(config.Config):
        assert f.name in flags, f"no --{f.name.replace('_', '-')} flag"
        assert re.search(rf"\b{f.name}\b", EPILOG), f"{f.name} not in netplumbd --help"
        assert re.search(rf"^#{f.name} = ", example, re.M), f"{f.name} not in {EXAMPLE}"


def test_the_example_config_loads_with_every_key_uncommented(tmp_path: Path) -> None:
    """The commented example is valid as it stands and with every setting
    turned on (its TCP settings are a consistent TLS set)."""
    assert config.load(str(EXAMPLE)) == config.Config()
    lines = [line[1:] for line in EXAMPLE.read_text().splitlines() if re.match(r"#\w+ = ", line)]
    on = tmp_path / "on.toml"
    on.write_text("\n".join(lines) + "\n")
    cfg = config.load(str(on))
    assert cfg.listen and cfg.tls_cert and cfg.tls_key and cfg.tls_client_ca
    assert cfg.insecure_tcp is False


def test_toml_keys_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "np.toml"
    path.write_text('listen = "127.0.0.1:7443"\ninsecure-tcp = true\n')
    cfg = config.load(str(path))
    assert (cfg.listen, cfg.insecure_tcp) == ("127.0.0.1:7443", True)
    # a flag wins over the file
    cfg = from_argv("--config", str(path), "--listen", "[2001:db8::1]:7000")
    assert (cfg.listen, cfg.insecure_tcp) == ("[2001:db8::1]:7000", True)
    # "" is the default of listen: off, as when the key is absent
    path.write_text('listen = ""\n')
    assert config.load(str(path)) == config.Config()


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('insecure_tcp = "yes"', "key 'insecure_tcp' must be true or false"),
        ("listen = 7443", "key 'listen' must be a non-empty string"),
        ('socket = ""', "key 'socket' must be a non-empty string"),
        ('tls_cert = "/etc/netplumb/tls/server.crt"', "only applies to the TCP listener"),
        ('lisen = "127.0.0.1:7443"', "unknown key 'lisen'"),
    ],
)
def test_bad_toml_is_refused_by_name(tmp_path: Path, toml: str, says: str) -> None:
    path = tmp_path / "np.toml"
    path.write_text(toml + "\n")
    with pytest.raises(config.ConfigError, match=re.escape(says)) as e:
        config.load(str(path))
    assert str(path) in str(e.value)


TLS = {"tls_cert": "/s.crt", "tls_key": "/s.key", "tls_client_ca": "/ca.crt"}


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        (
            {"listen": "127.0.0.1:7443"},
            "command line: listen 127.0.0.1:7443 serves the API over TCP, which needs TLS with "
            "client certificates, but tls_cert (--tls-cert), tls_key (--tls-key) and "
            "tls_client_ca (--tls-client-ca) are not set",
        ),
        (
            {"listen": "127.0.0.1:7443", "tls_cert": "/s.crt", "tls_key": "/s.key"},
            "but tls_client_ca (--tls-client-ca) is not set",
        ),
        ({"tls_key": "/s.key"}, "tls_key (--tls-key) only applies to the TCP listener"),
        (
            {**TLS, "insecure_tcp": True},
            "tls_cert (--tls-cert), tls_key (--tls-key), tls_client_ca (--tls-client-ca) and "
            "insecure_tcp (--insecure-tcp) only apply to the TCP listener, which is off",
        ),
        (
            {"listen": "0.0.0.0:7443", "insecure_tcp": True, "tls_cert": "/s.crt"},
            "insecure_tcp (--insecure-tcp) contradicts tls_cert (--tls-cert)",
        ),
    ],
)
def test_tcp_settings_that_do_not_fit_are_refused(settings: dict[str, object], says: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.validate(config.Config(**settings), "command line")  # type: ignore[arg-type]
    assert says in str(e.value)


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"listen": "127.0.0.1:7443", **TLS},
        {"listen": "127.0.0.1:7443", "insecure_tcp": True},
    ],
)
def test_tcp_settings_that_fit(settings: dict[str, object]) -> None:
    config.validate(config.Config(**settings), "command line")  # type: ignore[arg-type]


def test_the_refusal_says_what_to_do() -> None:
    with pytest.raises(config.ConfigError) as e:
        from_argv("--listen", "198.18.0.1:7443")
    message = str(e.value)
    assert "docs/security.md" in message
    assert "--insecure-tcp" in message


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("127.0.0.1:7443", ("127.0.0.1", 7443)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("[2001:db8::1]:65535", ("2001:db8::1", 65535)),
        ("[::]:7443", ("::", 7443)),
        ("localhost:7443", ("localhost", 7443)),
        ("np-1.example:7443", ("np-1.example", 7443)),
    ],
)
def test_listen_addresses(value: str, parsed: tuple[str, int]) -> None:
    assert config.parse_listen(value) == parsed


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("127.0.0.1", "has no port"),
        (":7443", "has no port"),
        ("127.0.0.1:0", "which is not 1..65535"),
        ("127.0.0.1:65536", "which is not 1..65535"),
        ("127.0.0.1:http", "which is not 1..65535"),
        ("2001:db8::1:7443", "IPv6 address without brackets"),
        ("[198.18.0.1]:7443", "which is not an IPv6 address"),
        ("198.18.0.256:7443", "neither an IP address nor a host name"),
        ("a b:7443", "neither an IP address nor a host name"),
        ("-x:7443", "neither an IP address nor a host name"),
    ],
)
def test_bad_listen_addresses(value: str, says: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.parse_listen(value, "command line")
    assert says in str(e.value)
    assert "expected ADDRESS:PORT" in str(e.value)


# ---------------------------------------------------------------- TLS files


def openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, a certificate it signed with its key, another key, the key
    encrypted, and a file that is not PEM."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("pem")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"]
    openssl("req", "-x509", *ec, "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.crt", "-subj", "/CN=ca")
    openssl(
        "req", "-x509", *ec, "-keyout", f"{d}/s.key", "-out", f"{d}/s.crt", "-subj", "/CN=s",
        "-CA", f"{d}/ca.crt", "-CAkey", f"{d}/ca.key",
    )  # fmt: skip
    openssl(
        "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", f"{d}/o.key"
    )
    openssl("pkey", "-in", f"{d}/s.key", "-aes256", "-passout", "pass:x", "-out", f"{d}/enc.key")
    (d / "junk.txt").write_text("not a certificate\n")
    return d


def tls_config(d: Path, **override: str) -> config.Config:
    files = {"tls_cert": "s.crt", "tls_key": "s.key", "tls_client_ca": "ca.crt", **override}
    return config.Config(listen="127.0.0.1:7443", **{k: str(d / v) for k, v in files.items()})


def test_good_tls_files_are_read(pem: Path) -> None:
    tls = config.load_tls(tls_config(pem))
    assert tls is not None
    assert tls.cert_chain == (pem / "s.crt").read_bytes()
    assert tls.private_key == (pem / "s.key").read_bytes()
    assert tls.client_ca == (pem / "ca.crt").read_bytes()
    assert config.load_tls(config.Config(listen="127.0.0.1:7443", insecure_tcp=True)) is None


@pytest.mark.parametrize(
    ("override", "says"),
    [
        ({"tls_cert": "missing.crt"}, "tls_cert (--tls-cert) {d}/missing.crt: cannot read it"),
        ({"tls_client_ca": "junk.txt"}, "tls_client_ca (--tls-client-ca) {d}/junk.txt: not a PEM"),
        ({"tls_key": "o.key"}, "not a certificate and its private key"),
        ({"tls_key": "enc.key"}, "the key is encrypted"),
        ({"tls_client_ca": "s.key"}, "no CA certificate in it"),
    ],
)
def test_bad_tls_files_are_refused_by_name(pem: Path, override: dict[str, str], says: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.load_tls(tls_config(pem, **override))
    assert says.format(d=pem) in str(e.value)
