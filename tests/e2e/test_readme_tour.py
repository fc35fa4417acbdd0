"""The README's tour, and the docs' sessions, run as a user runs them on ``make run``; an example that stops
working fails here.

Every fenced ``sh``/``bash``/``python``/``js``/``yaml`` block of README.md and
docs/*.md (and every unlabeled block that is a session) must have a step in
``STEPS``: a new example cannot go untested. A step runs its block on a
``make run``-like setup (``tests/tourkit.py``): shell commands in one bash in
a directory with ``conf/`` and ``.venv`` (listeners in terminals of their own),
Python and JavaScript in the venv's interpreter and Node.js; then it compares
what the block shows (``tests/readme_tour.py``: times, ids, seqs, secrets and
``...`` are wildcards) with what came. Each document gets a fresh ``make run``.
Substitutions are few and each is written where it applies: the API's free
port for 8000, this run's token and password (``Tour.substitute``), a local
receiver for example hosts, and the per-step ``replace`` entries below.
"""
from __future__ import annotations

import os
import re
import uuid
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

from tests.readme_tour import Block, Expect, doc_blocks
from tests.tourkit import Tour, json_lines, until
from tests.tourrun import Step, run_help, run_js, run_python, run_session, seen_on

OPTS = 'import eventbus.config, eventbus.event\nopts = eventbus.config.client_config("conf/master")\n'
FIRE = """.venv/bin/eventbus fire '{"message": "It works!"}' myco/event/success --node master -c conf"""


# --- Checks and configs that name what the prose around a block promises.

def reactor_rule_is_the_samples(tour: Tour, block: Block) -> None:
    """The README's rule is valid master config, and conf/master (what make run uses) ships its actions."""
    from eventbus import config

    rule = yaml.safe_load(block.text)
    trial = tour.root / "rule-check" / "master"
    trial.parent.mkdir()
    trial.write_text(yaml.safe_dump({"root_dir": str(trial.parent), **rule}))
    config.load(config.MasterConfig, trial)
    shipped = yaml.safe_load((tour.conf / "master").read_text()).get("reactor") or []
    assert shipped, "conf/master ships no reactor rule"
    for glob_actions in shipped:
        for glob, actions in glob_actions.items():
            readme = next((r[glob] for r in rule["reactor"] if glob in r), None)
            assert readme is not None and all(action in readme for action in actions), \
                f"conf/master's rule {glob!r} {actions} is not the README's {rule['reactor']}"


def master_survives_sighup(tour: Tour, _block: Block) -> None:
    """`kill -HUP` reloads: the master logs its one SIGHUP line and goes on serving."""
    from eventbus.bus import control

    until(lambda: "SIGHUP:" in tour.log() or tour.run.proc.poll() is not None,
          "the master's SIGHUP line", tour.log)
    assert tour.run.proc.poll() is None, f"make run ended after the SIGHUP:\n{tour.log()}"
    control.ping(tour.master_sock_dir, timeout=5)


def readme_forward(tour: Tour, conf: Path, block: Block) -> None:
    """The README's forward file, with a fresh local PostgreSQL database for `db.example`."""
    import psycopg

    database = f"ebtour_{uuid.uuid4().hex[:12]}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as db:
        db.execute(f'CREATE DATABASE "{database}"')

    def drop() -> None:
        with psycopg.connect(admin, autocommit=True) as db:
            db.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    tour.cleanups.append(drop)
    tour.vars["pg_url"] = f"postgresql://postgres@127.0.0.1:5432/{database}"
    text = block.text.replace("postgresql://eventbus@db.example/events", tour.vars["pg_url"])
    assert text != block.text, "the README's forward block no longer names db.example: update the tour"
    (conf / "forward").write_text(text)
    os.environ["EVENTBUS_DB_PASSWORD"] = "unused-with-trust"  # the block's password_env; the forwarder inherits it
    tour.cleanups.append(lambda: os.environ.pop("EVENTBUS_DB_PASSWORD", None))


