"""Which code a benchmark runs: this checkout (the installed ``eventbus``) or another tree of the project.

Another tree is a ``git archive`` or worktree of some commit, put first on
``PYTHONPATH``. Trees come in two layouts. A tree from before the one import
name has top-level packages ``cli``, ``daemon`` and ``netapi`` and no
``package_dir`` in its setup.cfg: its command is ``cli.main``. A tree with
``package_dir`` installs ``cli/`` as ``eventbus.cli`` (and so on), a mapping
that only an install knows: on ``PYTHONPATH`` alone, ``eventbus.cli`` would
come from the installed checkout instead. So such a tree's mapping is
installed in the child process before its ``eventbus.cli.main`` is imported.
This checkout runs as installed (docs/architecture.md, One namespace).
"""
from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CALL = "import sys; from {module} import main; sys.exit(main(sys.argv[1:]))"

# A finder that maps each ``package_dir`` entry below ``eventbus`` to its folder of the tree.
_TREE_FINDER = """
import importlib.util, sys
class TreeFinder:
    folders = {folders!r}
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        folder = cls.folders.get(name)
        if folder is None:
            return None
        return importlib.util.spec_from_file_location(name, folder + "/__init__.py",
                                                      submodule_search_locations=[folder])
sys.meta_path.insert(0, TreeFinder)
"""


def package_dirs(tree: Path) -> dict[str, str]:
    """The ``package_dir`` of ``tree``'s setup.cfg below ``eventbus`` ({"eventbus.cli": "cli", ...}); {} if none."""
    parser = configparser.ConfigParser()
    parser.read(tree / "setup.cfg")
    raw = parser.get("options", "package_dir", fallback="")
    pairs = (line.split("=", 1) for line in raw.splitlines() if "=" in line)
    return {name.strip(): folder.strip() for name, folder in pairs if name.strip().startswith("eventbus.")}


def eventbus_command(tree: Path, *args: str) -> list[str]:
    """The argv of ``tree``'s ``eventbus`` command; run it with ``tree_env(tree)`` and ``cwd=tree``."""
    tree = tree.resolve()
    if tree == REPO:
        return [sys.executable, "-c", _CALL.format(module="eventbus.cli.main"), *args]
    folders = package_dirs(tree)
    if folders:
        mapping = {name: str(tree / folder) for name, folder in folders.items()}
        code = _TREE_FINDER.format(folders=mapping) + _CALL.format(module="eventbus.cli.main")
        return [sys.executable, "-c", code, *args]
    if not (tree / "cli" / "main.py").is_file():
        raise ValueError(f"{tree} is not an eventbus tree: no package_dir in setup.cfg and no cli/main.py")
    return [sys.executable, "-c", _CALL.format(module="cli.main"), *args]


def tree_env(tree: Path) -> dict[str, str]:
    """The environment for ``tree``'s code: another tree goes first on ``PYTHONPATH``; this checkout as installed."""
    if tree.resolve() == REPO:
        return dict(os.environ)
    return dict(os.environ, PYTHONPATH=str(tree.resolve()))
