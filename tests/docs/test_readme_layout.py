"""The README's Layout section lists every top-level package, module and folder, and nothing else."""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _ignored_patterns() -> list[str]:
    """Top-level name patterns from .gitignore (``var/``, ``*.egg-info/``, ...)."""
    gitignore = ROOT / ".gitignore"
    if not gitignore.exists():
        return []
    patterns = []
    for line in gitignore.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        line = line.strip("/")
        if "/" not in line:  # nested paths (bench/out) never name a top-level entry
            patterns.append(line)
    return patterns


def _name(entry: str) -> str:
    """``cli.py``, ``cli/`` and ``cli`` are one name: a module may become a package."""
    entry = entry.strip().rstrip("/")
    return entry[: -len(".py")] if entry.endswith(".py") else entry


def tree_names() -> set[str]:
    """Top-level Python modules and folders of the repository, less hidden and ignored ones."""
    ignored = _ignored_patterns()
    names = set()
    for entry in ROOT.iterdir():
        if entry.name.startswith(".") or any(fnmatch.fnmatch(entry.name, p) for p in ignored):
            continue
        if entry.is_dir() or entry.suffix == ".py":
            names.add(_name(entry.name))
    return names


def layout_entries() -> list[str]:
    """The first word of each line in the README's Layout code block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert section, "README.md has no '## Layout' section"
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.S | re.M)
    assert block, "README.md's Layout section has no code block"
    return [line.split()[0] for line in block.group(1).splitlines() if line.strip()]


def test_layout_lists_every_top_level_package_module_and_folder() -> None:
    listed = {_name(e) for e in layout_entries() if "/" not in e.rstrip("/")}
    missing = sorted(tree_names() - listed)
    assert not missing, f"README.md's Layout does not list: {missing}"


def test_everything_listed_exists() -> None:
    gone = []
    for entry in layout_entries():
        path = ROOT / entry.rstrip("/")
        if "/" in entry.rstrip("/"):
            if not path.exists():
                gone.append(entry)
        elif _name(entry) not in tree_names():
            gone.append(entry)
    assert not gone, f"README.md's Layout lists what is not in the tree: {gone}"


def test_layout_treats_a_module_and_a_package_alike() -> None:
    assert _name("cli.py") == _name("cli/") == _name("cli") == "cli"
