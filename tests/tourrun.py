"""Running one README block as its tour step says: a shell session, a Python or JavaScript program, a benchmark's
``--help``; then what the block shows against what came (``tests/e2e/test_readme_tour.py`` holds the steps).
"""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
from dataclasses import dataclass, field, replace as copy_block
from pathlib import Path
from textwrap import indent
from typing import Callable

import pytest

from tests.readme_tour import (CHECKER, REPO, Block, Command, Expect, checked_python, fields_named, first_match,
                               on_a_bus, session, tags_named)
from tests.tourkit import DEADLINE, Lines, Terminal, Tour, user_env


@dataclass
class Step:
    """How the tour runs one block; ``starts`` is the beginning of its text (the longest match wins)."""

    doc: str
    starts: str
    skip: str = ""                      # the block cannot run here, and why
    fixture: bool = False               # the block is `make run`: the tour's setup itself
    ran_by: str = ""                    # the block runs inside the step of the block starting so
    then: str = ""                      # after the commands: run the block starting so ("next": the next one)
    terminal: str = ""                  # what the block's first listener is called later ("terminal 2")
    skip_commands: dict[str, str] = field(default_factory=dict)  # command start -> why it is not run
    replace: dict[str, str] = field(default_factory=dict)  # text as written -> as run ({tour.x} filled in)
    notes: dict[str, str] = field(default_factory=dict)    # command start -> what its comment claims:
    #                                    "tags" it fires, "fields" of its output, or a "line" of it
    prints: dict[str, str] = field(default_factory=dict)   # command start -> what the prose says it prints (regex)
    capture: dict[str, str] = field(default_factory=dict)  # name -> regex (group 1) on the block's output
    any_number: bool = False            # the shown output is another session's: every number is a wildcard
    help: bool = False                  # benchmarks (minutes each): `--help` must know every flag shown
    prelude: str = ""                   # Python/JS before the block: what the document defines elsewhere
    epilogue: str = ""                  # Python after the block: what the prose around it promises
    wrap_async: bool = False            # top-level `async with` (an asyncio program's body)
    feed: tuple[tuple[str, dict], ...] = ()  # events fired every 0.1 s while a Python block runs
    until: str = ""                     # a Python block that loops forever: stop once its output matches
    config: Callable[[Tour, Path, Block], object] | None = None  # a yaml block, put in conf/ before make run
    before: Callable[[Tour], object] | None = None  # what the block assumes exists (run just before it)
    check: Callable[[Tour, Block], object] | None = None  # more to see once the block has run


def fill(text: str, tour: Tour) -> str:
    """``{tour.NAME}`` and ``{tour.NAME[KEY]}`` in a step's text, from this run."""
    def value(found: re.Match) -> str:
        named = getattr(tour, found.group(1))
        return str(named[found.group(2)] if found.group(2) else named)
    return re.sub(r"\{tour\.(\w+)(?:\[(\w+)\])?\}", value, text)


def as_run(block: Block, step: Step, tour: Tour) -> str:
    """The block's text with the step's replacements (each must still apply: the README may have moved on)."""
    text = block.text
    for old, new in step.replace.items():
        assert old in text, f"{block.where}: the step replaces {old!r}, which the block no longer has"
        text = text.replace(old, fill(new, tour))
    return text


def is_listener(command: str) -> bool:
    """A command a user leaves running in a terminal of its own."""
    return bool(re.search(r"\beventbus watch\b", command) or re.search(r"\bcurl\b[^|]*\s-N\b", command)
                or command.rstrip().endswith("&"))


def match_start(table: dict[str, str], command: str) -> str | None:
    """The value of the first key ``command`` starts with."""
    return next((value for start, value in table.items() if command.startswith(start)), None)


