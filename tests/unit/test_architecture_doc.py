"""docs/architecture.md names every module of the four folders, and every module path it names exists."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = ("eventbus", "daemon", "netapi", "cli")


def _modules() -> list[str]:
    found = []
    for folder in FOLDERS:
        for path in sorted((REPO / folder).rglob("*.py")):
            if path.name == "__init__.py" and len(path.read_text().strip().splitlines()) <= 1:
                continue  # a package with only its docstring: its folder is in the tree
            found.append(path.relative_to(REPO).as_posix())
    return found


def test_every_module_is_on_the_map():
    text = (REPO / "docs" / "architecture.md").read_text()
    missing = [module for module in _modules() if f"`{module}`" not in text]
    assert not missing, f"docs/architecture.md does not name {missing}: add each to its room's table"


def test_every_module_the_map_names_exists():
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:eventbus|daemon|netapi|cli|bench|tests)/[\w/]+\.py)`", text))
    gone = sorted(name for name in named if not (REPO / name).exists())
    assert not gone, f"docs/architecture.md names modules that do not exist: {gone}"
