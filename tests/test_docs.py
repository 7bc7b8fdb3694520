"""The docs stay true: every flag of every command shown exists, every relative link resolves.

A command is a `python -m wsl_ray.X ...`, `python -m analysis ...` (or `wsl_ray.analysis`) or
`wsl-*` line in a ```bash block of README.md or docs/*.md, or an inline code span that starts
one. Each of its `--flags` must appear in that command's `--help` (for analysis, the
subcommand's), which is built in-process.
"""

import contextlib
import importlib
import io
import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

SCRIPTS = {"analysis": "analysis", "wsl_ray.analysis": "analysis"}
SCRIPTS |= {
    f"wsl_ray.{c}": f"wsl_ray.{c}" for c in ("train", "test", "tune", "confirm", "lincls", "export")
}
SCRIPTS |= {f"wsl-{name.split('.')[-1]}": module for name, module in SCRIPTS.items()}
MODULES = "|".join(re.escape(name) for name in SCRIPTS if not name.startswith("wsl-"))
WSL = "|".join(name for name in SCRIPTS if name.startswith("wsl-"))
COMMAND = re.compile(rf"(?:python -m ({MODULES})|(?<![\w/-])({WSL}))(?![\w.-])")
FLAG = re.compile(r"--[A-Za-z0-9][\w-]*")
FENCE = re.compile(r"^[ \t]*```(\w*)\n(.*?)^[ \t]*```", re.S | re.M)


@cache
def help_text(module: str, sub: str | None) -> str:
    """The `--help` output of `module` (and of its subcommand `sub`), built in-process."""
    mod = importlib.import_module(module if module != "analysis" else "analysis.__main__")
    if sub is None and hasattr(mod, "build_parser"):
        return mod.build_parser().format_help()
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        mod.main([sub, "--help"] if sub else ["--help"])
    return out.getvalue()


def commands(text: str) -> list[str]:
    """The commands in one Markdown text: one string per command, continuation lines joined."""
    found = []
    for lang, body in FENCE.findall(text):
        if lang in ("bash", "sh"):
            for line in body.replace("\\\n", " ").splitlines():
                found += [
                    seg for seg in re.split(r";|&&|\|", line.split(" #")[0]) if COMMAND.search(seg)
                ]
    prose = FENCE.sub("", text)
    found += [
        span for span in re.findall(r"`([^`]+)`", prose) if COMMAND.search(span.replace("\n", " "))
    ]
    return [" ".join(c.split()) for c in found]


def bad_flags(command: str) -> list[str]:
    """The `--flags` of `command` that its `--help` does not list."""
    match = COMMAND.search(command)
    module = SCRIPTS[match.group(1) or match.group(2)]
    words = command[match.end() :].replace("...", " ").split()
    sub = None
    if module == "analysis" and words and not words[0].startswith("-"):
        sub = words[0]
    known = set(FLAG.findall(help_text(module, sub)))
    return [
        flag
        for w in words
        if w.startswith("--")
        for flag in FLAG.findall(w.split("=")[0])[:1]
        if flag not in known
    ]


def all_commands() -> list[tuple[str, str]]:
    return [
        (doc.relative_to(ROOT).as_posix(), cmd) for doc in DOCS for cmd in commands(doc.read_text())
    ]


def test_docs_show_commands():
    found = all_commands()
    assert len(found) > 30, found
    assert {SCRIPTS[m[1] or m[2]] for m in (COMMAND.search(c) for _, c in found)} >= {
        "wsl_ray.train",
        "wsl_ray.tune",
        "analysis",
    }


@pytest.mark.parametrize("doc,command", all_commands())
def test_command_flags_exist(doc, command, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert bad_flags(command) == [], f"{doc}: {command}"


def test_made_up_flags_are_reported(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    text = (
        "```bash\npython -m wsl_ray.train --lr 1e-3 \\\n    --no_such_flag 3\n```\n"
        "`python -m analysis tables x --kind top --nope`\n"
    )
    found = commands(text)
    assert [bad_flags(c) for c in found] == [["--no_such_flag"], ["--nope"]]
    assert bad_flags("wsl-export ckpt --out b.pt --format torchvision") == []


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def broken_links(doc: Path, text: str) -> list[str]:
    """The relative link targets in `text` (a file in `doc`'s folder) that do not exist."""
    targets = [t.split("#")[0] for t in LINK.findall(text) if not re.match(r"\w+:|#", t)]
    return [t for t in targets if not (doc.parent / t).exists()]


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.relative_to(ROOT).as_posix())
def test_relative_links_resolve(doc):
    assert broken_links(doc, doc.read_text()) == []


def test_broken_links_are_reported():
    text = "[ok](docs/training.md), [web](https://example.org), [gone](docs/no_such_page.md#x)"
    assert broken_links(ROOT / "README.md", text) == ["docs/no_such_page.md"]