def forward_delivers(tour: Tour, _block: Block) -> None:
    """Both brokers up; the tour's myco/* events, and only those, in the file; every event in PostgreSQL."""
    import psycopg

    def status() -> str:
        done = tour.shell.run(".venv/bin/eventbus forward --status -c conf")
        return "\n".join(done[1])
    until(lambda: re.search(r"^events-file file up", s := status(), re.M) and re.search(r"^db sql up", s, re.M),
          "`forward --status`: events-file and db up", status)
    path = tour.root / "run" / "forwarded_events.log"
    until(lambda: any(r.get("tag") == "myco/event/success" for r in json_lines(path)),
          f"myco/event/success in {path}", lambda: path.read_text() if path.exists() else "(no file)")
    assert all(r["tag"].startswith("myco/") and set(r) >= {"seq", "tag", "data"} for r in json_lines(path))

    def rows() -> list[str]:
        with psycopg.connect(tour.vars["pg_url"]) as db:
            return [tag for (tag,) in db.execute("SELECT tag FROM events ORDER BY seq")]
    # The db broker names no tags: every event (the default ['*']).
    until(lambda: {"myco/event/success", "salt/key"} <= set(rows()), "myco/event/success and salt/key in PostgreSQL",
          lambda: str(rows()))


def merge_into_master(tour: Tour, conf: Path, block: Block) -> None:
    keys = yaml.safe_load((conf / "master").read_text())
    keys.update(yaml.safe_load(tour.substitute(block.text)))
    (conf / "master").write_text(yaml.safe_dump(keys))


def on_the_bus(shown: str) -> Callable[[Tour, Block], None]:
    """A check: an event as ``shown`` (``TAG DATA``) on the master bus since the block began."""
    def check(tour: Tour, block: Block) -> None:
        problems = seen_on(tour, "on the master bus", [Expect(shown)], {"on the master bus": tour.marks[block.where]},
                           block.where)
        assert not problems, problems[0]
    return check


def fleet_config_loads(tour: Tour, block: Block) -> None:
    """A docs/fleet.md config loads as written (tests/integration/test_several_masters_docs.py runs each on daemons)."""
    from eventbus import config

    node = block.text.split()[1].rsplit("/", 1)[-1]  # "# /etc/eventbus/minion on web1"
    path = tour.root / "fleet-check" / str(block.line) / node
    path.parent.mkdir(parents=True)
    path.write_text(block.text)
    # The fleet-wide bus's blocks read their NATS password from the master service's environment.
    had = os.environ.get("NATS_PASSWORD")
    os.environ["NATS_PASSWORD"] = "the-fleet-password"
    try:
        config.load(config.MasterConfig if node == "master" else config.MinionConfig, path)
    finally:
        if had is None:
            del os.environ["NATS_PASSWORD"]
        else:
            os.environ["NATS_PASSWORD"] = had


def a_second_minion(minion_id: str) -> Callable[[Tour], None]:
    """The minion the example names, on this host, its key pending at the master."""
    def start(tour: Tour) -> None:
        conf = tour.root / minion_id / "conf"
        conf.mkdir(parents=True)
        keys = yaml.safe_load((tour.conf / "minion").read_text())
        (conf / "minion").write_text(yaml.safe_dump({**keys, "id": minion_id}))
        tour.start_daemon(f".venv/bin/eventbus minion -c {conf}")

        def status() -> str:
            return "\n".join(tour.shell.run(".venv/bin/eventbus key --list -c conf")[1])
        until(lambda: re.search(rf"Unaccepted Keys:\n(.+\n)*?{minion_id}$", status(), re.M),
              f"{minion_id}'s key pending", status)
    return start


