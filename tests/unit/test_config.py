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
    """Each key: a flag of its name, named in the --help epilog (made from
    Config), and in the example file as '#key = DEFAULT' under a comment."""
    flags = {a.dest for a in parser()._actions}
    help_text = " ".join(parser().format_help().split())
    lines = EXAMPLE.read_text().splitlines()
    for f in fields(config.Config):
        assert f.name in flags, f"no --{f.name.replace('_', '-')} flag"
        assert re.search(rf"\b{f.name}\b", EPILOG), f"{f.name} not in netplumbd --help"
        assert f"--{f.name.replace('_', '-')}" in help_text
        at = [i for i, line in enumerate(lines) if re.match(rf"#{f.name} = ", line)]
        assert len(at) == 1, f"{f.name}: {len(at)} '#{f.name} = ' lines in {EXAMPLE}"
        above = lines[at[0] - 1]
        assert above.startswith("# ") and len(above) > 5, f"{f.name} has no comment above it"


def test_the_example_shows_the_defaults(tmp_path: Path) -> None:
    """The example is valid as it stands, and with every key uncommented it
    is exactly the defaults: its '#key = value' lines cannot drift from
    Config."""
    assert config.load(str(EXAMPLE)) == config.Config()
    lines = [line[1:] for line in EXAMPLE.read_text().splitlines() if re.match(r"#\w+ = ", line)]
    on = tmp_path / "on.toml"
    on.write_text("\n".join(lines) + "\n")
    cfg = config.load(str(on))
    assert cfg == config.Config()
    assert {line.split(" = ")[0] for line in lines} == {f.name for f in fields(config.Config)}


def test_the_epilog_lists_the_keys_in_order() -> None:
    listed = re.search(r"\(keys: ([^)]*)\)", " ".join(EPILOG.split()))
    assert listed is not None
    assert listed.group(1).split(", ") == [f.name for f in fields(config.Config)]


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


# ------------------------------------------------- values refused by key name


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"metrics_address": "9464"}, "metrics_address '9464' has no port"),
        ({"metrics_address": ""}, "metrics_address '' has no port"),
        ({"metrics_address": "127.0.0.1:0"}, "metrics_address '127.0.0.1:0' has port '0'"),
        ({"metrics_address": "::1:9464"}, "metrics_address '::1:9464' has an IPv6 address"),
        ({"metrics_address": "Off"}, "metrics_address 'Off' has no port"),
        ({"ovsdb": "/var/run/openvswitch/db.sock"}, "ovsdb '/var/run/openvswitch/db.sock' is not"),
        ({"ovsdb": "ssl:198.18.0.1:6640"}, "ovsdb 'ssl:198.18.0.1:6640' is not"),
        ({"ovsdb": "tcp:198.18.0.1"}, "ovsdb 'tcp:198.18.0.1' is not unix:/PATH"),
        ({"ovsdb": "unix:db.sock"}, "ovsdb 'unix:db.sock' is not"),
        ({"docker_url": "/var/run/docker.sock"}, "docker_url '/var/run/docker.sock' is not"),
        ({"docker_url": "unix://docker.sock"}, "docker_url 'unix://docker.sock' is not"),
        ({"docker_url": "tcp://198.18.0.1"}, "docker_url 'tcp://198.18.0.1' is not"),
        ({"socket_group": "net plumb"}, "socket_group 'net plumb' is not a group name"),
        ({"state_dir": "var/lib/netplumb"}, "state_dir 'var/lib/netplumb' must be an absolute"),
    ],
)
def test_bad_values_are_refused_by_key(settings: dict[str, object], says: str) -> None:
    with pytest.raises(config.ConfigError) as e:
        config.validate(config.Config(**settings), "command line")  # type: ignore[arg-type]
    assert str(e.value).startswith("command line: ")
    assert says in str(e.value)


@pytest.mark.parametrize(
    "settings",
    [
        {"metrics_address": "off"},
        {"metrics_address": "0.0.0.0:9464"},
        {"metrics_address": "[2001:db8::1]:9464"},
        {"metrics_address": "localhost:9100"},
        {"ovsdb": "tcp:198.18.0.1:6640", "docker_url": "tcp://198.18.0.1:2375"},
        {"ovsdb": "tcp:[2001:db8::1]:6640", "docker_url": "http://198.18.0.1:2375/"},
        {"socket_group": "docker"},
        {"socket_group": ""},
    ],
)
def test_good_values(settings: dict[str, object]) -> None:
    config.validate(config.Config(**settings), "command line")  # type: ignore[arg-type]


def test_metrics_address() -> None:
    assert config.metrics_endpoint(config.Config()) == ("127.0.0.1", 9464)
    assert config.metrics_endpoint(config.Config(metrics_address="off")) is None
    assert config.metrics_endpoint(config.Config(metrics_address="[::1]:9100")) == ("::1", 9100)
    assert from_argv("--metrics-address", "off").metrics_address == "off"
    with pytest.raises(config.ConfigError, match=r"command line: metrics_address .*or off\)"):
        from_argv("--metrics-address", "127.0.0.1")


def test_a_file_value_is_refused_with_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "np.toml"
    path.write_text('metrics_address = "127.0.0.1:99999"\n')
    with pytest.raises(config.ConfigError) as e:
        config.load(str(path))
    assert str(e.value).startswith(f"{path}: metrics_address '127.0.0.1:99999'")
    path.write_text('metrics_adress = "off"\n')
    with pytest.raises(config.ConfigError, match=r"unknown key 'metrics_adress'.*metrics_address"):
        config.load(str(path))


