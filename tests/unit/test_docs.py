"""The docs stay true to the code and to each other:

- the generated pages (docs/cli.md, docs/api.md, docs/configuration.md) are
  what docs/gen.py makes from the code now ("run make docs" otherwise);
- README.zh-CN.md has README.md's sections, commands and links;
- every relative link in README*.md and docs/*.md reaches an existing file
  (and heading, for links with #anchor);
- every netplumb, netplumbd and pipework command written in them is one the
  programs accept (parsed by the real parsers, sent to no daemon).

The Markdown checkers are tested on bad input too, so each check can fail.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib.util
import io
import re
import shlex
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
README_ZH = ROOT / "README.zh-CN.md"


def _load_gen() -> Any:
    spec = importlib.util.spec_from_file_location("netplumb_docs_gen", ROOT / "docs" / "gen.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gen = _load_gen()


def doc_files() -> list[Path]:
    return sorted(ROOT.glob("README*.md")) + sorted((ROOT / "docs").glob("*.md"))


# ------------------------------------------------------------ Markdown


FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)[^\n]*$")


def split_fences(text: str) -> tuple[list[tuple[str, str]], str]:
    """(fenced code blocks as (language, content), the prose with each block
    replaced by an empty line)."""
    blocks: list[tuple[str, str]] = []
    prose: list[str] = []
    fence = ""
    lang = ""
    body: list[str] = []
    for line in text.split("\n"):
        m = FENCE.match(line)
        if not fence and m:
            fence, lang, body = m.group(2), m.group(3), []
        elif fence and line.strip().startswith(fence) and not line.strip().strip(fence[0]):
            blocks.append((lang, "\n".join(body)))
            prose.append("")
            fence = ""
        elif fence:
            body.append(line)
        else:
            prose.append(line)
    if fence:
        raise AssertionError(f"an unclosed {fence} block")
    return blocks, "\n".join(prose)


def headings(text: str) -> list[tuple[int, str]]:
    _, prose = split_fences(text)
    out = []
    for line in prose.split("\n"):
        m = re.match(r"^(#{1,6})\s+(.+?)\s*#*\s*$", line)
        if m:
            out.append((len(m.group(1)), m.group(2)))
    return out


def anchors(text: str) -> set[str]:
    """GitHub's anchors of a page's headings (a repeated one gets -1, -2 ...)."""
    seen: Counter[str] = Counter()
    out = set()
    for _, title in headings(text):
        base = gen.slug(title)
        out.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return out


def _without_inline_code(prose: str) -> str:
    return re.sub(r"(`+)(.+?)\1", "", prose, flags=re.S)


def inline_code(text: str) -> list[str]:
    _, prose = split_fences(text)
    return [" ".join(m.group(2).split()) for m in re.finditer(r"(`+)(.+?)\1", prose, flags=re.S)]


def links(text: str) -> list[str]:
    _, prose = split_fences(text)
    prose = _without_inline_code(prose)
    return [m.group(1) for m in re.finditer(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)]


def broken_links(path: Path, text: str) -> list[str]:
    """Relative links of one page that reach no file, or no heading of it."""
    bad = []
    for target in links(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:, file:
            continue
        file_part, _, anchor = target.partition("#")
        if not file_part:  # a heading of this page
            if anchor not in anchors(text):
                bad.append(f"{target}: this page has no heading with that anchor")
            continue
        dest = (path.parent / file_part).resolve()
        if not dest.exists():
            bad.append(f"{target}: {dest} does not exist")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
            bad.append(f"{target}: {dest.name} has no heading with the anchor #{anchor}")
    return bad


def strip_comments(block: str) -> list[str]:
    """A code block's lines without comments (shell '#', Python '#') and
    blank lines: what must be the same in a translation."""
    out = []
    for line in block.split("\n"):
        code = re.sub(r"(^|\s)#.*$", "", line).rstrip()
        if code.strip():
            out.append(code)
    return out


def translation_differences(original: str, translation: str) -> list[str]:
    """How a translated README departs from the original, in what must stay
    the same: code blocks (comments aside), sections, links, inline code."""
    diffs = []
    a_blocks, _ = split_fences(original)
    b_blocks, _ = split_fences(translation)
    a_code = [strip_comments(b) for _, b in a_blocks]
    b_code = [strip_comments(b) for _, b in b_blocks]
    if len(a_code) != len(b_code):
        diffs.append(f"{len(a_code)} code blocks in the original, {len(b_code)} in the translation")
    for i, (x, y) in enumerate(zip(a_code, b_code, strict=False), start=1):
        if x != y:
            diff = "\n".join(difflib.unified_diff(x, y, "original", "translation", lineterm=""))
            diffs.append(f"code block {i} differs:\n{diff}")
    a_levels = Counter(level for level, _ in headings(original))
    b_levels = Counter(level for level, _ in headings(translation))
    if a_levels != b_levels:
        diffs.append(
            f"sections by level: original {dict(sorted(a_levels.items()))}, "
            f"translation {dict(sorted(b_levels.items()))}"
        )
    if links(original) != links(translation):
        diffs.append(f"links: original {links(original)}, translation {links(translation)}")
    missing = set(inline_code(original)) - set(inline_code(translation))
    extra = set(inline_code(translation)) - set(inline_code(original))
    if missing:
        diffs.append(f"inline code missing from the translation: {sorted(missing)}")
    if extra:
        diffs.append(f"inline code not in the original: {sorted(extra)}")
    return diffs


# ---------------------------------------------------- documented commands

PROGRAMS = ("netplumb", "netplumbd", "pipework")
_IPV6_LITERAL = re.compile(r"\[[0-9A-Fa-f:.]+\](:\d+)?")
_PLACEHOLDER = re.compile(r"(^|[=:@|/])[A-Z][A-Z_]*[A-Z]($|[=:@|/\[])|^[A-Z]$|=[A-Z]$")
_SEPARATORS = {"|", "||", "&&", ";", "&", ">", ">>", "2>&1"}


def commands_in(text: str) -> list[tuple[str, bool]]:
    """(command line, in inline code?) of a page's shell code blocks, joined
    across backslash-newlines, of the indented examples in its ```text
    blocks, and of its inline code."""
    blocks, prose = split_fences(text)
    lines: list[tuple[str, bool]] = []
    for lang, body in blocks:
        if lang not in ("", "text", "sh", "shell", "bash", "console"):
            continue
        for ln in re.sub(r"\\\n\s*", " ", body).split("\n"):
            # program output (```text: --help) holds commands only as
            # examples indented a little; its other lines are prose
            if lang != "text" or re.match(r" {1,4}\S", ln):
                lines.append((ln, False))
    for code in inline_code(prose):
        lines += [(part, True) for part in code.split(";")]
    return lines


