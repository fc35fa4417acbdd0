"""The failover benchmark's figures from what its subscribers saw, and its Markdown table.

``analyse`` takes the reference phase and the failover phase of
``bench.failover`` (each subscriber's ``(n, arrival, fired)`` per minion,
the dead master's journal, the kill time) and computes, per minion and then
over all of them:

- delivered events/s: the reference's over its window; master A's from the
  end of the warm-up to the kill; master B's from the kill to the end of the
  traffic (the gap included), and from 1 s after the last minion resumed
  (steady);
- the delivery gap: the longest time between two *new* events of a minion
  (an ``n`` reached on neither master before) among those ending after the
  kill, max over minions, and its ratio to ``master_alive_interval``;
- lost: numbers fired that are neither on B's bus nor in A's journal
  (and, apart, numbers on A's bus missing from its journal);
- the backlog: events fired between the kill and a minion's first new
  event on B (spooled meanwhile), and when the last of them reached B;
- order: each master's stream (and A's journal) per minion strictly rising;
- duplicates: numbers on both masters, and whether they are exactly A's
  last and B's first ones (those A took but had not acknowledged).
"""
from __future__ import annotations

import math
import re

from bench.measure import percentile

TARGET_GAP = 2.0  # the delivery gap in master_alive_intervals, at most
REFERENCE_SHARE = 0.95  # of the offered events/s the reference must deliver in its window to be a reference
STEADY_AFTER = 1.0  # s after the last minion resumed on B from which B's steady rate is counted
BINS_PER_ALIVE = 10  # the chart of new events around the kill: bins per master_alive_interval ...
CHART_BEFORE, CHART_AFTER = 1.0, 3.0  # ... from this many intervals before the kill to this many after
SPARK = "▁▂▃▄▅▆▇█"
SILENCE = re.compile(r"has not answered for ([0-9.]+) s")


def _rising(ns: list[int]) -> bool:
    return all(a < b for a, b in zip(ns, ns[1:]))


def _window(arrivals: dict[str, list], start: float, end: float) -> tuple[int, list[float]]:
    """Events arriving in [start, end], and their relay latencies (s)."""
    count, latencies = 0, []
    for events in arrivals.values():
        for _n, arrived, fired in events:
            if start <= arrived <= end:
                count += 1
                latencies.append(arrived - fired)
    return count, latencies


def _max_gap(times: list[float], start: float, end: float) -> float:
    """The longest time between two consecutive ``times`` (sorted) that overlaps [start, end]."""
    return max((b - a for a, b in zip(times, times[1:]) if b >= start and a <= end), default=float("nan"))


def _rate(count: int, start: float, end: float) -> float:
    return count / (end - start) if end - start > 0 else float("nan")


def reference_figures(reference: dict) -> dict:
    seen = reference["traffic"]["seen"]["ref"]
    start, end = reference["window"]
    count, latencies = _window(seen, start, end)
    fired = reference["traffic"]["fired"]
    return {"rate": _rate(count, start, end), "p50_ms": percentile(latencies, 50) * 1000,
            "p99_ms": percentile(latencies, 99) * 1000, "max_ms": max(latencies, default=float("nan")) * 1000,
            "max_gap_s": max(_max_gap(sorted(t for _, t, _ in events), start, end) for events in seen.values()),
            "fired": sum(fired.values()),
            "lost": sum(len(set(range(fired[m])) - {n for n, _, _ in seen[m]}) for m in fired),
            "disordered": sum(not _rising([n for n, _, _ in events]) for events in seen.values()),
            "reconnects": reference["reconnects"]}


