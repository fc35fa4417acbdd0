"""What every fuzz target shares: the registry, the input framing, what counts as a finding, the sandbox.

A target is a context manager factory registered with ``@target``: entered
once (fixtures: temp dirs, sockets, a bus), it yields the one-input function
that atheris (``tests.fuzz.run``) and Hypothesis (``tests/unit/test_fuzz_*``)
call with bytes. The function drives the project's real parsing code and
raises ``Finding`` when an input breaks a promise; any other exception that
escapes it is a finding too (atheris records it as a crash).
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from eventbus.errors import EventBusError

# The modules holding targets, one per group.
GROUPS = ("tests.fuzz.bus", "tests.fuzz.link", "tests.fuzz.api", "tests.fuzz.stores", "tests.fuzz.configs",
          "tests.fuzz.fleet")
REPO = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
# Where campaigns keep their growing corpora, crash artifacts and sandboxes (gitignored).
WORK = REPO / "bench" / "results" / "fuzz-work"

# Messages of a multi-message input, and frames of a multi-frame message, are cut at these markers
# (in the dictionary each target hands libFuzzer, so mutations insert them too).
MESSAGE_MARK = b"\n~msg~\n"
FRAME_MARK = b"\n~fr~\n"

OneInput = Callable[[bytes], None]


class Finding(AssertionError):
    """An input broke a promise: the message says which and how."""


@dataclass(frozen=True)
class Target:
    """One fuzz target: what it drives, how to set it up, its bounds."""

    name: str
    drives: str
    setup: Callable[[], ContextManager[OneInput]]
    max_len: int = 4096
    per_input: float = 5.0           # seconds one input may take (libFuzzer -timeout; Hypothesis checks it too)
    rss_limit_mb: int = 2048
    words: tuple[bytes, ...] = ()    # libFuzzer dictionary entries
    seeds: Callable[[], list[bytes]] = list  # the seed corpus, from what the tests send (tests.fuzz.seeds)


TARGETS: dict[str, Target] = {}


def target(name: str, drives: str, **options) -> Callable[[Callable[[], Iterator[OneInput]]], Callable]:
    """Register a generator function (made a context manager) as the setup of target ``name``."""
    def register(setup: Callable[[], Iterator[OneInput]]) -> Callable:
        managed = contextlib.contextmanager(setup)
        TARGETS[name] = Target(name, drives, managed, **options)
        return managed
    return register


def load_all() -> dict[str, Target]:
    """Every registered target (importing the group modules)."""
    for module in GROUPS:
        importlib.import_module(module)
    return TARGETS


def get(name: str) -> Target:
    targets = load_all()
    if name not in targets:
        raise SystemExit(f"error: no fuzz target {name!r}; known: {', '.join(sorted(targets))}")
    return targets[name]


# -- input framing ------------------------------------------------------------------------


def messages(data: bytes) -> list[list[bytes]]:
    """The messages (each a list of frames) of a multi-message input."""
    return [message.split(FRAME_MARK) for message in data.split(MESSAGE_MARK)]


def join(messages_: list[list[bytes]]) -> bytes:
    """The input holding ``messages_`` (the inverse of ``messages``)."""
    return MESSAGE_MARK.join(FRAME_MARK.join(frames) for frames in messages_)


# -- what counts as a finding --------------------------------------------------------------


def expected(exc: BaseException) -> bool:
    """Whether ``exc`` is one of the documented errors (``eventbus/errors.py``)."""
    return isinstance(exc, EventBusError)


def only_documented(call: Callable[[], object], what: str) -> object:
    """``call()``; a documented error is fine (returns it), anything else is a ``Finding`` naming ``what``."""
    try:
        return call()
    except EventBusError as exc:
        return exc
    except RecursionError as exc:
        raise Finding(f"{what}: RecursionError (input nested too deep): {exc}") from exc
    except Exception as exc:
        raise Finding(f"{what}: {type(exc).__name__} outside the error tree: {exc}") from exc


class Tracebacks(logging.Handler):
    """Collects log records that carry a traceback: the project promises never to log one."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info and record.exc_info[0] is not None:
            error = f"{record.exc_info[0].__name__}: {record.exc_info[1]}"
            self.seen.append(f"{record.name}: {record.getMessage()[:300]} ({error[:300]})")
            return
        message = record.getMessage()
        if "Traceback (most recent call last)" in message:  # CherryPy and cheroot write it into the message
            last = [line for line in message.splitlines() if line.strip()][-1]
            self.seen.append(f"{record.name}: {last[:300]}")

    def check(self) -> None:
        if self.seen:
            seen, self.seen = self.seen, []
            raise Finding("a traceback was logged: " + "; ".join(seen[:3]))