def argv_of(line: str) -> list[str] | None:
    """The argument list of a netplumb/netplumbd/pipework command on this
    line, without prompts, wrappers (sudo, ip netns exec NS, lab.py exec H
    --, VAR=value), comments and what follows a pipe; None for other lines
    and for synopses (usage lines with [OPTIONAL] parts, ..., COMMAND)."""
    line = re.sub(r"^\s*(\$|#|\[\w+\]\$|\w+[#$])\s+(?=\S)", "", line)
    try:
        words = shlex.split(line, comments=True)
    except ValueError:
        return None
    for i, w in enumerate(words):
        if w in _SEPARATORS:
            words = words[:i]
            break
    while words:
        if words[0] == "sudo" or re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            words = words[1:]
        elif words[:3] == ["ip", "netns", "exec"]:
            words = words[4:]
        elif "--" in words and any(w.endswith("lab.py") for w in words[: words.index("--")]):
            words = words[words.index("--") + 1 :]
        else:
            break
    if not words or Path(words[0]).name not in PROGRAMS:
        return None
    for w in words[1:]:
        if (w.startswith("[") and not _IPV6_LITERAL.fullmatch(w)) or "..." in w:
            return None
        if _PLACEHOLDER.search(w):  # NAME, netns:NAME, --vni=N, ADDRESS|NAME
            return None
    return [Path(words[0]).name, *words[1:]]


class _Sent(Exception):
    """The command got as far as calling the daemon."""


class _NoDaemon:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        def call(*_: Any, **__: Any) -> Any:
            raise _Sent(name)

        return call


@functools.cache
def _parsers() -> tuple[Any, Any]:
    """netplumb's and netplumbd's parsers, built once (argparse parsers can
    parse again and again)."""
    from netplumb.agent.daemon import parser
    from netplumb.cli.main import build_parser

    return build_parser(io.StringIO()), parser()


@functools.cache
def refusal(argv: tuple[str, ...]) -> str:
    """Why the program refuses this command line ("" if it accepts it)."""
    prog, args = argv[0], list(argv[1:])
    err = io.StringIO()
    if prog == "netplumb":
        from netplumb.cli.main import UsageError, _dispatch, _ParserExit

        try:
            parsed = _parsers()[0].parse_args(args)
            if parsed.command != "doctor":  # doctor runs on this host: parsing is the check
                # the checks made before calling the daemon; the call itself is not made
                _dispatch(_NoDaemon(), parsed)
        except UsageError as e:
            return f"exit 2: {e}"
        except (_ParserExit, _Sent):
            return ""
        return ""
    if prog == "pipework":
        from netplumb.cli import pipework

        try:
            pipework.parse(args)
        except pipework.UsageError as e:
            return str(e)
        return ""
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            _parsers()[1].parse_args(args)
    except SystemExit as e:
        return "" if e.code == 0 else err.getvalue().strip()
    return ""


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("rel", sorted(gen.GENERATED))
def test_generated_docs_are_current(rel: str) -> None:
    path = ROOT / rel
    want = gen.GENERATED[rel]()
    have = path.read_text() if path.exists() else ""
    if have != want:
        diff = "\n".join(
            list(
                difflib.unified_diff(
                    have.split("\n"), want.split("\n"), rel, "from the code", lineterm=""
                )
            )[:40]
        )
        pytest.fail(f"{rel} is stale: run 'make docs' and commit it\n{diff}")


