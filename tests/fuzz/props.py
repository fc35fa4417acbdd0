"""The fuzz targets as bounded Hypothesis properties, for ``make test`` (``tests/unit/test_fuzz_*.py``).

Inputs are a target's seeds (``tests/fuzz/corpus``) mutated by Hypothesis
(bytes replaced, inserted, cut; messages and frames recombined, the
dictionary's words spliced in), and plain random bytes. Runs are
derandomized and bounded by ``max_examples``, so each test takes a few
seconds and fails the same way every time. A finding listed in
``tests.fuzz.known`` is left to its own regression test.
"""
from __future__ import annotations

from typing import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz import core, known


def _seeds(target: core.Target) -> list[bytes]:
    directory = core.CORPUS / target.name
    files = sorted(directory.iterdir()) if directory.is_dir() else []
    return [path.read_bytes() for path in files] or [b""]


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[bytes], words: tuple[bytes, ...], max_len: int) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(("set", "insert", "cut", "word", "splice")))
        at = draw(st.integers(0, len(data)))
        if kind == "set" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(max_size=8))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 16))]
        elif kind == "word" and words:
            data[at:at] = draw(st.sampled_from(words))
        elif kind == "splice":
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, len(other)))
            data[at:] = other[start:]
    return bytes(data[:max_len])


def inputs(target: core.Target) -> st.SearchStrategy[bytes]:
    """Inputs for ``target``: its seeds mutated, whole messages recombined, and random bytes."""
    seeds = _seeds(target)
    mixed = st.lists(st.sampled_from(seeds), min_size=1, max_size=3).map(
        lambda chosen: core.join([frames for seed in chosen for frames in core.messages(seed)])[:target.max_len])
    return st.one_of(_mutated(seeds, target.words, target.max_len), mixed, st.binary(max_size=256))


def property_test(name: str, max_examples: int) -> Callable[[], None]:
    """A test function running target ``name`` on ``max_examples`` inputs (its setup entered once)."""
    target = core.get(name)

    def test() -> None:
        with target.setup() as one:
            @settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(inputs(target))
            def run(data: bytes) -> None:
                clock = core.Clock(target.per_input)
                with clock.bound(f"one {name} input"):
                    try:
                        one(data)
                    except Exception as exc:
                        if known.match(name, exc) is None:
                            raise
            run()
    test.__name__ = f"test_{name}_holds_its_promises"
    test.__doc__ = f"fuzz target {name} ({target.drives}), {max_examples} inputs."
    return test