def run_session(tour: Tour, step: Step, blocks: list[Block]) -> list[str]:
    """The shell blocks' commands in order (listeners in terminals of their own, stopped at the end unless
    named), each checked against what the block shows; the problems found, each naming its line."""
    problems: list[str] = []
    block, *then = blocks
    commands = session(copy_block(block, text=as_run(block, step, tour))) + [c for b in then for c in session(b)]
    tour.ran.update(b.where for b in blocks)
    listening: list[tuple] = []
    for command in commands:
        where = f"{block.doc}:{command.line}"
        if match_start(step.skip_commands, command.text):
            continue
        text = tour.substitute(command.text)
        marks = {name: len(t.out) for name, t in tour.terminals.items()}
        if is_listener(text):
            try:
                terminal = tour.start(text)
            except AssertionError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if step.terminal and step.terminal not in tour.terminals:
                tour.terminals[step.terminal] = terminal
            listening.append((command, where, terminal))
            continue
        code, out = tour.shell.run(text)
        if code != 0:
            problems.append(f"{where}: `{command.text}` " + (f"did not finish within {DEADLINE:g} s" if code is None
                                                             else f"exited {code}") + ":\n" + "\n".join(out))
            continue
        problems += check_output(tour, step, command, where, out, marks)
        for name, pattern in step.capture.items():
            found = re.search(pattern, "\n".join(out), re.M)
            if found:
                tour.vars[name] = found.group(1)
    for command, where, terminal in listening:
        counted = "--count" in command.text
        if counted and not terminal.ended(DEADLINE):
            problems.append(f"{where}: `{command.text}` did not exit after its count within {DEADLINE:g} s; "
                            f"it printed:\n{terminal.printed()}")
        problems += check_output(tour, step, command, where, terminal.out, {}, waiting=True)
        if terminal.exited() and (terminal.popen.returncode != 0 or not counted):
            problems.append(f"{where}: `{command.text}` ended (exit {terminal.popen.returncode}):\n"
                            + terminal.printed())
        if terminal not in tour.terminals.values():
            terminal.stop()
    return problems


def check_output(tour: Tour, step: Step, command: Command, where: str, out: list[str] | Lines,
                 marks: dict[str, int], waiting: bool = False) -> list[str]:
    """What the document shows for one command, against its own output and the terminals' since ``marks``;
    ``waiting``: ``out`` is a listener's, still coming."""
    problems = []
    own = out.since() if waiting else out
    mine = [Expect(s.text, step.any_number) for s in command.shown if not s.terminal]
    if mine:
        if waiting:
            out.wait(lambda lines: first_match(mine, lines)[0] == len(mine), DEADLINE)
            own = out.since()
        if first_match(mine, own)[0] < len(mine):
            problems.append(mismatch(where, command.text, [s.text for s in command.shown if not s.terminal], own))
    expect = match_start(step.prints, command.text)
    if expect:
        if waiting:
            out.wait(lambda lines: re.search(expect, "\n".join(lines), re.M), DEADLINE)
            own = out.since()
        if not re.search(expect, "\n".join(own), re.M):
            problems.append(f"{where}: `{command.text}` should print /{expect}/ (the prose says so); got:\n"
                            + "\n".join(own))
    note = match_start(step.notes, command.text)
    if note == "fields":
        missing = [name for name in fields_named(command.note) if not any(line.startswith(name) for line in own)]
        if missing:
            problems.append(f"{where}: `{command.text}`  # {command.note}\n  names no {missing}; got:\n"
                            + "\n".join(own))
    elif note == "line" and first_match([Expect(command.note, any_number=True)], own)[0] < 1:
        problems.append(mismatch(where, command.text, [command.note], own))
    wanted: dict[str, list[Expect]] = {}
    for shown in command.shown:
        if shown.terminal:
            wanted.setdefault(shown.terminal, []).extend(on_a_bus(shown.text))
        if "on the bus" in shown.remark:
            wanted.setdefault("on the master bus", []).extend(on_a_bus(", then ".join(tags_named(shown.remark))))
    if note == "tags":
        for tag in tags_named(command.note):  # each of them, in any order
            problems += seen_on(tour, "on the master bus", on_a_bus(tag), marks, where)
    for name, patterns in wanted.items():
        if name == "on the master bus":
            # Each, in any order: events of different publishers (a reactor's action and the record of
            # its result) have no order between them on the bus.
            for pattern in patterns:
                problems += seen_on(tour, name, [pattern], marks, where)
        else:
            problems += seen_on(tour, name, patterns, marks, where)
    return problems


def seen_on(tour: Tour, name: str, expected: list[Expect], marks: dict[str, int], where: str) -> list[str]:
    """``expected`` in order in the terminal ``name`` since ``marks[name]``, within the deadline."""
    terminal = tour.terminals.get(name)
    if terminal is None:
        return [f"{where}: no {name!r} is running (its step failed?)"]
    start = marks.get(name, 0)
    if terminal.out.wait(lambda lines: first_match(expected, lines, start)[0] == len(expected), DEADLINE):
        return []
    return [f"{where}: {name} should show, in order:\n  " + "\n  ".join(map(str, expected))
            + "\ngot:\n" + "\n".join(terminal.out.since(start)[-30:])]


