"""A benchmark's "before" runs the code of the tree it names, in either layout, never the installed checkout's."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.codetree import REPO, eventbus_command, tree_env

# The tree's command prints which files it and its ``eventbus`` package came from.
MAIN = """
import eventbus

def main(argv):
    print(__file__, eventbus.__file__, *argv)
    return 0
"""


def make_tree(root: Path, setup_cfg: str) -> Path:
    """A minimal project tree: ``eventbus/``, ``cli/main.py`` and a setup.cfg."""
    for package in ("eventbus", "cli", "daemon", "netapi"):
        (root / package).mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
    (root / "cli" / "main.py").write_text(MAIN)
    (root / "setup.cfg").write_text(setup_cfg)
    return root


def run(tree: Path, *args: str) -> list[str]:
    done = subprocess.run(eventbus_command(tree, *args), cwd=tree, env=tree_env(tree), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_a_tree_from_before_the_one_namespace_runs_its_own_top_level_cli(tmp_path):
    tree = make_tree(tmp_path / "old", "[options]\npackages = find:\n")
    assert run(tree, "api") == [str(tree / "cli" / "main.py"), str(tree / "eventbus" / "__init__.py"), "api"]


def test_a_tree_with_package_dir_runs_its_own_cli_as_eventbus_cli(tmp_path):
    setup_cfg = ("[options]\npackage_dir =\n    eventbus = eventbus\n    eventbus.daemon = daemon\n"
                 "    eventbus.netapi = netapi\n    eventbus.cli = cli\n")
    tree = make_tree(tmp_path / "new", setup_cfg)
    assert run(tree, "api") == [str(tree / "cli" / "main.py"), str(tree / "eventbus" / "__init__.py"), "api"]


def test_this_checkout_runs_as_installed():
    done = subprocess.run(eventbus_command(REPO, "--help"), cwd=REPO, env=tree_env(REPO), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: eventbus"), done.stderr


def test_a_folder_that_is_no_eventbus_tree_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not an eventbus tree"):
        eventbus_command(tmp_path)