STEPS = [
    # README.md: the five-minute tour, in order, on one make run.
    Step("README.md", "make run     # creates",
         skip="`make run` is the tour's fixture (MakeRun: python -m eventbus.cli.devrun on a copy of conf/); "
              "`make test` runs this very test"),
    Step("README.md", "make run", fixture=True),
    Step("README.md", ".venv/bin/eventbus watch -c conf", terminal="terminal 2"),
    Step("README.md", FIRE + "\n# terminal 2:"),
    # "in terminal 2, one of:" these listeners, "then in terminal 3 fire what they match" (the next block).
    Step("README.md", ".venv/bin/eventbus watch 'myco/*/success'", then="next",
         prints={".venv/bin/eventbus watch 'myco/*/success'": r"^myco/event/success\t",
                 ".venv/bin/eventbus watch 'myco/.*/success'": r'"message": "It works!"',
                 ".venv/bin/eventbus watch 'myco/*' -c conf | while": r"^saw myco/event/success$"}),
    Step("README.md", FIRE, ran_by=".venv/bin/eventbus watch 'myco/*/success'"),
    # It waits up to 10 s for a salt/job event, and forever for custom/N: both are fed.
    Step("README.md", "import eventbus.config, eventbus.event\n\nopts",
         replace={"\n        ...": "\n        break  # the tour: one event is enough"},
         feed=(("salt/job/20261205/ret/local-minion", {"return": True}), ("custom/1", {"n": 1}))),
    Step("README.md", "import eventbus.aio", prelude=OPTS, wrap_async=True,
         replace={"\n            ...": "\n            break  # the tour: one event is enough"},
         feed=(("myco/tour/async", {"n": 2}),)),
    Step("README.md", ".venv/bin/eventbus watch 'myco/*' --since 0",
         notes={".venv/bin/eventbus journal": "fields"},
         prints={".venv/bin/eventbus watch 'myco/*' --since 0": r"^myco/event/success\t"}),
    Step("README.md", 'with eventbus.event.get_event("master", opts=opts) as bus:\n    for record in bus.follow',
         prelude=OPTS, replace={"\n        ...": "\n        break  # the tour: one record is enough"}),
    # The stream shows the tour's event: fired again (terminal 3's command) once the stream is open.
    Step("README.md", "curl -N 'localhost:8000/events?token=<token>'", then=FIRE + "\n# terminal 2:"),
    Step("README.md", "curl -s localhost:8000/login",
         notes={"curl -s localhost:8000/hook": "tags"}, prints={"curl -s localhost:8000/login": r'"token": "'}),
    Step("README.md", ".venv/bin/eventbus key --list",
         notes={".venv/bin/eventbus key --accept": "tags"},
         prints={".venv/bin/eventbus key --list": r"^Unaccepted Keys:\nlocal-minion$"}),
    Step("README.md", "reactor:\n  - 'myco/deploy/*'", check=reactor_rule_is_the_samples),
    Step("README.md", ".venv/bin/eventbus send myco/deploy/done '{\"app\": \"web\"}' version=7 -c conf\n# on",
         notes={".venv/bin/eventbus reactor --status": "fields", ".venv/bin/eventbus status": "line"},
         replace={"kill -HUP 4242": "kill -HUP {tour.master_pid}"}, check=master_survives_sighup),
    Step("README.md", "root_dir: ../run\nbrokers:", config=readme_forward, check=forward_delivers),
    Step("README.md", "from eventbus.sink import",
         epilogue="from eventbus.sink import METHODS\n"
                  "sink = MySink.from_endpoint_config({'endpoint': 'https://example.invalid'})\n"
                  "assert isinstance(sink, MySink) and all(callable(getattr(sink, m)) for m in METHODS)\n"),
    Step("README.md", "cat > order.schema.json", capture={"secret": r"^secret: (\S+)$", "url": r"^url: (\S+)$"}),
    Step("README.md", "body='{\"specversion\""),
    Step("README.md", 'const crypto = require("crypto");',
         prelude='const event = {specversion: "1.0", id: "o-js", source: "/shop", type: "com.example.order", '
                 'version: "1.0", data: {order: {qty: 2}}};\n'
                 'const secret = "{tour.vars[secret]}";\nconst url = "{tour.vars[url]}";\n',
         check=on_the_bus('cloudevents/com.example.order {..., "id": "o-js", ...}')),
    Step("README.md", "from eventbus.cloudevents import send",
         prelude='url = "{tour.vars[url]}"\nsecret = "{tour.vars[secret]}"\n',
         check=on_the_bus('cloudevents/com.example.order {..., "source": "/shop", ...}')),
    Step("README.md", "make bench", help=True,
         skip_commands={"make bench": "every benchmark, about 30 minutes"}),
    Step("README.md", "make test",
         skip="`make test` runs the whole suite (this test too), `pytest tests/unit` is part of it, "
              "`make bench` takes about 30 minutes"),
    # docs/api.md
    Step("docs/api.md", "curl -N 'http://127.0.0.1:8000/events?token=<token>'",
         replace={"open '": "curl -sf -o /dev/null '"}),  # no browser here: the page must be served
    Step("docs/api.md", ".venv/bin/eventbus user add watcher -c conf",
         replace={".venv/bin/eventbus user add watcher -c conf":  # no terminal to type into: the doc's other way
                  "echo pw | .venv/bin/eventbus user add watcher --password-stdin -c conf"},
         skip_commands={".venv/bin/eventbus api -c conf": "make run, the fixture, runs exactly this on this port"},
         notes={"curl -s localhost:8000/hook": "tags"}, prints={"curl -s localhost:8000/login": r'"token": "'}),
    # docs/bench.md: command lines of benchmarks that take minutes each.
    Step("docs/bench.md", "make bench", skip="every benchmark, about 30 minutes"),
    Step("docs/bench.md", ".venv/bin/python -m bench.bus", help=True),
    Step("docs/bench.md", ".venv/bin/python -m bench.callgrind", help=True),
    Step("docs/bench.md", ".venv/bin/python -m bench.brokers", help=True),
    Step("docs/bench.md", ".venv/bin/python -m bench.forward [", help=True),
    Step("docs/bench.md", ".venv/bin/python -m bench.forward --sinks", help=True),
    # docs/fuzz.md: campaigns take minutes per target; their flags must be the runner's
    Step("docs/fuzz.md", "make fuzz ", skip="every fuzz target for minutes (tests/unit/test_fuzz_*.py run the same "
                                           "targets, bounded, in make test)"),
    Step("docs/fuzz.md", ".venv/bin/python -m tests.fuzz.run --list", help=True),
    # docs/journal.md
    Step("docs/journal.md", "import eventbus.config, eventbus.event", until=r"^\d+ myco/event/success ",
         feed=(("myco/event/success", {"message": "It works!"}),)),
    Step("docs/journal.md", ".venv/bin/eventbus watch 'myco/*' --since 0",
         notes={".venv/bin/eventbus journal": "fields"}),
    # docs/link.md
    Step("docs/fleet.md", "# /etc/eventbus/", check=fleet_config_loads),
    Step("docs/fleet.md", ".venv/bin/eventbus fire '{\"n\": 1}' myco/hello --node master -c conf/cluster/a",
         skip="needs make cluster, not make run: tests/e2e/test_make_cluster.py runs it as written"),
    Step("docs/link.md", "make run",
         skip_commands={"make run": "the tour's fixture"},
         notes={".venv/bin/eventbus key --list": "fields", ".venv/bin/eventbus key --accept": "tags"}),
    Step("docs/link.md", "import eventbus.config, eventbus.event\nopts = eventbus.config.minion_config"),
    Step("docs/link.md", "from eventbus import config\nfrom eventbus.bus.admin", before=a_second_minion("web1")),
    # docs/metrics.md
    Step("docs/metrics.md", "# prometheus.yml",
         skip="a Prometheus config; there is no Prometheus here (tests/e2e/test_metrics.py scrapes /metrics)"),
    # docs/reactor.md
    Step("docs/reactor.md", "reactor:\n  - 'myco/deploy/*'", config=merge_into_master),
    Step("docs/reactor.md", "$ .venv/bin/eventbus reactor --status", any_number=True),
]