def mismatch(where: str, command: str, expected: list[str], got: list[str]) -> str:
    """A failure message: what the document shows for ``command``, and the end of what came."""
    return (f"{where}: `{command}` should show:\n  " + "\n  ".join(expected) + "\ngot:\n  " + "\n  ".join(got[-30:]))


def feeding(tour: Tour, events: tuple, stop: threading.Event) -> threading.Thread:
    """Fire ``events`` on the master bus every 0.1 s until ``stop``: what a block waits for (``salt/job``...)."""
    def feed() -> None:
        from eventbus import config, event

        with event.get_event("master", opts=config.client_config(tour.conf / "master"), listen=False) as bus:
            while not stop.wait(0.1):
                for tag, data in events:
                    bus.fire_event(data, tag)
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    return thread


def run_program(tour: Tour, step: Step, block: Block, interpreter: str, source: str) -> list[str]:
    """A Python or JavaScript block as a program in the tour's directory, fed and bounded as its step says."""
    suffix = ".js" if interpreter == "node" else ".py"
    path = Path(".tour") / f"{block.doc.replace('/', '-')}-{block.line}{suffix}"
    (tour.root / path).write_text(source)
    stop = threading.Event()
    feeder = feeding(tour, step.feed, stop) if step.feed else None
    program = Terminal(f"{interpreter} {path}", tour.root, tour.env)
    try:
        if step.until:
            if program.out.wait(lambda lines: re.search(step.until, "\n".join(lines), re.M), DEADLINE):
                return []
            return [f"{block.where}: no line /{step.until}/ within {DEADLINE:g} s; got:\n" + program.printed()]
        if not program.ended(DEADLINE):
            return [f"{block.where}: did not finish within {DEADLINE:g} s; got:\n" + program.printed()]
        if program.popen.returncode != 0:
            return [f"{block.where}: exited {program.popen.returncode}:\n" + program.printed()]
        return []
    finally:
        program.stop()
        stop.set()
        if feeder:
            feeder.join()


def run_python(tour: Tour, step: Step, block: Block) -> list[str]:
    """The block in the venv's Python, each value its comments show checked (``checked_python``)."""
    code = checked_python(tour.substitute(as_run(block, step, tour)), block)
    if step.wrap_async:
        code = f"import asyncio\n\nasync def __block__():\n{indent(code, '    ')}\n\nasyncio.run(__block__())\n"
    source = f"{CHECKER}\n{fill(step.prelude, tour)}\n{code}\n{step.epilogue}"
    return run_program(tour, step, block, ".venv/bin/python", source)


def run_js(tour: Tour, step: Step, block: Block) -> list[str]:
    """The block in Node.js, inside an async function (it awaits at the top level)."""
    if shutil.which("node", path=tour.env["PATH"]) is None:
        pytest.skip(f"{block.where}: no Node.js here")
    source = f"{fill(step.prelude, tour)}\n(async () => {{\n{tour.substitute(as_run(block, step, tour))}\n}})();\n"
    return run_program(tour, step, block, "node", source)


def run_help(step: Step, block: Block) -> list[str]:
    """Each benchmark command exists, and its `--help` knows every flag the document shows."""
    problems = []
    for command in session(block):
        if match_start(step.skip_commands, command.text):
            continue
        program = re.match(r"\S*python\S*\s+-m\s+[\w.]+", command.text)
        assert program, f"{block.where}: `{command.text}` is not a `python -m` command"
        done = subprocess.run(f"{program.group()} --help", shell=True, cwd=REPO, env=user_env(),
                              capture_output=True, text=True, timeout=60)
        flags = re.findall(r"(?<!\S)(--[\w-]+)", command.text)
        missing = [flag for flag in flags if not re.search(rf"(?<![\w-]){flag}(?![\w-])", done.stdout)]
        if done.returncode != 0 or missing:
            problems.append(f"{block.doc}:{command.line}: `{program.group()} --help` exited {done.returncode}"
                            f"{f', knows no {missing}' if missing else ''}:\n{done.stdout}{done.stderr}"[:2000])
    return problems
