"""Write the seed corpora: ``tests/fuzz/corpus/<target>/<sha1 of the input>``, from what the tests send.

    python -m tests.fuzz.seeds            # every target
    python -m tests.fuzz.seeds intake     # one

Each target's ``seeds()`` builds its inputs with the project's own encoders
(``payload.pack_frame``, ``link.protocol``, ``wire.request``, the journal and
spool writers, the example config files), so the fuzzer starts from inputs
that reach deep. Files of a target no longer produced are removed; the
campaign's own finds stay in ``bench/results/fuzz-work``.
"""
from __future__ import annotations

import hashlib
import sys

from tests.fuzz import core


def write(name: str) -> int:
    """(Re)write the seed corpus of target ``name``; how many seeds it has."""
    target = core.get(name)
    directory = core.CORPUS / name
    directory.mkdir(parents=True, exist_ok=True)
    wanted = {}
    for seed in target.seeds():
        if len(seed) > target.max_len:
            raise SystemExit(f"error: a seed of {name} is {len(seed)} bytes, over its max_len of {target.max_len}")
        wanted[hashlib.sha1(seed).hexdigest()] = seed
    for old in directory.iterdir():
        if old.name not in wanted:
            old.unlink()
    for digest, seed in wanted.items():
        path = directory / digest
        if not path.exists():
            path.write_bytes(seed)
    return len(wanted)


def main(argv: list[str]) -> None:
    names = argv or sorted(core.load_all())
    for name in names:
        print(f"{name}: {write(name)} seeds in {core.CORPUS / name}")


if __name__ == "__main__":
    main(sys.argv[1:])