BLOCKS = doc_blocks()


def step_for(block: Block) -> Step | None:
    """The step whose ``starts`` is the longest beginning of the block's text."""
    steps = [s for s in STEPS if s.doc == block.doc and block.text.lstrip().startswith(s.starts)]
    return max(steps, key=lambda s: len(s.starts), default=None)


def block_for(doc: str, starts: str, after: Block | None = None) -> Block:
    """The block a step names by its ``starts`` ("next": the one after ``after``)."""
    if starts == "next":
        return BLOCKS[BLOCKS.index(after) + 1]
    return next(b for b in BLOCKS if b.doc == doc and step_for(b) and step_for(b).starts == starts)


class Tours:
    """One make run per document, started when its first runnable block comes, stopped at the next document."""

    def __init__(self) -> None:
        self.doc, self.tour, self.failed = "", None, ""

    def get(self, doc: str) -> Tour:
        if doc != self.doc:
            self.close()
            self.doc = doc
            configs = [(s, b) for b in BLOCKS if b.doc == doc and (s := step_for(b)) and s.config]
            try:
                self.tour = Tour(prepare=lambda tour, conf: [s.config(tour, conf, b) for s, b in configs])
            except Exception as exc:  # noqa: BLE001 (every later block of the document names it)
                self.failed = f"make run for {doc} did not come up: {exc}"
        if self.tour is None:
            pytest.fail(self.failed)
        return self.tour

    def close(self) -> None:
        if self.tour is not None:
            self.tour.close()
        self.doc, self.tour, self.failed = "", None, ""