def minion_figures(fired: int, on_a: list, on_b: list, journal: list[int], start: float, killed: float,
                   halted: float) -> dict:
    """One minion's failover figures (times relative to the kill where they say ``_s``)."""
    a_ns, b_ns = [n for n, _, _ in on_a], [n for n, _, _ in on_b]
    taken_by_a = set(a_ns) | set(journal)
    duplicates = taken_by_a & set(b_ns)
    first: dict[int, tuple[float, str]] = {}
    for label, events in (("a", on_a), ("b", on_b)):
        for n, arrived, _ in events:
            if n not in first or arrived < first[n][0]:
                first[n] = (arrived, label)
    times = sorted(first.values())
    gaps = [(later[0] - earlier[0], earlier[0], later[0]) for earlier, later in zip(times, times[1:])
            if later[0] > killed]
    if times and times[-1][0] < halted:  # silent from its last new event to the end of the traffic
        gaps.append((halted - times[-1][0], times[-1][0], halted))
    gap, gap_from, gap_to = max(gaps, default=(float("inf"), float("nan"), float("nan")))
    new_on_b = [at for at, label in times if label == "b"]
    last_on_a = max((at for at, label in times if label == "a"), default=float("nan"))
    tail_of_a = sorted(taken_by_a)[len(taken_by_a) - len(duplicates):]
    resumed = min(new_on_b) if new_on_b else float("inf")
    backlog = [arrived for n, arrived, sent in on_b if sent < resumed and n not in taken_by_a]
    return {
        "fired": fired, "on_a": len(a_ns), "on_b": len(b_ns), "journal": len(journal),
        "lost": sorted(set(range(fired)) - set(journal) - set(b_ns)),
        "ordered": {"a": _rising(a_ns), "b": _rising(b_ns), "journal": _rising(journal)},
        "duplicates": len(duplicates),
        "duplicates_are_the_seam": sorted(duplicates) == tail_of_a == sorted(b_ns[:len(duplicates)]),
        "journal_only": len(set(journal) - set(a_ns) - set(b_ns)),
        "published_not_journaled": len(set(a_ns) - set(journal)),
        "gap_s": gap, "gap_from_s": gap_from - killed, "gap_to_s": gap_to - killed,
        "last_on_a_s": last_on_a - killed,
        "resumed_s": resumed - killed, "backlog": len(backlog),
        "backlog_drained_s": max(backlog, default=resumed) - killed,
        "first_arrivals": [at for at, _ in times],
        "max_gap_before_s": max((b[0] - a[0] for a, b in zip(times, times[1:]) if b[0] >= start and b[0] <= killed),
                                default=float("nan")),
    }


