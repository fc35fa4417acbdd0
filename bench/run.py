"""``make bench``: every benchmark part in one run, as Markdown on stdout and in bench/results/latest.md.

Each part in ``PARTS`` runs, in order, when its module is in the checkout.
A part's ``main()`` may print its section or return it as a str; either way
it lands in the file.
Progress goes to stderr.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import sys
import time
from pathlib import Path
from typing import Any, Sequence

PARTS = ("bench.bus", "bench.floor", "bench.idle", "bench.journal", "bench.relay", "bench.rogue", "bench.api",
         "bench.metrics", "bench.attack", "bench.forward", "bench.brokers", "bench.reactor", "bench.cloudevents",
         "bench.failover", "bench.fleet", "bench.cluster")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.md"


class Tee(io.TextIOBase):
    """Write to the real stdout and keep a copy."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.stream.write(text)
        self.copy.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def present(name: str) -> bool:
    """Whether benchmark module ``name`` exists in this checkout."""
    return importlib.util.find_spec(name) is not None


def run_part(name: str) -> tuple[str, bool]:
    """Run ``name.main()`` with its defaults: what it printed (plus its returned text), and whether it missed.

    A part missed a target when its table shows ``| FAIL |`` or its
    ``main()`` returned a non-zero exit code.
    """
    module = importlib.import_module(name)
    tee = Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        returned = module.main()
    printed = tee.copy.getvalue()
    if isinstance(returned, str) and returned.strip() and returned.strip() not in printed:
        print(returned, flush=True)
        printed += returned + "\n"
    missed = "| FAIL |" in printed or (isinstance(returned, int) and not isinstance(returned, bool) and returned != 0)
    return printed, missed


def main(argv: Sequence[str] | None = None) -> int:
    """Run every present part; the results file is written even when a part fails midway."""
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    sections = [f"# eventbus benchmarks, {started}", "", "Command: `make bench`", ""]
    print("\n".join(sections), flush=True)
    missed = []
    try:
        for name in PARTS:
            if not present(name):
                print(f"({name} is not in this checkout: skipped)", file=sys.stderr, flush=True)
                continue
            print(f"== {name}", file=sys.stderr, flush=True)
            text, part_missed = run_part(name)
            sections.append(text)
            if part_missed:
                missed.append(name)
    finally:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(sections))
        print(f"written to {RESULTS}", file=sys.stderr)
    if missed:
        print(f"targets missed in: {', '.join(missed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