def test_readme_translation_has_the_same_commands_sections_and_links() -> None:
    original, translation = README.read_text(), README_ZH.read_text()
    diffs = translation_differences(original, translation)
    first = translation.split("\n", 3)[:3]
    m = re.search(r"README\.md[^\n]*?\b([0-9a-f]{7,40})\b", "\n".join(first))
    assert m, "README.zh-CN.md must say at its top which README.md commit it translates"
    assert not diffs, (
        "README.zh-CN.md is out of step with README.md: update the translation "
        f"(git diff {m.group(1)} -- README.md shows what changed since it was made):\n- "
        + "\n- ".join(diffs)
    )


def test_relative_links_reach_existing_files_and_headings() -> None:
    bad = [
        f"{p.relative_to(ROOT)}: {b}" for p in doc_files() for b in broken_links(p, p.read_text())
    ]
    assert not bad, "broken links:\n" + "\n".join(bad)


def test_documented_commands_are_accepted_by_the_programs() -> None:
    checked = 0
    bad = []
    for path in doc_files():
        for line, inline in commands_in(path.read_text()):
            argv = argv_of(line)
            if argv is None:
                continue
            checked += 1
            why = refusal(tuple(argv))
            # `netplumb peer add` in a sentence names a command, it does not run one
            if why and not (
                inline
                and re.search(
                    r"arguments are required|missing arguments|expected one argument", why
                )
            ):
                bad.append(f"{path.relative_to(ROOT)}: {shlex.join(argv)}\n    {why}")
    assert checked > 100, f"only {checked} commands found: is the extraction broken?"
    assert not bad, "commands the programs refuse:\n" + "\n".join(bad)


# The checkers themselves, on bad input: each must report it.


def test_the_link_checker_finds_missing_files_and_anchors(tmp_path: Path) -> None:
    page = ROOT / "docs" / "example.md"  # never written: only its folder matters
    text = (
        "# Title\n\n## Second part\n\n"
        "[ok](#second-part) [ok](../README.md) [ok](https://example.com/x) `[no](nowhere.md)`\n"
        "[bad](nowhere.md) [bad](#third-part) [bad](../README.md#no-such-heading)\n"
        "```\n[not a link](in-code.md)\n```\n"
    )
    found = broken_links(page, text)
    assert len(found) == 3, found
    assert "nowhere.md" in found[0]
    assert "#third-part" in found[1]
    assert "no-such-heading" in found[2]


def test_the_translation_check_finds_changed_commands_and_sections() -> None:
    original = "# A\n\n```\nnetplumb ls        # list\n```\n\n## B\n\nrun `make test`, see [x](docs/x.md)\n"
    same = "# 甲\n\n```\nnetplumb ls        # 列出\n```\n\n## 乙\n\n运行 `make test`, 见 [x](docs/x.md)\n"
    assert translation_differences(original, same) == []
    changed = same.replace("netplumb ls", "netplumb ls --json")
    assert any("code block 1" in d for d in translation_differences(original, changed))
    fewer = same.replace("## 乙\n", "")
    assert any("sections" in d for d in translation_differences(original, fewer))
    relinked = same.replace("docs/x.md", "docs/y.md")
    assert any("links" in d for d in translation_differences(original, relinked))
    recoded = same.replace("`make test`", "make test")
    assert any("inline code" in d for d in translation_differences(original, recoded))


def test_the_command_check_refuses_what_the_programs_refuse() -> None:
    assert argv_of("netplumb attach bri0 netns:blue 198.18.0.10/24  # a comment") == [
        "netplumb",
        "attach",
        "bri0",
        "netns:blue",
        "198.18.0.10/24",
    ]
    assert argv_of("$ ip netns exec h1 netplumb --json ls | jq .") == ["netplumb", "--json", "ls"]
    assert argv_of("netplumb bridge add NAME [--kind linux|ovs]") is None  # a synopsis
    assert argv_of("usermod --append --groups netplumb alice") is None
    assert refusal(("netplumb", "attach", "bri0", "blue", "--mtu", "1400")) == ""
    assert refusal(("netplumb", "--connect", "[2001:db8::1]:7443", "--insecure-tcp", "ls")) == ""
    assert refusal(("netplumb", "ls", "--help")) == ""
    assert "--colour" in refusal(("netplumb", "ls", "--colour"))
    assert refusal(("netplumb", "attach", "bri0", "blue", "--dhcp-keep"))  # needs --dhcp
    assert refusal(("netplumb", "attach", "--kind", "dummy", "bri0", "blue"))  # needs '-'
    assert refusal(("pipework", "br1", "web", "198.18.0.5/24")) == ""
    assert "netmask" in refusal(("pipework", "br1", "web", "198.18.0.5"))
    assert refusal(("netplumbd", "--log-level", "debug")) == ""
    assert "--log-level" in refusal(("netplumbd", "--log-level", "loud"))
