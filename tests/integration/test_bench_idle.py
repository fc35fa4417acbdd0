"""``python -m bench.idle`` measures the sample installation as ``make run`` starts it, beside its references."""
from __future__ import annotations

import re

from bench import idle


def test_the_idle_benchmark_measures_every_daemon_of_the_installation_and_its_references():
    text = idle.main(["--settle", "1", "--seconds", "2"])
    rows = {name: float(cpu) for name, cpu in re.findall(r"^\| \**([^|*]+?)\** \| \**([\d.]+)\** \|", text, re.M)}
    assert set(rows) == {*idle.PARTS, "Python floor (reference)", "bare zmq.proxy (reference)",
                         "the installation, all five"}, text
    assert abs(rows["the installation, all five"] - sum(rows[part] for part in idle.PARTS)) < 0.05, text
    assert all(rows[part] > 0 for part in idle.PARTS), f"a daemon of the installation did not run:\n{text}"
