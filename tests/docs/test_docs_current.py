"""The docs that the code defines are regenerated and compared; links stay inside the repository."""

from __future__ import annotations

import difflib
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


GEN = _generator()


@pytest.mark.parametrize("path", sorted(GEN.expected_files()))
def test_generated_sections_are_current(path: str) -> None:
    current, expected = GEN.expected_files()[path]
    if current != expected:
        diff = "".join(
            difflib.unified_diff(
                current.splitlines(keepends=True), expected.splitlines(keepends=True), path, "generated", n=1
            )
        )
        pytest.fail(f"{path} is out of date; run: {GEN.REGENERATE}\n{diff[:4000]}")


def test_generation_does_not_depend_on_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    first = GEN.cli_reference()
    monkeypatch.setenv("COLUMNS", "40")
    monkeypatch.setenv("TERM", "dumb")
    assert GEN.cli_reference() == first


def test_every_command_is_in_the_reference() -> None:
    import typer

    from cli import app

    text = GEN.cli_reference()
    root = typer.main.get_command(app)

    def names(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from names(sub, f"{path} {name}")

    for path in names(root, "shouhu"):
        assert f"### `{path}`" in text, path


def test_operations_describes_every_command() -> None:
    """The generated reference gives the options; operations.md says what each command does."""
    import typer

    from cli import app

    text = (DOCS / "operations.md").read_text(encoding="utf-8")

    def leaves(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield path
        for name, sub in (subs or {}).items():
            if not getattr(sub, "hidden", False):
                yield from leaves(sub, f"{path} {name}")

    missing = [p for p in leaves(typer.main.get_command(app), "shouhu") if not re.search(f"`{re.escape(p)}[ `]", text)]
    assert not missing, f"docs/operations.md (Commands) does not describe: {missing}"


def test_every_error_code_is_in_the_table() -> None:
    import core.errors as errors

    table = GEN.error_table()
    for value in vars(errors).values():
        if isinstance(value, type) and issubclass(value, errors.ShouhuError):
            assert f"| {value.status} | `{value.code}` |" in table, value.code


# --- Nothing in the docs points outside the repository ---------------------------------

_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
# The shared design notes that live beside the repository, and absolute local paths.
_OUTSIDE = re.compile(
    r"\.\./shared|/work/|(?<![\w.~-])/(?:home|root|tmp|Users)/|file://|[A-Z]:\\\\"
    r"|\b(?:API|DESIGN|DOMAIN|FINDINGS|STYLE)\.md\b|\b(?:DESIGN|DOMAIN|FINDINGS)\b"
)


def _markdown_files() -> list[Path]:
    files = [ROOT / "README.md", *sorted(DOCS.rglob("*.md"))]
    results = ROOT / "bench" / "results"
    if results.is_dir():
        files += sorted(results.glob("*.md"))
    return files


def _anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            out.add(slug)
    return out


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve_inside_the_repository(md: Path) -> None:
    text = md.read_text(encoding="utf-8")
    problems = []
    for m in _LINK.finditer(text):
        target = m.group(1) or m.group(2)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            if target.startswith("file:"):
                problems.append(f"{target}: a local file")
            continue
        file_part, _, anchor = target.partition("#")
        dest = (md.parent / file_part).resolve() if file_part else md.resolve()
        if not dest.is_relative_to(ROOT):
            problems.append(f"{target}: outside the repository")
        elif not dest.exists():
            problems.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            problems.append(f"{target}: no such heading")
    assert not problems, f"{md.relative_to(ROOT)}:\n" + "\n".join(problems)


@pytest.mark.parametrize("md", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_paths_outside_the_repository(md: Path) -> None:
    hits = [
        f"line {n}: {line.strip()[:120]}"
        for n, line in enumerate(md.read_text(encoding="utf-8").splitlines(), 1)
        if _OUTSIDE.search(line)
    ]
    assert not hits, f"{md.relative_to(ROOT)} cites files outside the repository:\n" + "\n".join(hits)
