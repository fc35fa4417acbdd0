"""``eventbus watch --since`` and ``eventbus journal`` as a user types them."""
from __future__ import annotations

import datetime
import json
import time

from eventbus import event
from tests.helpers import run_cli, wait_for


def fire(node, tag: str, numbers: range) -> None:
    with event.get_event("master", opts=node.opts(), listen=False) as bus:
        for n in numbers:
            assert bus.fire_event({"n": n}, tag)


def watch(node, *args: str) -> list[tuple[str, dict]]:
    done = run_cli("watch", "-c", str(node.config_dir), *args, timeout=30)
    assert done.returncode == 0, done.stderr
    return [(line.split("\t")[0], json.loads(line.split("\t", 1)[1])) for line in done.stdout.splitlines()]


def test_since_zero_prints_everything_retained_in_order_then_follows(master):
    fire(master, "since/a", range(5))
    lines = watch(master, "since/*", "--since", "0", "--count", "5")
    assert [(tag, data["n"]) for tag, data in lines] == [("since/a", n) for n in range(5)]


def test_since_a_seq_is_exclusive_and_tagmatch_applies(master):
    fire(master, "since/a", range(3))
    with event.get_event("master", opts=master.opts()) as bus:
        seqs = [r["seq"] for _, r in zip(range(3), bus.follow(0, tag="since/"))]
    fire(master, "other/x", range(2))
    fire(master, "since/a", range(3, 5))
    lines = watch(master, "since/*", "--since", str(seqs[1]), "--count", "3")
    assert [data["n"] for _tag, data in lines] == [2, 3, 4]


def test_since_a_duration_or_an_iso_time(master):
    fire(master, "t/old", range(2))
    time.sleep(1.1)  # the events below must be newer than the boundary by wall-clock time
    boundary = datetime.datetime.now(datetime.timezone.utc)
    fire(master, "t/new", range(2, 4))
    iso = boundary.replace(tzinfo=None).isoformat()  # no offset: UTC, as SPEC says
    assert [d["n"] for _t, d in watch(master, "t/*", "--since", iso, "--count", "2")] == [2, 3]
    assert [d["n"] for _t, d in watch(master, "t/*", "--since", "-1h", "--count", "4")] == [0, 1, 2, 3]


def test_bad_since_is_one_clear_line(master):
    done = run_cli("watch", "-c", str(master.config_dir), "--since", "yesterday")
    assert done.returncode == 2
    assert done.stderr.strip().startswith("error:") and "'yesterday' is not a seq" in done.stderr
    assert "Traceback" not in done.stderr


def test_journal_prints_its_figures(master):
    fire(master, "j/x", range(3))
    wait_for(lambda: "events: 3" in run_cli("journal", "-c", str(master.config_dir)).stdout, what="3 journaled")
    done = run_cli("journal", "-c", str(master.config_dir))
    fields = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert int(fields["last_seq"]) - int(fields["first_seq"]) == 2
    assert fields["first_time"] <= fields["last_time"] and len(fields["first_time"]) == 26
    assert int(fields["bytes"]) > 0 and fields["segments"] == "1"
