"""Several runs of ``bench.failover`` side by side: ``python -m bench.failoversummary FILE...``.

Each FILE is the figures JSON a run wrote (``bench/results/failover-*.json``);
the Markdown table has one column per run and the target, a verdict mark on
each judged figure (✔ met, ✘ missed).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from bench.failoverreport import REFERENCE_SHARE, TARGET_GAP

Row = tuple[str, Callable[[dict], str], str, "Callable[[dict], bool] | None"]


def _mark(ok: bool) -> str:
    return " ✔" if ok else " ✘"


def _ms(phase: dict) -> str:
    """``p50–p99`` of a phase, or ``none`` when it had no event in its window."""
    if phase["p50_ms"] != phase["p50_ms"]:  # NaN
        return "none"
    return f"{phase['p50_ms']:.1f}–{phase['p99_ms']:.1f}"


def _n(value: float, digits: int = 2) -> str:
    return "never" if value == float("inf") else f"{value:.{digits}f}"


ROWS: list[Row] = [
    ("the reference delivers the offered load (events/s)", lambda f: f"{f['reference']['rate']:,.0f}",
     f"≥ {REFERENCE_SHARE:.0%} of it", lambda f: f["reference"]["rate"] >= REFERENCE_SHARE * f["minions"] * f["rate"]),
    ("events/s delivered: reference (1 master, no kill) / A before the kill / B after it (gap included)",
     lambda f: f"{f['reference']['rate']:,.0f} / {f['before']['rate']:,.0f} / {f['after']['rate']:,.0f}", "", None),
    ("... B from 1 s after the last minion resumed (s after the kill)",
     lambda f: f"{f['after']['steady_rate']:,.0f} ({f['after']['steady_from_s']:.1f})", "", None),
    ("relay p50 / p99 (ms): reference / A before / B steady",
     lambda f: " / ".join(_ms(p) for p in (f["reference"], f["before"], f["after"])),
     "", None),
    ("longest time without a new event, one minion: reference / A before the kill (s)",
     lambda f: f"{f['reference']['max_gap_s']:.3f} / {f['before']['max_gap_s']:.3f}", "", None),
    ("**delivery gap around the kill, slowest minion (s)**", lambda f: f"**{_n(f['gap_s'])}**",
     "", None),
    ("**gap / `master_alive_interval`**", lambda f: f"**×{_n(f['gap_ratio'])}**", f"≤ ×{TARGET_GAP:g}",
     lambda f: f["gap_ratio"] <= TARGET_GAP),
    ("silence when the minions moved (their log)", lambda f: f"{f['silence_at_move_s']:.1f} s", "", None),
    ("backlog spooled meanwhile; all of it on B (s after the kill)",
     lambda f: f"{f['backlog']:,}; {_n(f['backlog_drained_s'])}", "", None),
    ("events fired / lost (on neither B's bus nor A's journal)", lambda f: f"{f['fired']:,} / {f['lost']}", "0 lost",
     lambda f: f["lost"] == 0 and f["reference"]["lost"] == 0),
    ("minions with events out of order or twice on one master", lambda f: f"{f['disordered']}", "0",
     lambda f: f["disordered"] == 0 and f["reference"]["disordered"] == 0),
    ("events on both masters (A's last = B's first?)",
     lambda f: f"{f['duplicates']:,} ({'yes' if f['duplicates_at_seam'] else 'no'})", "only those",
     lambda f: f["duplicates_at_seam"]),
    ("events only in A's journal", lambda f: f"{f['journal_only']}", "", None),
    ("minions' moves while A ran / after the kill",
     lambda f: f"{f['moves_before_kill']} / {f['moves_after_kill']}", "0 / all",
     lambda f: f["moves_before_kill"] == 0 and f["moves_after_kill"] == f["minions"]),
    ("minions' reconnects to a silent master: reference / while A ran / after the kill",
     lambda f: f"{f['reference'].get('reconnects', '?')} / {f['reconnects_before_kill']} / "
               f"{f['reconnects_after_kill']}", "", None),
    ("master B running at the end", lambda f: "yes" if f["survivor"]["alive"] else f"no (exit {f['survivor']['exit']})",
     "yes", lambda f: f["survivor"]["alive"]),
]


def table(runs: Sequence[dict]) -> str:
    """The runs as one Markdown table."""
    head = "| figure | " + " | ".join(f"run {n}" for n in range(1, len(runs) + 1)) + " | target |"
    lines = [head, "|---|" + "---:|" * len(runs) + "---|"]
    for name, show, target, judge in ROWS:
        cells = [show(f) + (_mark(judge(f)) if judge else "") for f in runs]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {target} |")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    if not argv:
        sys.exit("usage: python -m bench.failoversummary FILE...")
    runs = [json.loads(Path(path).read_text()) for path in argv]
    for n, f in enumerate(runs, 1):
        print(f"- run {n}: {f['date']}, `{f['command'].strip()}`, {f['load_before']}, took {f['took_s']:.0f} s")
    print()
    print(table(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
