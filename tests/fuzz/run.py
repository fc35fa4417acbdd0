"""Run one fuzz target under atheris (coverage-guided, libFuzzer), or replay inputs through it.

    python -m tests.fuzz.run TARGET --seconds 30        # a campaign: prints libFuzzer's #N and cov: lines
    python -m tests.fuzz.run TARGET --replay FILE...    # each file once, without atheris (a crash's artifact)
    python -m tests.fuzz.run --list

The growing corpus is ``bench/results/fuzz-work/TARGET/corpus`` (the seeds in
``tests/fuzz/corpus/TARGET`` are read, never written); a crashing input is
saved as ``bench/results/fuzz-work/TARGET/artifacts/crash-<sha1>``.
A finding listed in ``tests.fuzz.known`` (reported, its fix waiting) is
counted and noted once in ``known-findings.txt`` instead of stopping the run.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from tests.fuzz import known

INSTRUMENTED = ["eventbus"]


def _dictionary(words: tuple[bytes, ...], path: Path) -> Path:
    """A libFuzzer dictionary file of ``words``."""
    lines = ['"' + "".join(f"\\x{b:02x}" for b in word) + '"' for word in words if word]
    path.write_text("\n".join(lines) + "\n")
    return path


def _wrap(one, name: str, work: Path):
    """``one`` with the known findings (``tests.fuzz.known``) counted instead of raised."""
    noted: set[str] = set()

    def test_one_input(data: bytes) -> None:
        try:
            one(data)
        except Exception as exc:  # what a target raises is its finding
            entry = known.match(name, exc)
            if entry is None:
                raise
            if entry not in noted:
                noted.add(entry)
                with open(work / "known-findings.txt", "a") as out:
                    out.write(f"{entry}: {type(exc).__name__}: {str(exc)[:300]} (input {data[:120]!r})\n")
    return test_one_input


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n")[0])
    parser.add_argument("target", nargs="?")
    parser.add_argument("--seconds", type=int, default=30, help="how long to fuzz (libFuzzer -max_total_time)")
    parser.add_argument("--runs", type=int, default=-1, help="stop after this many inputs (-1: no limit)")
    parser.add_argument("--replay", nargs="+", metavar="FILE", help="run these inputs once each, no fuzzing")
    parser.add_argument("--list", action="store_true", help="list the targets")
    args = parser.parse_args(argv)

    if args.list or args.replay:
        from tests.fuzz import core

        if args.list:
            for target in core.load_all().values():
                print(f"{target.name:16} {target.drives}")
            return
        target = core.get(args.target)
        with target.setup() as one:
            for name in args.replay:
                one(Path(name).read_bytes())
                print(f"{name}: no finding")
        return
    if not args.target:
        parser.error("name a target (--list shows them)")

    import atheris

    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz import core

        target = core.get(args.target)
    core.remove_stale_sandboxes()
    work = core.WORK / target.name
    corpus, artifacts = work / "corpus", work / "artifacts"
    corpus.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    seeds = core.CORPUS / target.name
    options = [f"-max_total_time={args.seconds}", f"-runs={args.runs}", f"-max_len={target.max_len}",
               f"-timeout={max(1, math.ceil(target.per_input))}", f"-rss_limit_mb={target.rss_limit_mb}",
               f"-artifact_prefix={artifacts}/", "-print_final_stats=1", "-print_pcs=0"]
    if target.words:
        options.append(f"-dict={_dictionary(target.words, work / 'dictionary.txt')}")
    dirs = [str(corpus)] + ([str(seeds)] if seeds.is_dir() else [])
    with target.setup() as one:
        atheris.Setup([sys.argv[0], *options, *dirs], _wrap(one, target.name, work))
        atheris.Fuzz()


if __name__ == "__main__":
    main()