def analyse(reference: dict, failover: dict, alive: float) -> dict:
    """Every figure of the run (see the module doc)."""
    traffic = failover["traffic"]
    seen_a, seen_b, fired = traffic["seen"]["a"], traffic["seen"]["b"], traffic["fired"]
    killed, halted = failover["killed"], failover["halted"]
    start = failover["window"][0]
    per_minion = {m: minion_figures(fired[m], seen_a[m], seen_b[m], failover["journal"].get(m, []), start,
                                   killed, halted)
                  for m in sorted(fired)}
    resumed = max(f["resumed_s"] for f in per_minion.values())
    arrivals = sorted(t for f in per_minion.values() for t in f.pop("first_arrivals"))
    step = alive / BINS_PER_ALIVE
    bins = [0] * int(round((CHART_BEFORE + CHART_AFTER) * BINS_PER_ALIVE))
    for at in arrivals:
        index = int((at - killed + CHART_BEFORE * alive) // step)
        if 0 <= index < len(bins):
            bins[index] += 1
    logs = failover["minion_logs"]
    after_kill = [[line for at, line in log["moves"] if at >= 0] for log in logs.values()]
    silences = [float(found.group(1)) for moves in after_kill for line in moves[:1]
                if (found := SILENCE.search(line))]
    before, before_latency = _window(seen_a, start, killed)
    # B's new events: every arrival on B of a number A never took.
    taken_by_a = {m: {n for n, _, _ in seen_a[m]} | set(failover["journal"].get(m, [])) for m in seen_a}
    new_b = {m: [e for e in seen_b[m] if e[0] not in taken_by_a[m]] for m in seen_b}
    after, _ = _window(new_b, killed, halted)
    steady_from = killed + resumed + STEADY_AFTER
    steady, steady_latency = _window(seen_b, steady_from, halted)
    gap = max(f["gap_s"] for f in per_minion.values())
    return {
        "reference": reference_figures(reference),
        "before": {"rate": _rate(before, start, killed), "p50_ms": percentile(before_latency, 50) * 1000,
                   "p99_ms": percentile(before_latency, 99) * 1000,
                   "max_gap_s": max(f["max_gap_before_s"] for f in per_minion.values())},
        "after": {"rate": _rate(after, killed, halted), "steady_rate": _rate(steady, steady_from, halted),
                  "steady_from_s": steady_from - killed,
                  "p50_ms": percentile(steady_latency, 50) * 1000, "p99_ms": percentile(steady_latency, 99) * 1000},
        "gap_s": gap, "gap_ratio": gap / alive, "resumed_s": resumed,
        "silence_at_move_s": max(silences, default=float("nan")),
        "backlog": sum(f["backlog"] for f in per_minion.values()),
        "backlog_drained_s": max(f["backlog_drained_s"] for f in per_minion.values()),
        "chart": {"step_s": step, "from_s": -CHART_BEFORE * alive, "new_events": bins},
        "fired": sum(fired.values()),
        "lost": sum(len(f["lost"]) for f in per_minion.values()),
        "reference_spooled_at_end": sum(reference["spooled"].values()),
        "disordered": sum(not all(f["ordered"].values()) for f in per_minion.values()),
        "duplicates": sum(f["duplicates"] for f in per_minion.values()),
        "duplicates_at_seam": all(f["duplicates_are_the_seam"] for f in per_minion.values()),
        "journal_only": sum(f["journal_only"] for f in per_minion.values()),
        "published_not_journaled": sum(f["published_not_journaled"] for f in per_minion.values()),
        "on_b_at_end": sum(live == 1 for live in failover["live"].values()),
        "spooled_at_end": sum(failover["spooled"].values()),
        "moves_before_kill": sum(at < 0 for log in logs.values() for at, _ in log["moves"]),
        "moves_after_kill": sum(len(moves) for moves in after_kill),
        "reconnects_before_kill": sum(at < 0 for log in logs.values() for at, _ in log["reconnects"]),
        "reconnects_after_kill": sum(at >= 0 for log in logs.values() for at, _ in log["reconnects"]),
        "survivor": failover["survivor"],
        "listener_a_ended": traffic["ended"].get("a", ""),
        "minion_logs": logs, "per_minion": per_minion,
    }


def _ratio(value: float, reference: float) -> str:
    return f"{value / reference:.1%}" if reference else "n/a"


def _s(value: float) -> str:
    return "n/a" if math.isnan(value) else ("never" if math.isinf(value) else f"{value:.2f}")


def report(f: dict) -> tuple[str, bool]:
    """The Markdown section and whether every target was met."""
    ref, before, after = f["reference"], f["before"], f["after"]
    alive, count = f["alive"], f["minions"]
    gap_ok = f["gap_ratio"] <= TARGET_GAP
    checks = {"gap": gap_ok, "lost": f["lost"] == 0 and ref["lost"] == 0,
              "order": f["disordered"] == 0 and ref["disordered"] == 0,
              "seam": f["duplicates_at_seam"], "moved": f["on_b_at_end"] == count,
              "journal": f["published_not_journaled"] == 0, "survivor": f["survivor"]["alive"],
              "false": f["moves_before_kill"] == 0 and f["moves_after_kill"] == count,
              "reference": ref["rate"] >= REFERENCE_SHARE * count * f["rate"]}
    verdict = {k: "PASS" if ok else "FAIL" for k, ok in checks.items()}
    rate = ref["rate"]
    rows = [
        (f"the reference delivers the offered {count * f['rate']:,.0f} events/s (a measure to compare with)",
         f"{ref['rate']:,.0f}", "", "", "", f"≥ {REFERENCE_SHARE:.0%}", verdict["reference"]),
        ("events/s delivered (all minions)", f"{ref['rate']:,.0f}", f"{before['rate']:,.0f}",
         f"{after['rate']:,.0f} (gap included); {after['steady_rate']:,.0f} from {after['steady_from_s']:.1f} s",
         f"{_ratio(before['rate'], rate)} / {_ratio(after['rate'], rate)} / {_ratio(after['steady_rate'], rate)}",
         "", ""),
        ("relay latency p50 / p99, `fire_master` → subscriber (ms)", f"{ref['p50_ms']:.1f} / {ref['p99_ms']:.1f}",
         f"{before['p50_ms']:.1f} / {before['p99_ms']:.1f}", f"{after['p50_ms']:.1f} / {after['p99_ms']:.1f} (steady)",
         "", "", ""),
        ("longest time without a new event, one minion (s)", f"{ref['max_gap_s']:.3f}",
         f"{before['max_gap_s']:.3f}", f"**{_s(f['gap_s'])}** around the kill", "",
         f"≤ 2 × {alive:g} s", verdict["gap"]),
        ("that gap / `master_alive_interval`", "", "", f"**×{f['gap_ratio']:.2f}**", "", f"≤ ×{TARGET_GAP:g}",
         verdict["gap"]),
        ("kill → first new event on B, slowest minion (s); its silence when it moved, from its log",
         "", "", f"{_s(f['resumed_s'])}; {_s(f['silence_at_move_s'])}", "", "", ""),
        ("backlog: events fired from the kill until B took the minion's first, all minions; "
         "all on B (s after the kill)", "", "", f"{f['backlog']:,}; {_s(f['backlog_drained_s'])}", "", "", ""),
        ("events fired / lost (on neither B's bus nor A's journal) / of those, still in the minions' spools",
         f"{ref['fired']:,} / {ref['lost']} / {f['reference_spooled_at_end']}", "",
         f"{f['fired']:,} / {f['lost']} / {f['spooled_at_end']}", "", "0 lost", verdict["lost"]),
        ("events on A's bus missing from A's journal", "", "", f"{f['published_not_journaled']}", "", "0",
         verdict["journal"]),
        ("minions with events out of order or twice on one master", f"{ref['disordered']}", "",
         f"{f['disordered']} (A's bus, A's journal, B's bus)", "", "0", verdict["order"]),
        ("events on both masters", "", "", f"{f['duplicates']:,}", "",
         "only A's last = B's first", verdict["seam"]),
        ("events only in A's journal (taken, not yet on A's bus at the kill)", "", "", f"{f['journal_only']}", "",
         "", ""),
        ("minions relaying to B at the end", "", "", f"{f['on_b_at_end']} of {count}", "", f"{count}",
         verdict["moved"]),
        ("minions' moves to another master, while A ran / after the kill", "", f"{f['moves_before_kill']}",
         f"{f['moves_after_kill']}", "", f"0 / {count}", verdict["false"]),
        ("minions' reconnects to the same silent master, while A ran / after the kill",
         f"{ref['reconnects']}", f"{f['reconnects_before_kill']}", f"{f['reconnects_after_kill']}", "", "", ""),
        ("master B running at the end", "", "", "yes" if f["survivor"]["alive"] else
         f"**no** (exit {f['survivor']['exit']})", "", "yes", verdict["survivor"]),
    ]
    lines = ["### One run (`" + f["command"].strip() + "`)", "",
             f"{count} minions × {f['rate']:g} events/s, `master_alive_interval` {alive:g} s, "
             f"{f['seconds'] / 2:g} s before and {f['seconds'] / 2:g} s after the kill; {f['date']}; "
             f"{f['load_before']} at the start, load {f['load_after'].rsplit('average ', 1)[-1]} at the end; "
             f"took {f['took_s']:.0f} s.", "",
             "| figure | reference: 1 master, no kill | before: A | after: B | ratio to the reference "
             "(before / after / steady) | target | result |",
             "|---|---:|---:|---:|---:|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", chart(f["chart"], f["gap_s"]), "",
              "Per minion: gap (s, from → to relative to the kill), duplicates, events only in A's journal:", ""]
    for minion_id, m in f["per_minion"].items():
        lines.append(f"- {minion_id}: {_s(m['gap_s'])} ({m['gap_from_s']:+.2f} → {m['gap_to_s']:+.2f}), "
                     f"{m['duplicates']} on both, {m['journal_only']} journal only, "
                     f"{m['on_a']:,} on A + {m['on_b']:,} on B of {m['fired']:,}")
    first_moves = [line for log in f["minion_logs"].values() for at, line in log["moves"] if at >= 0]
    if first_moves:
        lines += ["", f"A minion's log after the kill: `{first_moves[0]}`"]
    if not f["survivor"]["alive"]:
        tail = f["survivor"]["log"].strip().splitlines()[-3:]
        lines += ["", "Master B's log ends:", "", "```", *tail, "```"]
    return "\n".join(lines), all(checks.values())


def chart(bins: dict, gap: float) -> str:
    """New events delivered (both masters, all minions) per bin around the kill, as one line of text."""
    counts, step, start = bins["new_events"], bins["step_s"], bins["from_s"]
    top = max(counts, default=0) or 1
    line = "".join(" " if not c else SPARK[min(len(SPARK) - 1, c * len(SPARK) // (top + 1))] for c in counts)
    kill = int(round(-start / step))
    marks = " " * kill + "^ SIGKILL to A"
    return ("```\n" + f"new events per {step * 1000:.0f} ms, {start:+g} s to {start + len(counts) * step:+g} s "
            f"around the kill (█ = {top}, blank = none; longest gap {_s(gap)} s)\n" + line + "\n" + marks + "\n```")
