"""A fuzz campaign: every target (or those named) under atheris for ``--seconds`` each, one after another.

    python -m tests.fuzz.campaign --seconds 15            # what ``make fuzz`` runs
    python -m tests.fuzz.campaign --seconds 3600 intake   # one target, an hour
    python -m tests.fuzz.campaign --inputs 1000000        # each target until it has tried a million inputs

Each target runs in its own process (``tests.fuzz.run``); one that stops on
a finding is started again for the time left, so an unattended campaign
goes on and counts every finding. Per target it prints, and writes to
``bench/results/fuzz-latest.md``: inputs tried, coverage reached (libFuzzer's
``cov``: code edges, and ``ft``: features), corpus size, new findings (with
their artifact) and known ones (``tests.fuzz.known``). Exit status 1 when
any new finding was made.
"""
from __future__ import annotations

import argparse
import datetime
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fuzz import core

SUMMARY = core.REPO / "bench" / "results" / "fuzz-latest.md"
MAX_RESTARTS = 50
STATS = re.compile(rb"#(\d+)\s+\w+\s+cov: (\d+) ft: (\d+) corp: (\d+)/")
RUNS = re.compile(rb"stat::number_of_executed_units: (\d+)")
ARTIFACT = re.compile(rb"Test unit written to (\S+)")


@dataclass
class Outcome:
    """What one target's share of a campaign came to."""

    name: str
    seconds: float = 0.0
    inputs: int = 0
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    findings: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)

    def row(self) -> str:
        rate = self.inputs / self.seconds if self.seconds else 0
        new = "; ".join(finding.replace("|", "\\|") for finding in self.findings) or "none"
        known = "; ".join(sorted(set(self.known))) or "none"
        return (f"| {self.name} | {self.seconds:.0f} | {self.inputs:,} | {rate:,.0f} | {self.cov} | {self.ft} | "
                f"{self.corpus} | {new} | {known} |")


def _finding(log: bytes) -> str:
    """The one line saying what stopped a run (an uncaught exception, a timeout, out of memory)."""
    if b"ERROR: libFuzzer: timeout" in log:
        return "timeout: an input took longer than its bound"
    if b"ERROR: libFuzzer: out-of-memory" in log:
        return "out of memory: an input grew the process past its bound"
    marker = log.find(b"=== Uncaught Python exception: ===")
    if marker >= 0:
        line = log[marker:].split(b"\n")[1]
        return line.decode(errors="replace")[:160]
    tail = log.strip().split(b"\n")[-1:]
    return f"the run ended unexpectedly: {tail[0].decode(errors='replace')[:200] if tail else ''}"


def run_target(name: str, seconds: int, python: str, inputs: int = 0) -> Outcome:
    """Fuzz ``name`` for ``seconds`` in all (0: no time limit), or until it has tried ``inputs`` (0: no such
    limit), restarting it after each finding."""
    target = core.get(name)
    work = core.WORK / name
    work.mkdir(parents=True, exist_ok=True)
    (work / "known-findings.txt").unlink(missing_ok=True)
    outcome = Outcome(name)
    deadline = time.monotonic() + seconds if seconds else None
    for _ in range(MAX_RESTARTS):
        left = int(deadline - time.monotonic()) if deadline is not None else 0
        runs = inputs - outcome.inputs if inputs else -1
        if (deadline is not None and left < 1) or runs == 0 or (inputs and runs < 0):
            break
        started = time.monotonic()
        log_path = work / "last-run.log"
        with open(log_path, "wb") as log_file:
            subprocess.run([python, "-m", "tests.fuzz.run", name, "--seconds", str(left), "--runs", str(runs)],
                           cwd=core.REPO, stdout=log_file, stderr=subprocess.STDOUT,
                           timeout=left + 120 + 4 * target.per_input if left else None)
        outcome.seconds += time.monotonic() - started
        core.remove_stale_sandboxes()
        log = log_path.read_bytes()
        stats = STATS.findall(log)
        runs = RUNS.findall(log)
        outcome.inputs += int(runs[-1]) if runs else (int(stats[-1][0]) if stats else 0)
        if stats:
            outcome.cov = max(outcome.cov, int(stats[-1][1]))
            outcome.ft = max(outcome.ft, int(stats[-1][2]))
            outcome.corpus = max(outcome.corpus, int(stats[-1][3]))
        artifact = ARTIFACT.findall(log)
        if b"Done " in log and not artifact:
            break
        what = _finding(log)
        where = Path(artifact[-1].decode()).relative_to(core.REPO) if artifact else "no artifact"
        outcome.findings.append(f"{what} ({where})")
    known_file = work / "known-findings.txt"
    if known_file.exists():
        outcome.known = [line.split(":", 1)[0] for line in known_file.read_text(errors="replace").splitlines()]
    return outcome


def report(outcomes: list[Outcome], command: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Fuzz campaign, {stamp}", "", f"Command: `{command}`", "",
             "| target | seconds | inputs | inputs/s | cov | ft | corpus | new findings | known findings |",
             "|---|---:|---:|---:|---:|---:|---:|---|---|"]
    lines += [outcome.row() for outcome in outcomes]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.campaign", description=__doc__.split("\n")[0])
    parser.add_argument("targets", nargs="*", help="targets to run (default: all)")
    parser.add_argument("--seconds", type=int, default=15, help="seconds per target (0: no time limit)")
    parser.add_argument("--inputs", type=int, default=0, help="stop each target after this many inputs (0: none)")
    parser.add_argument("--summary", type=Path, default=SUMMARY, help="where to write the summary")
    args = parser.parse_args(argv)
    if not args.seconds and not args.inputs:
        parser.error("give --seconds or --inputs (a campaign must end)")
    names = args.targets or list(core.load_all())
    for name in names:
        core.get(name)
    outcomes = []
    for name in names:
        limits = [f"{args.seconds} s" if args.seconds else "", f"{args.inputs:,} inputs" if args.inputs else ""]
        print(f"fuzzing {name} for {' or '.join(filter(None, limits)) or 'ever'} ...", flush=True)
        outcome = run_target(name, args.seconds, sys.executable, args.inputs)
        outcomes.append(outcome)
        print(f"  {outcome.inputs:,} inputs, cov {outcome.cov}, ft {outcome.ft}, "
              f"{len(outcome.findings)} new findings, known: {', '.join(sorted(set(outcome.known))) or 'none'}",
              flush=True)
        for finding in outcome.findings:
            print(f"  finding: {finding}", flush=True)
    command = "python -m tests.fuzz.campaign " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(outcomes, command)
    args.summary.parent.mkdir(parents=True, exist_ok=True)
    args.summary.write_text(text)
    print(text)
    print(f"summary written to {args.summary}")
    return 1 if any(outcome.findings for outcome in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