@contextlib.contextmanager
def quiet_logs() -> Iterator[Tracebacks]:
    """Logs off (a fuzzer would print millions of refusals), tracebacks collected for ``check()``."""
    root = logging.getLogger()
    watcher = Tracebacks()
    old_level, old_handlers = root.level, root.handlers[:]
    root.handlers = [watcher]
    root.setLevel(logging.DEBUG)
    logging.disable(logging.NOTSET)
    try:
        yield watcher
    finally:
        root.handlers = old_handlers
        root.setLevel(old_level)


class Clock:
    """Checks that one input stayed within ``limit`` seconds (a hang libFuzzer's -timeout would also catch)."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    @contextlib.contextmanager
    def bound(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        took = time.monotonic() - start
        if took > self.limit:
            raise Finding(f"{what} took {took:.1f} s, over the bound of {self.limit:g} s")


# -- the sandbox -------------------------------------------------------------------------


class Sandbox:
    """A directory the code under test owns, nested three deep so that a write that climbs out is seen.

    ``inside`` is what the code is given; ``check()`` finds anything that
    appeared beside it, or beside its parents up to the sandbox root.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        shutil.rmtree(root, ignore_errors=True)
        self.inside = root / "a" / "b" / "in"
        self.inside.mkdir(parents=True)

    def check(self) -> None:
        for level, allowed in ((self.root, "a"), (self.root / "a", "b"), (self.root / "a" / "b", "in")):
            extra = [name for name in os.listdir(level) if name != allowed]
            if extra:
                for name in extra:
                    path = level / name
                    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
                raise Finding(f"a file was written outside its directory: {level / extra[0]}")

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _sandbox_base() -> Path:
    return Path(os.environ.get("EVENTBUS_FUZZ_TMP") or ("/dev/shm" if os.path.isdir("/dev/shm") else "/tmp"))


def checked(run: Callable[[bytes], object], watcher: Tracebacks, box: Sandbox) -> OneInput:
    """``run`` on one input, then what every target checks after it: no logged traceback, nothing outside."""
    def one(data: bytes) -> None:
        run(data)
        watcher.check()
        box.check()
    return one


@contextlib.contextmanager
def guarded(name: str) -> Iterator[tuple[Sandbox, Tracebacks]]:
    """Target ``name``'s sandbox and quiet logs, the sandbox removed when the target ends."""
    box = Sandbox(sandbox_root(name))
    with quiet_logs() as watcher:
        try:
            yield box, watcher
        finally:
            box.remove()


def sandbox_root(name: str) -> Path:
    """A short sandbox path for target ``name`` (IPC socket paths are limited to 107 bytes); in memory
    when the machine has ``/dev/shm`` (a file operation there costs a tenth of one on disk)."""
    return _sandbox_base() / f"ebfuzz-{os.getpid()}-{name}"


def remove_stale_sandboxes() -> None:
    """Remove the sandboxes of fuzz processes that ended (libFuzzer ends a run with ``exit``, so a
    target's own clean-up does not run)."""
    for path in _sandbox_base().glob("ebfuzz-*-*"):
        pid = path.name.split("-")[1]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            shutil.rmtree(path, ignore_errors=True)
