"""``make bench`` collects each part's Markdown whether the part prints it or returns it."""
from __future__ import annotations

import sys
import types

import pytest

from bench import run


@pytest.fixture
def part():
    module = types.ModuleType("bench_fake_part")
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


def test_a_part_that_prints_and_returns_an_exit_code(part, capsys):
    part.main = lambda: (print("| figure | 1 | PASS |"), 0)[1]
    assert run.run_part(part.__name__) == ("| figure | 1 | PASS |\n", False)
    assert "| figure | 1 | PASS |" in capsys.readouterr().out
    part.main = lambda: (print("| figure | 1 | FAIL |"), 0)[1]
    assert run.run_part(part.__name__)[1] is True
    part.main = lambda: (print("figures"), 1)[1]
    assert run.run_part(part.__name__) == ("figures\n", True)


def test_a_part_that_returns_its_markdown(part, capsys):
    part.main = lambda: "## Part\n\n| x | PASS |"
    assert run.run_part(part.__name__) == ("## Part\n\n| x | PASS |\n", False)
    assert "## Part" in capsys.readouterr().out


@pytest.mark.parametrize("name", run.PARTS + ("bench.callgrind",))
def test_every_benchmark_part_imports_and_has_a_main(name):
    """``make bench`` runs every part: one that no longer imports (a helper moved) must fail here, not there."""
    import importlib

    assert callable(importlib.import_module(name).main)
