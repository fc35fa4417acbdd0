"""The reactor against a real master (and a real minion): each action, templates, failures, reloads."""
from __future__ import annotations

import http.server
import json
import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
import yaml

from eventbus.cloudevents.jsonfile import file_stamp
from tests.helpers import Node, run_cli, wait_for
from tests.linkkit import Site, wait_link
from tests.reactorkit import Results, reactor_master, set_rules, status, wait_reactor

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.fixture
def started() -> Iterator[list]:
    """Masters (and Results) a test starts; all stopped and removed at the end."""
    made: list = []
    yield made
    for thing in reversed(made):
        if isinstance(thing, Results):
            thing.close()
        else:
            if thing.daemon is not None and thing.daemon.alive():
                thing.stop()
            thing.cleanup()


def start(started: list, reactor: list, **keys: object) -> tuple[Node, Results]:
    node = reactor_master(reactor, **keys)
    started.append(node)
    node.start()
    wait_reactor(node)
    results = Results(node)
    started.append(results)
    return node, results


def by_rule(results: list[dict]) -> dict[tuple[str, str], dict]:
    return {(result["rule"], result["action"]): result for result in results}


def test_fire_and_run_render_templates_and_chain_but_results_never_trigger(started: list) -> None:
    node, bus = start(started, [
        {"t/deploy/*": [
            {"fire": {"tag": "t/audit/{{ data.id }}", "data": {"app": "{{ data.app }}", "seq": "{{ seq }}"}}},
            {"run": {"argv": ["/bin/echo", "{{ data.app }} from {{ tag }}"]}},
        ]},
        {"t/audit/*": [{"run": {"argv": ["/bin/echo", "audit {{ tag }} {{ data.app }}"]}}]},
        {"eventbus/reactor/*": [{"fire": {"tag": "t/loop"}}]},
        {"*/result": [{"fire": {"tag": "t/loop"}}]},
        {"t/marker": [{"fire": {"tag": "t/marker/done"}}]},
    ])
    bus.fire("t/deploy/x", {"id": 7, "app": "shop"})
    results = by_rule(bus.wait_results(3))
    deploy_seq = bus.tagged("t/deploy/x")[0]["seq"]
    audit = bus.tagged("t/audit/7")
    assert audit and audit[0]["data"]["app"] == "shop" and audit[0]["data"]["seq"] == str(deploy_seq)
    fired = results[("t/deploy/*", "fire")]
    assert fired["ok"] is True and fired["seq"] == deploy_seq and fired["duration"] >= 0
    ran = results[("t/deploy/*", "run")]
    assert ran["ok"] is True and ran["rc"] == 0 and ran["stdout"] == "shop from t/deploy/x\n"
    chained = results[("t/audit/*", "run")]
    assert chained["stdout"] == "audit t/audit/7 shop\n" and chained["seq"] == audit[0]["seq"]
    # Nothing more comes: result events trigger no rule (not even '*/result'). Once the reactor's
    # cursor is past every result, anything they triggered would have run.
    bus.fire("t/marker", {})
    bus.wait_results(4)
    bus.settle(node)
    assert len(bus.results()) == 4 and not bus.tagged("t/loop")


def test_a_shell_injection_in_a_template_value_is_only_text(started: list, tmp_path: Path) -> None:
    victim = Path("/tmp") / f"eb-pwned-{time.time_ns()}"
    node, bus = start(started, [{"t/x": [{"run": {"argv": ["/bin/echo", "{{ data.v }}"]}}]}])
    attempts = [f"; touch {victim}", f"$(touch {victim})", f"`touch {victim}`", f"| touch {victim}",
                f"\ntouch {victim}"]
    for attempt in attempts:
        bus.fire("t/x", {"v": attempt})
    results = bus.wait_results(len(attempts))
    assert sorted(result["stdout"] for result in results) == sorted(attempt + "\n" for attempt in attempts)
    assert all(result["ok"] for result in results)
    assert not victim.exists()