@pytest.fixture(scope="module")
def tours() -> Iterator[Tours]:
    keeper = Tours()
    yield keeper
    keeper.close()


# Blocks the tour cannot run (each step says why); test_what_the_tour_does_not_run names them.
NOT_RUN = [b for b in BLOCKS if (s := step_for(b)) is not None and s.skip]
RUN = [b for b in BLOCKS if b not in NOT_RUN]


@pytest.mark.parametrize("block", RUN, ids=[b.where for b in RUN])
def test_the_documents_examples_run_as_shown(block: Block, tours: Tours) -> None:
    step = step_for(block)
    if step is None:
        pytest.fail(f"{block.doc} block at line {block.line} has no tour step: add one to STEPS in {__file__}\n"
                    f"{block.text[:300]}")
    if step.help:
        problems = run_help(step, block)
    else:
        tour = tours.get(block.doc)
        tour.marks[block.where] = len(tour.terminals["on the master bus"].out)
        if step.before:
            step.before(tour)
        if step.fixture:
            assert "Ctrl-C stops everything." in tour.run.printed
            problems = []
        elif step.ran_by:
            assert block.where in tour.ran, f"{block.where} should have run within the step of {step.ran_by!r}"
            problems = []
        elif block.lang in ("sh", "bash", "session"):
            then = [block_for(block.doc, step.then, block)] if step.then else []
            problems = run_session(tour, step, [block, *then])
        elif block.lang == "python":
            problems = run_python(tour, step, block)
        elif block.lang == "js":
            problems = run_js(tour, step, block)
        else:
            assert step.config or step.check, f"{block.where}: a yaml block needs a config or a check"
            problems = []
        if step.check and not problems:
            step.check(tour, block)
    assert not problems, "\n\n".join(problems)


def test_every_step_is_some_blocks_step() -> None:
    """A step whose block changed or went away is named, so the table follows the documents."""
    stale = [f"{s.doc}: {s.starts[:60]!r}" for s in STEPS if not any(step_for(b) is s for b in BLOCKS)]
    assert not stale, "steps that match no block (update them):\n" + "\n".join(stale)


def test_what_the_tour_does_not_run_is_the_short_known_list() -> None:
    """Only a whole-suite or half-hour command, and a config for a program not on this machine, go unrun."""
    reasons = {(b.doc, step_for(b).starts.split()[:2][-1]): step_for(b).skip for b in NOT_RUN}
    assert sorted(reasons) == [("README.md", "run"), ("README.md", "test"), ("docs/bench.md", "bench"),
                               ("docs/fleet.md", "fire"), ("docs/fuzz.md", "fuzz"),
                               ("docs/metrics.md", "prometheus.yml")], reasons