def test_etcd_files_are_checked_by_key(pem: Path, tmp_path: Path) -> None:
    cluster = {"etcd": "https://198.18.0.1:2379"}
    config.check_etcd_files(config.Config(**cluster, etcd_ca=str(pem / "ca.crt")))
    with pytest.raises(config.ConfigError) as e:
        config.check_etcd_files(config.Config(**cluster, etcd_ca=str(tmp_path / "nope.crt")))
    assert f"etcd_ca (--etcd-ca) {tmp_path}/nope.crt: cannot read it" in str(e.value)
    with pytest.raises(config.ConfigError, match=r"etcd_key \(--etcd-key\) .*not a PEM file"):
        config.check_etcd_files(
            config.Config(**cluster, etcd_cert=str(pem / "s.crt"), etcd_key=str(pem / "junk.txt"))
        )


def test_summary_says_what_the_configuration_amounts_to() -> None:
    line = config.summary(config.Config(), None)
    assert line == (
        "configuration OK: defaults and flags, socket /run/netplumb/netplumbd.sock, "
        "state in /var/lib/netplumb, TCP off, metrics on 127.0.0.1:9464, standalone"
    )
    line = config.summary(
        config.Config(
            listen="198.18.0.1:7443",
            insecure_tcp=True,
            metrics_address="off",
            etcd="http://198.18.0.1:2379,http://198.18.0.2:2379",
        ),
        "/etc/netplumb/netplumbd.toml",
    )
    assert "from /etc/netplumb/netplumbd.toml" in line
    assert "TCP 198.18.0.1:7443 INSECURE plaintext" in line
    assert "metrics off" in line and "cluster mode via 2 etcd endpoint(s)" in line
    assert "\n" not in line


# -------------------------------------------------------------- --check-config


def check_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str
) -> tuple[int, str, str]:
    """netplumbd --check-config in-process, on paths under tmp_path that
    must stay untouched."""
    from netplumb.agent.daemon import main

    sock, state = tmp_path / "run" / "np.sock", tmp_path / "state"
    rc = main(["--socket", str(sock), "--state-dir", str(state), "--check-config", *argv])
    out, err = capsys.readouterr()
    assert not sock.parent.exists() and not state.exists(), "--check-config touched something"
    return rc, out, err


def test_check_config_accepts_a_good_configuration(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pem: Path
) -> None:
    rc, out, err = check_config(capsys, tmp_path, "--config", str(EXAMPLE))
    assert (rc, err) == (0, "")
    assert out.startswith(f"netplumbd: configuration OK: from {EXAMPLE}, socket {tmp_path}/run")
    assert out.count("\n") == 1
    tls = ["--tls-cert", str(pem / "s.crt"), "--tls-key", str(pem / "s.key")]
    rc, out, err = check_config(
        capsys,
        tmp_path,
        "--listen",
        "198.18.0.1:7443",
        *tls,
        "--tls-client-ca",
        str(pem / "ca.crt"),
        "--metrics-address",
        "off",
    )
    assert rc == 0, err
    assert "TCP 198.18.0.1:7443 with TLS, metrics off" in out


@pytest.mark.parametrize(
    ("toml", "argv", "says"),
    [
        ('log_level = "loud"\n', [], "log_level 'loud' is not one of"),
        ('metrics-address = "127.0.0.1"\n', [], "metrics_address '127.0.0.1' has no port"),
        ("cluster_ttl = 1\n", [], "cluster_ttl 1 is not 2..3600 seconds"),
        ("", ["--ovsdb", "db.sock"], "command line: ovsdb 'db.sock' is not"),
        (
            'listen = "127.0.0.1:7443"\n',
            ["--tls-cert", "/nonexistent/s.crt", "--tls-key", "/k", "--tls-client-ca", "/c"],
            "tls_cert (--tls-cert) /nonexistent/s.crt: cannot read it",
        ),
        (
            'etcd = "http://198.18.0.1:2379"\netcd_ca = "/nonexistent/ca.crt"\n',
            [],
            "etcd_ca (--etcd-ca) /nonexistent/ca.crt: cannot read it",
        ),
    ],
)
def test_check_config_names_the_key_at_fault(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, toml: str, argv: list[str], says: str
) -> None:
    path = tmp_path / "np.toml"
    path.write_text(toml)
    rc, out, err = check_config(capsys, tmp_path, "--config", str(path), *argv)
    assert rc == 2
    assert out == ""
    assert err.startswith("netplumbd: ") and says in err


def test_file_and_flags_are_checked_together(tmp_path: Path) -> None:
    """The file names the TCP listener, the flags its TLS files: valid
    together, though the file alone is not."""
    path = tmp_path / "np.toml"
    path.write_text('listen = "198.18.0.1:7443"\n')
    with pytest.raises(config.ConfigError, match=rf"^{path}: listen 198.18.0.1:7443 serves"):
        config.load(str(path))
    tls = ["--tls-cert", "/s.crt", "--tls-key", "/s.key", "--tls-client-ca", "/ca.crt"]
    cfg = from_argv("--config", str(path), *tls)
    assert (cfg.listen, cfg.tls_cert) == ("198.18.0.1:7443", "/s.crt")
    with pytest.raises(config.ConfigError, match=rf"^{path} and the command line: .*tls_client_ca"):
        from_argv("--config", str(path), *tls[:4])
    with pytest.raises(config.ConfigError, match=rf"^{path}: listen .*but tls_cert"):
        from_argv("--config", str(path))