def test_failing_commands_report_rc_bounded_output_timeouts_and_bad_templates(started: list) -> None:
    node, bus = start(started, [
        {"t/big": [{"run": {"argv": ["/bin/sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; exit 4"],
                            "max_output": 100}}]},
        {"t/missing": [{"run": {"argv": ["/nonexistent/tool", "x"]}}]},
        {"t/slow": [{"run": {"argv": ["/bin/sleep", "30"], "timeout": 0.5}}]},
        {"t/env": [{"run": {"argv": ["/usr/bin/env"], "env": {"ONLY": "this"}}}]},
        {"t/undefined": [{"run": {"argv": ["/bin/echo", "{{ data.nope }}"]}}]},
    ])
    for tag in ("t/big", "t/missing", "t/slow", "t/env", "t/undefined"):
        bus.fire(tag, {})
    results = {result["rule"]: result for result in bus.wait_results(5)}
    big = results["t/big"]
    assert big["ok"] is False and big["rc"] == 4 and big["stdout"] == "x" * 100 and "exited with 4" in big["error"]
    assert results["t/missing"]["ok"] is False and "/nonexistent/tool" in results["t/missing"]["error"]
    slow = results["t/slow"]
    assert slow["ok"] is False and "timed out" in slow["error"] and slow["duration"] < 10
    assert results["t/env"]["ok"] is True and results["t/env"]["stdout"] == "ONLY=this\n"
    undefined = results["t/undefined"]
    assert undefined["ok"] is False and "nope" in undefined["error"]

    def shown() -> dict:
        done = run_cli("reactor", "--status", "-c", str(node.config_dir))
        assert done.returncode == 0, done.stderr
        return dict(line.split(": ", 1) for line in done.stdout.splitlines())
    # The status file is rewritten within half a second of a change: wait for it to show the five results.
    lines = wait_for(lambda: (got := shown())["failed"] == "4" and got["cursor_lag"] == "0" and got, 15,
                     interval=0.1, what="the status to count the results")
    assert lines["rules"] == "5" and lines["done"] == "1" and lines["in_flight"] == "0"
    assert lines["running"].startswith("yes")


class Hook(http.server.BaseHTTPRequestHandler):
    received: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Hook.received.append((self.path, json.loads(body), self.headers.get("X-Token")))
        self.send_response(500 if self.path == "/fail" else 200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_an_idle_reactor_leaves_its_status_file_alone_and_a_reaction_shows_at_once(started: list) -> None:
    node, bus = start(started, [{"t/a": [{"fire": {"tag": "t/a/done"}}]}])
    path = node.root / "var/cache/eventbus/master/reactor/status.json"
    time.sleep(1.0)  # past the start's own changes
    written = file_stamp(path)  # each write makes a new file
    time.sleep(1.5)
    assert file_stamp(path) == written, "an idle reactor rewrote its unchanged status"
    bus.fire("t/a", {})
    bus.wait_results(1)
    assert wait_reactor(node, done=1)["in_flight"] == 0


def test_post_sends_the_rendered_body_and_reports_the_status(started: list) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        node, bus = start(started, [
            {"t/hook": [{"post": {"url": base + "/ok/{{ data.n }}", "body": {"tag": "{{ tag }}", "n": "{{ data.n }}"},
                                  "headers": {"X-Token": "s3"}}}]},
            {"t/fail": [{"post": {"url": base + "/fail", "body": {}}}]},
            {"t/nobody": [{"post": {"url": "http://127.0.0.1:9/x", "timeout": 2}}]},
        ])
        bus.fire("t/hook", {"n": 5})
        bus.fire("t/fail", {})
        bus.fire("t/nobody", {})
        results = {result["rule"]: result for result in bus.wait_results(3)}
    finally:
        server.shutdown()
    assert ("/ok/5", {"tag": "t/hook", "n": "5"}, "s3") in Hook.received
    assert results["t/hook"]["ok"] is True and results["t/hook"]["status"] == 200
    assert results["t/fail"]["ok"] is False and results["t/fail"]["status"] == 500
    assert results["t/nobody"]["ok"] is False and results["t/nobody"]["error"]


class KeptAliveHook(Hook):
    """``Hook`` over HTTP/1.1, noting each request's client port (one per connection)."""

    protocol_version = "HTTP/1.1"
    ports: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        KeptAliveHook.ports.append(self.client_address[1])
        super().do_POST()


def test_posts_to_one_host_reuse_kept_alive_connections(started: list) -> None:
    from eventbus.daemon.reactor.service import POOL_SIZES

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), KeptAliveHook)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        node, bus = start(started, [{"t/many": [{"post": {"url": f"http://127.0.0.1:{server.server_address[1]}/many",
                                                          "body": {"n": "{{ data.n }}"}}}]}])
        for n in range(40):
            bus.fire("t/many", {"n": n})
        results = bus.wait_results(40)
    finally:
        server.shutdown()
        server.server_close()
    assert [result["status"] for result in results] == [200] * 40
    assert len(KeptAliveHook.ports) == 40 and len(set(KeptAliveHook.ports)) <= POOL_SIZES["post"]


