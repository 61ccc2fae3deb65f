"""deploy/install.sh (what `make install` runs) into a scratch root: a
virtualenv with netplumb and its pinned dependencies, the commands on the
PATH, the configuration, the unit (verified by systemd), the group. Every
install builds a new virtualenv beside the one in use and switches the link
opt/netplumb/venv to it only once the new netplumbd accepts the
configuration: a configuration it refuses changes nothing at all. Run again
it keeps what it must keep; --uninstall removes what it made and nothing
else; --purge also the configuration, the state and the group.

Three installs, each building a virtualenv (about 20 s apiece here)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest
from fixtures.host import require_root, run

REPO = Path(__file__).resolve().parents[2]
INSTALL = str(REPO / "deploy" / "install.sh")
COMMANDS = ("netplumbd", "netplumb", "pipework")
GROUP_FILES = ("etc/group", "etc/gshadow", "etc/group-", "etc/gshadow-")


def _require(program: str) -> None:
    if shutil.which(program) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{program} is not installed (deploy/setup-dev.sh installs it)")
        pytest.skip(f"{program} is not installed")


def install(*args: str) -> subprocess.CompletedProcess[str]:
    # Building the virtualenv downloads the dependencies: minutes at worst.
    return run(INSTALL, *args, check=False, timeout=600)


def snapshot(root: Path, venvs: bool = False) -> dict[str, str]:
    """Every path under ``root`` -> what it is (a link's target, a file's
    mode and digest, a directory's mode); the inside of the virtualenvs
    (opt/netplumb/venv-*) only with ``venvs``."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(root))
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(path)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = f"dir {st.st_mode & 0o7777:o}"
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
                out[rel] = f"file {st.st_mode & 0o7777:o} {digest}"
        if not venvs and Path(dirpath) == root / "opt" / "netplumb":
            dirnames[:] = [d for d in dirnames if not d.startswith("venv-")]
    return out


def host_view() -> dict[str, bool]:
    """What an installation on this host would have made."""
    paths = ["/opt/netplumb", "/etc/netplumb", "/etc/systemd/system/netplumbd.service"]
    paths += [f"/usr/local/bin/{c}" for c in COMMANDS]
    view = {p: os.path.lexists(p) for p in paths}
    view["group netplumb"] = "\nnetplumb:" in "\n" + Path("/etc/group").read_text()
    return view


def seed(root: Path) -> None:
    """A root with the host's group files (without a netplumb group) and
    files of other software where netplumb installs its own."""
    for rel in GROUP_FILES:
        src = Path("/") / rel
        lines = src.read_text().splitlines(keepends=True) if src.exists() else []
        dst = root / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_text("".join(line for line in lines if not line.startswith("netplumb:")))
        os.chmod(dst, 0o640 if "gshadow" in rel else 0o644)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/local/bin/other-tool").write_text("#!/bin/sh\n")
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/other.service").write_text("[Service]\nExecStart=/bin/true\n")


def pins() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    return {norm(d.split("==")[0]): d.split("==")[1] for d in deps}


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def venv_dirs(opt: Path) -> list[str]:
    return sorted(p.name for p in opt.glob("venv-*"))


VENV_NAME = re.compile(r"venv-\d{8}T\d{6}Z(-\d+)?")


def test_help_shows_examples() -> None:
    res = install("--help")
    assert res.returncode == 0
    assert "examples:" in res.stdout and "--purge" in res.stdout and "--root" in res.stdout
    res = install("--purge")
    assert res.returncode == 1 and "--purge goes with --uninstall" in res.stderr


def test_install_upgrade_and_uninstall_in_a_scratch_root() -> None:
    require_root()
    for program in ("systemd-analyze", "groupadd", "groupdel", "flock"):
        _require(program)
    on_host = host_view()
    root = Path(tempfile.mkdtemp(prefix="netplumb-install-", dir="/tmp"))
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        seed(root)
        before = snapshot(root)
        opt = root / "opt/netplumb"
        venv = opt / "venv"
        bin_ = root / "usr/local/bin"
        config = root / "etc/netplumb/netplumbd.toml"
        unit = root / "etc/systemd/system/netplumbd.service"

        # Another program's pipework is in the way: refused, nothing made.
        (bin_ / "pipework").write_text("#!/bin/sh\n")
        res = install("--root", str(root))
        assert res.returncode == 1
        assert f"{bin_}/pipework exists and is not netplumb's" in res.stderr
        assert "mv " in res.stderr  # says what to do
        (bin_ / "pipework").unlink()
        assert snapshot(root) == before

        # What an install of the old layout left: its virtualenv a directory
        # at opt/netplumb/venv (a stand-in that must not be run), and the list
        # of the directories it made.
        (venv / "bin").mkdir(parents=True)
        (venv / "bin/netplumbd").write_text("#!/bin/sh\nexit 3\n")
        (opt / ".made-dirs").write_text(f"{root}/opt\n")
        res = install("--root", str(root))
        assert res.returncode == 0, res.stdout + res.stderr

        # The link to a new versioned virtualenv; the old directory is gone.
        first = os.readlink(venv)
        assert VENV_NAME.fullmatch(first), first
        assert venv_dirs(opt) == [first]
        assert f"removed the previous virtualenv {opt}/venv-old" in res.stdout
        # Built at its final path: the scripts name its interpreter.
        shebang = (opt / first / "bin/netplumbd").read_text().splitlines()[0]
        assert shebang == f"#!{opt}/{first}/bin/python"

        # The commands, linked through opt/netplumb/venv, run from it.
        for c in COMMANDS:
            assert os.readlink(bin_ / c) == f"{venv}/bin/{c}"
        version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
        assert run(f"{bin_}/netplumbd", "--version").stdout.strip() == f"netplumbd {version}"
        assert "examples" in run(f"{bin_}/netplumb", "--help").stdout
        assert "pipework route GUEST" in run(f"{bin_}/pipework", "--help").stdout
        res = run(f"{bin_}/netplumbd", "--check-config", "--config", str(config))
        assert "configuration OK" in res.stdout
        # A copy of the code (not this checkout's link tree), and the pins.
        python = str(venv / "bin/python")
        where = run(python, "-c", "import netplumb.agent as a; print(a.__file__)").stdout.strip()
        assert os.path.realpath(where).startswith(f"{opt}/{first}/lib/"), where
        listing = run(
            python,
            "-c",
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))",
        ).stdout
        installed = {norm(k): v for k, v in json.loads(listing).items()}
        for name, pinned in pins().items():
            assert installed.get(name) == pinned, (name, installed.get(name), pinned)

        # The default configuration, the unit and the documentation it names.
        assert config.read_bytes() == (REPO / "deploy/config/netplumbd.toml").read_bytes()
        assert stat.S_IMODE(config.stat().st_mode) == 0o644
        text = unit.read_text()
        assert f"ExecStart={venv}/bin/netplumbd --config {config}\n" in text
        res = run("systemd-analyze", "verify", str(unit), check=False)
        assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stderr
        docs = re.findall(r"file://(\S+)", re.search(r"Documentation=(.*)", text).group(1))  # type: ignore[union-attr]
        assert docs and all(Path(d).is_file() and d.startswith(str(root)) for d in docs), docs
        groups = [
            g for g in (root / "etc/group").read_text().splitlines() if g.startswith("netplumb:")
        ]
        assert len(groups) == 1 and int(groups[0].split(":")[2]) < 1000, groups  # a system group

        # Again, over a configuration the new version refuses: it says which
        # key, and nothing changes, not a byte of the virtualenv in use.
        default = config.read_text()
        config.write_text(default + "no_such_key = 1\n")
        whole = snapshot(root, venvs=True)
        res = install("--root", str(root))
        assert res.returncode == 1, res.stdout + res.stderr
        assert "unknown key 'no_such_key'" in res.stderr
        assert (
            f"nothing was changed: the installed version stays in use ({venv} is {opt}/{first})"
            in res.stderr
        )
        assert "then run this again" in res.stderr  # says what to do
        assert snapshot(root, venvs=True) == whole

        # Again, over an edited configuration that suits it: kept; the link
        # goes to a new virtualenv and the previous one is removed, but not
        # one that a process still runs from; nothing else changes.
        config.write_text(default + 'log_level = "debug"\n')
        stale = opt / "venv-20000101T000000Z"
        (stale / "bin").mkdir(parents=True)
        (stale / "bin/python").symlink_to(os.path.realpath(sys.executable))
        sleeper = subprocess.Popen([stale / "bin/python", "-c", "import time; time.sleep(600)"])
        edited = snapshot(root)
        res = install("--root", str(root))
        assert res.returncode == 0, res.stdout + res.stderr
        assert f"kept {config}" in res.stdout
        second = os.readlink(venv)
        assert VENV_NAME.fullmatch(second) and second != first, second
        assert venv_dirs(opt) == sorted([second, stale.name])
        assert f"removed the previous virtualenv {opt}/{first}" in res.stdout
        assert f"kept {stale}: process {sleeper.pid} still runs from it" in res.stdout
        expected = {k.replace(first, second): v for k, v in edited.items()}
        expected["opt/netplumb/venv"] = f"-> {second}"
        assert snapshot(root) == expected
        assert run(f"{bin_}/netplumbd", "--version").stdout.strip() == f"netplumbd {version}"
        sleeper.kill()
        sleeper.wait()

        # Uninstall: every virtualenv and the link go; the configuration and
        # the group stay.
        res = install("--uninstall", "--root", str(root))
        assert res.returncode == 0, res.stdout + res.stderr
        after = snapshot(root)
        assert set(after) - set(before) == {"etc/netplumb", "etc/netplumb/netplumbd.toml"}
        assert set(before) - set(after) == set()
        changed = {k for k in before if before[k] != after[k]}
        assert changed <= set(GROUP_FILES), changed
        assert "netplumb:" in (root / "etc/group").read_text()

        # --purge: back to what was there before, to the byte.
        (root / "var/lib/netplumb").mkdir(parents=True)
        (root / "var/lib/netplumb/state.json").write_text("{}")
        res = install("--uninstall", "--purge", "--root", str(root))
        assert res.returncode == 0, res.stdout + res.stderr
        final = snapshot(root)
        backups = {"etc/group-", "etc/gshadow-"}  # groupdel rewrites its backups
        final_dirs = {k for k in set(final) - set(before) if final[k].startswith("dir")}
        assert final_dirs == {"var", "var/lib"}  # made above by the test, not by install.sh
        assert {k: v for k, v in final.items() if k not in backups | final_dirs} == {
            k: v for k, v in before.items() if k not in backups
        }
        res = install("--uninstall", "--purge", "--root", str(root))
        assert res.returncode == 0 and snapshot(root) == final  # nothing left to do
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        shutil.rmtree(root, ignore_errors=True)
        assert host_view() == on_host  # the real paths were never touched
