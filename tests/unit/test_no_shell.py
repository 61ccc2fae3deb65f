"""No shell command is ever built from request data: nothing under agent/ or
cli/ runs a shell at all. An AST walk of every source file refuses
``shell=`` (anything but a literal False), ``os.system``, ``os.popen``,
``subprocess.getoutput``/``getstatusoutput``,
``asyncio.create_subprocess_shell`` (called, imported or aliased), and
argument lists that start ``sh -c`` (or bash, dash, zsh)."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("agent", "cli")
FORBIDDEN = {
    "os": {"system", "popen"},
    "subprocess": {"getoutput", "getstatusoutput"},
    "asyncio": {"create_subprocess_shell"},
}
SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "busybox"}


def _dotted(node: ast.expr) -> str:
    """'os.system' for os.system, 'system' for a bare name, '' otherwise."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else ""
    return ""


def shell_uses(source: str, filename: str = "<source>") -> list[str]:
    """Every shell use in ``source``, as 'file:line: what'."""
    tree = ast.parse(source, filename)
    # Names bound to a forbidden function or module: `from os import system
    # as run`, `import subprocess as sp`.
    modules = {m: m for m in FORBIDDEN}
    functions: dict[str, str] = {}
    found: list[str] = []
    callees = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}

    def report(node: ast.AST, what: str) -> None:
        found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in FORBIDDEN:
                    modules[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.ImportFrom) and node.module in FORBIDDEN:
            for alias in node.names:
                if alias.name in FORBIDDEN[node.module] or alias.name == "*":
                    functions[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                    report(node, f"imports {node.module}.{alias.name}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func)
            head, _, attr = name.rpartition(".")
            if head in modules and attr in FORBIDDEN[modules[head]]:
                report(node, f"calls {modules[head]}.{attr}")
            elif name in functions:
                report(node, f"calls {functions[name]}")
            for kw in node.keywords:
                if kw.arg == "shell" and not (
                    isinstance(kw.value, ast.Constant) and kw.value.value is False
                ):
                    report(node, f"passes shell={ast.unparse(kw.value)}")
        elif isinstance(node, ast.Attribute):
            base = _dotted(node.value)
            # a callee is reported as a call above; this catches `run = os.system`
            if (
                base in modules
                and node.attr in FORBIDDEN[modules[base]]
                and id(node) not in callees
            ):
                report(node, f"refers to {modules[base]}.{node.attr}")
        elif isinstance(node, ast.List | ast.Tuple):
            items = [e.value if isinstance(e, ast.Constant) else None for e in node.elts]
            for first, second in itertools.pairwise(items):
                if isinstance(first, str) and first.rsplit("/", 1)[-1] in SHELLS:
                    if second == "-c":
                        report(node, f"runs {first} -c")
    return found


def sources() -> list[Path]:
    files = sorted(p for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    return [p for p in files if "__pycache__" not in p.parts]


def test_no_shell_anywhere_in_agent_and_cli() -> None:
    files = sources()
    assert len(files) > 20, f"found only {len(files)} files under {SOURCES} in {ROOT}"
    found = [
        use for path in files for use in shell_uses(path.read_text(), str(path.relative_to(ROOT)))
    ]
    assert not found, "a shell is run here; pass an argument list instead:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run('ip link', shell=True)",
        "import subprocess\nsubprocess.Popen(cmd, shell=flag)",
        "import os\nos.system('ip link del ' + name)",
        "import os\nos.popen('ip -j link').read()",
        "import subprocess as sp\nsp.getoutput('ovs-vsctl show')",
        "import subprocess\nsubprocess.getstatusoutput(cmd)",
        "from os import system\nsystem(cmd)",
        "from os import popen as p\np(cmd)",
        "from subprocess import getoutput",
        "import asyncio\nasyncio.create_subprocess_shell(cmd)",
        "import os\nrun = os.system",
        "import subprocess\nsubprocess.run(['/bin/sh', '-c', cmd])",
        "import subprocess\nsubprocess.run(('bash', '-c', cmd))",
        "import os\nos.execv('/bin/sh', ['sh', '-c', cmd])",
    ],
)
def test_the_check_catches(snippet: str) -> None:
    assert shell_uses(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "import subprocess\nsubprocess.run(['ip', '-j', 'link'], check=True)",
        "import subprocess\nsubprocess.run(argv, shell=False)",
        "import os\nos.path.join('a', 'b')",
        "system = 'linux'\nprint(system)",
        "def f(os):\n    return os.getpid()",
        "argv = ['ip', 'netns', 'exec', ns, 'ping', '-c', '1', addr]",
    ],
)
def test_the_check_lets_through(snippet: str) -> None:
    assert shell_uses(snippet) == [], snippet