def test_target_fires_on_the_matching_minions_with_their_acks() -> None:
    site = Site()
    try:
        master = site.master(auto_accept=True, reactor=[
            {"t/go": [{"target": {"glob": "m*", "tag": "t/restart", "data": {"why": "{{ tag }}"}}}]},
            {"t/nowhere": [{"target": {"glob": "db*", "tag": "t/restart"}}]},
        ])
        master.start()
        minion = site.minion("m1")
        minion.start()
        from tests.linkkit import wait_link
        wait_link(minion, "accept")
        wait_reactor(master)
        from eventbus.event import MinionEvent
        on_minion = MinionEvent(minion.opts())
        bus = Results(master)
        try:
            bus.fire("t/go", {})
            bus.fire("t/nowhere", {})
            results = {result["rule"]: result for result in bus.wait_results(2)}
            got = on_minion.get_event(wait=10, tag="t/restart", full=True)
        finally:
            on_minion.destroy()
            bus.close()
    finally:
        site.cleanup()
    assert got is not None and got["data"]["why"] == "t/go"
    assert results["t/go"]["ok"] is True and results["t/go"]["acks"] == {"m1": True}
    assert results["t/nowhere"]["ok"] is False and "db*" in results["t/nowhere"]["error"]


def test_sighup_reloads_the_rules_without_missing_events(started: list) -> None:
    keep = {"t/c": [{"fire": {"tag": "t/c/done", "data": {"n": "{{ data.n }}"}}}]}
    node, bus = start(started, [keep, {"t/a": [{"fire": {"tag": "t/a/done"}}]}])
    set_rules(node, [keep, {"t/b": [{"fire": {"tag": "t/b/done"}}]}, {"t/b2": [{"fire": {"tag": "t/b/done"}}]}])
    for n in range(400):
        if n == 200:
            node.daemon.signal(signal.SIGHUP)
        bus.fire("t/c", {"n": n})
    wait_reactor(node, rules=3)
    bus.fire("t/a", {})
    bus.fire("t/b", {})
    wait_for(lambda: (bus._drain(), bus.tagged("t/b/done"))[1], 15, what="the new rule to react")
    bus.wait_results(401)
    bus.settle(node)
    assert sorted(int(event["data"]["n"]) for event in bus.tagged("t/c/done")) == list(range(400))
    assert not bus.tagged("t/a/done")
    # A broken config on reload keeps the rules that work, with one line saying why.
    set_rules(node, [{"t/z": [{"explode": {}}]}])
    node.daemon.signal(signal.SIGHUP)
    wait_for(lambda: "nothing reloaded" in node.daemon.log, 10, what="the reload refusal")
    line = [line for line in node.daemon.log.splitlines() if "nothing reloaded" in line][0]
    assert "unknown action 'explode'" in line and "Traceback" not in node.daemon.log
    bus.fire("t/b", {})
    wait_for(lambda: (bus._drain(), len(bus.tagged("t/b/done")) == 2)[1], 15, what="the kept rule")
    assert node.daemon.alive() and status(node)["rules"] == 3


def readme_rules() -> list:
    """The rules of the README's section "The reactor", as a user would paste them."""
    section = README.read_text().split("### The reactor", 1)[1].split("\n## ", 1)[0]
    return yaml.safe_load(section.split("```yaml\n", 1)[1].split("```", 1)[0])["reactor"]


def test_the_readme_rule_reacts_to_the_readme_send_through_a_real_minion() -> None:
    rules = readme_rules()
    actions = [kind for rule in rules for action in next(iter(rule.values())) for kind in action]
    if "run" in actions and not Path("/usr/bin/logger").exists():
        pytest.skip("the README's run action needs /usr/bin/logger")
    site = Site()
    try:
        master = site.master(reactor=rules)
        master.start()
        minion = site.minion("local-minion")
        minion.start()
        wait_link(minion, "pend")
        accepted = run_cli("key", "--accept", "local-minion", "-c", str(master.config_dir))
        assert accepted.returncode == 0, accepted.stderr
        wait_link(minion, "accept")
        wait_reactor(master)
        bus = Results(master)
        try:
            sent = run_cli("send", "myco/deploy/done", '{"app": "web"}', "version=7", "-c", str(minion.config_dir))
            assert sent.returncode == 0, sent.stderr
            results = bus.wait_results(len(actions))
            audit = wait_for(lambda: (bus._drain(), bus.tagged("myco/audit/local-minion"))[1], 15,
                             what="the audit event")
        finally:
            bus.close()
    finally:
        site.cleanup()
    assert sorted(result["action"] for result in results) == sorted(actions)
    assert all(result["ok"] and result["rule"] == "myco/deploy/*" for result in results), results
    assert len(audit) == 1 and {k: v for k, v in audit[0]["data"].items() if k != "_stamp"} == {"app": "web"}


@pytest.mark.parametrize("reactor, words", [
    ([{"a/*": [{"explode": {}}]}], "reactor rule 1 ('a/*'), action 1: unknown action 'explode'"),
    ([{"ok": [{"fire": {"tag": "x"}}]}, {"b/[": [{"fire": {"tag": "x"}}]}], "reactor rule 2 ('b/[')"),
    ([{"a": [{"fire": {"tag": "{% if %}"}}]}], "reactor rule 1 ('a'), action 1 (fire): template"),
])
def test_a_bad_rule_stops_the_master_with_one_line(reactor: list, words: str) -> None:
    node = reactor_master(reactor)
    try:
        done = run_cli("master", "-c", str(node.config_dir), timeout=30)
    finally:
        node.cleanup()
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ") and words in done.stderr
    assert "Traceback" not in done.stderr


def test_status_of_a_stopped_reactor_and_of_a_master_without_rules() -> None:
    node = reactor_master([{"t/a": [{"fire": {"tag": "t/b"}}]}])
    plain = Node(node.root / "plain", "master")
    try:
        shown = run_cli("reactor", "--status", "-c", str(node.config_dir))
        assert shown.returncode == 0, shown.stderr
        lines = dict(line.split(": ", 1) for line in shown.stdout.splitlines())
        assert lines["running"] == "no" and lines["rules"] == "1" and lines["cursor_lag"] == "unknown"
        # No rules is a state to report, not an error (a master takes rules on SIGHUP).
        empty = run_cli("reactor", "-c", str(plain.config_dir))
        assert empty.returncode == 0 and empty.stderr == ""
        lines = dict(line.split(": ", 1) for line in empty.stdout.splitlines())
        assert lines["running"] == "no" and lines["rules"] == "0" and lines["done"] == "0"
    finally:
        node.cleanup()


def test_a_result_over_max_event_size_is_reported_without_its_stdout(started: list) -> None:
    node, bus = start(started, [{"t/loud": [{"run": {"argv": ["/bin/sh", "-c", "head -c 5000 /dev/zero | tr '\\0' y"],
                                                     "max_output": 8192}}]}], max_event_size=2048)
    bus.fire("t/loud", {})
    result = bus.wait_results(1)[0]
    assert result["ok"] is True and result["rc"] == 0 and result["stdout"] == ""
    assert "max_event_size" in result["stdout_dropped"] and "error" not in result
