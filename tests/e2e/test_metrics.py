"""``GET /metrics`` and ``eventbus status`` against real daemons: a master, a minion, a forwarder, the API."""
from __future__ import annotations

import stat
import time
from typing import Iterator

import jwt
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.apinode import JWT_SECRET, ApiEnv, running_api
from tests.forwardkit import Forwarder, fire_many
from tests.helpers import Node, run_cli, short_tmpdir, wait_for
from tests.sse import SSEReader


def scrape(env: ApiEnv, **headers: str) -> dict[tuple[str, tuple], float]:
    """``{(sample name, sorted labels): value}`` of one scrape, parsed by prometheus_client's own parser."""
    answer = requests.get(env.url("/metrics"), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def admin_jwt(role: str = "admin", user: str = "ops") -> str:
    return jwt.encode({"user": {"username": user, "role": role}, "exp": int(time.time()) + 600}, JWT_SECRET,
                      algorithm="HS256")


@pytest.fixture
def linked_api() -> Iterator[tuple[ApiEnv, Node, Forwarder]]:
    """The API on a master with one present minion ``m1`` and a forwarder with a file broker ``out``."""
    with running_api(master_keys={"auto_accept": True, "heartbeat_interval": 0.3}) as env:
        master = env.master
        minion = Node(short_tmpdir("ebn"), "minion", id="m1", master="127.0.0.1", heartbeat_interval=0.3,
                      publish_port=master.keys["publish_port"], ret_port=master.keys["ret_port"])
        forward = Forwarder(master, [{"name": "out", "type": "file", "path": "out.jsonl"}])
        try:
            minion.start()
            forward.start()
            wait_for(lambda: "m1" in _present(env), 20, interval=0.05, what="m1 to be present")
            yield env, minion, forward
        finally:
            forward.stop()
            minion.stop()
            minion.cleanup()


def _present(env: ApiEnv) -> list[str]:
    from eventbus.bus.admin import Admin

    return Admin.for_master(env.master.settings).link_status()["present"]


def test_metrics_after_known_traffic(linked_api):
    env, minion, forward = linked_api
    token = env.login("alice")
    before = scrape(env, **{"X-Auth-Token": token})
    fire_many(env.master, 40, tag="myco/metrics")
    from eventbus import event

    with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
        for n in range(5):
            assert handle.fire_master({"n": n}, "myco/relayed") is True
    forward.wait_delivered("out", 45)
    stream = requests.get(env.url("/events"), headers={"X-Auth-Token": token}, stream=True, timeout=10)
    try:
        assert stream.status_code == 200
        after = wait_for(lambda: (s := scrape(env, **{"X-Auth-Token": token}))
                         [("eventbus_sse_streams", ())] >= 1 and s, 20, interval=0.05, what="the stream counted")
    finally:
        stream.close()

    def value(name: str, **labels: str) -> float:
        return after[(name, tuple(sorted(labels.items())))]

    # 40 fired + 5 relayed, and nothing else fired meanwhile: exactly 45 more published.
    assert value("eventbus_events_total") - before[("eventbus_events_total", ())] == 45
    assert value("eventbus_relay_spooled_total") - before[("eventbus_relay_spooled_total", ())] == 5
    assert value("eventbus_minions_connected") == 1
    assert value("eventbus_minions_present") == 1
    assert value("eventbus_minion_present", minion="m1") == 1
    # The API's bus feed and the forwarder at least.
    assert value("eventbus_listeners") >= 2
    assert value("eventbus_listener_lost_total") == 0
    assert value("eventbus_sse_streams") == 1
    assert value("eventbus_journal_bytes") > 0
    assert value("eventbus_forward_delivered_total", broker="out") >= 45
    assert value("eventbus_forward_pending", broker="out") == 0
    assert value("eventbus_forward_dropped_total", broker="out") == 0
    assert value("eventbus_forward_up", broker="out") == 1
    assert value("eventbus_up", daemon="master") == 1
    assert value("eventbus_up", daemon="forward") == 1
    text = requests.get(env.url("/metrics"), headers={"X-Auth-Token": token}, timeout=10).text
    for name, kind in [("eventbus_events_total", "counter"), ("eventbus_listeners", "gauge"),
                       ("eventbus_listener_lost_total", "counter"), ("eventbus_minions_connected", "gauge"),
                       ("eventbus_minions_present", "gauge"), ("eventbus_relay_spooled_total", "counter"),
                       ("eventbus_relay_throttled_total", "counter"),
                       ("eventbus_sse_streams", "gauge"), ("eventbus_journal_bytes", "gauge"),
                       ("eventbus_forward_delivered_total", "counter"), ("eventbus_forward_pending", "gauge"),
                       ("eventbus_forward_dropped_total", "counter"),
                       ("eventbus_cloudevents_accepted_total", "counter"),
                       ("eventbus_cloudevents_refused_total", "counter")]:
        # prometheus_client names a counter's family with or without _total, by version.
        family = name[:-len("_total")] if kind == "counter" else name
        assert f"# TYPE {name} {kind}\n" in text or f"# TYPE {family} {kind}\n" in text, name
        assert f"# HELP {name} " in text or f"# HELP {family} " in text, name


def test_metrics_access_rules():
    with running_api() as env:
        answer = requests.get(env.url("/metrics"), timeout=10)
        assert answer.status_code == 401
        assert "no credentials" in answer.json()["return"]
        bob = env.login("bob")  # perms myco/*: not an admin
        answer = requests.get(env.url("/metrics"), headers={"X-Auth-Token": bob}, timeout=10)
        assert answer.status_code == 403 and "bob" in answer.json()["return"]
        answer = requests.get(env.url("/metrics"), headers={"Authorization": f"Bearer {admin_jwt('user')}"},
                              timeout=10)
        assert answer.status_code == 403
        answer = requests.get(env.url("/metrics"), headers={"Authorization": "Bearer not-a-jwt"}, timeout=10)
        assert answer.status_code == 401
        assert scrape(env, **{"X-Auth-Token": env.login("alice")})[("eventbus_up", (("daemon", "master"),))] == 1
        assert scrape(env, Authorization=f"Bearer {admin_jwt()}")[("eventbus_up", (("daemon", "master"),))] == 1
        # A daemon that is down is a 0, not an error.
        env.master.stop()
        down = scrape(env, Authorization=f"Bearer {admin_jwt()}")
        assert down[("eventbus_up", (("daemon", "master"),))] == 0
        assert ("eventbus_events_total", ()) not in down


def test_metrics_public_needs_no_token():
    with running_api(metrics_public=True) as env:
        samples = scrape(env)
        assert samples[("eventbus_up", (("daemon", "master"),))] == 1
        assert ("eventbus_events_total", ()) in samples


def test_status_against_running_and_stopped_daemons(linked_api):
    env, _minion, forward = linked_api
    fire_many(env.master, 7, tag="myco/status")
    forward.wait_delivered("out", 7)
    done = run_cli("status", "-c", str(env.config_dir))
    assert done.returncode == 0, done.stderr
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
    assert lines["master"].startswith(f"running (pid {env.master.daemon.proc.pid}, up ")
    assert int(lines["events_total"]) >= 7
    assert lines["minions_connected"] == "1" and lines["minions_present"] == "1"
    assert lines["present"] == "m1"
    assert int(lines["journal_bytes"]) > 0
    assert lines["forward"] == "running"
    assert lines["api"].startswith(f"running (pid {env.api.proc.pid}, up ")
    assert lines["api"].endswith(f") on http://127.0.0.1:{env.port}") and lines["sse_streams"] == "0"
    assert lines["forward.out"].startswith("file up delivered=") and "pending=0 dropped=0" in lines["forward.out"]
    forward.stop()
    env.master.stop()
    done = run_cli("status", "-c", str(env.config_dir))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    lines = done.stdout.splitlines()
    assert any(line.startswith("master: not running (") for line in lines), done.stdout
    assert any(line.startswith("forward: not running (") for line in lines), done.stdout


def status_lines(config_dir) -> tuple[int, dict[str, str]]:
    """``eventbus status -c DIR`` as a person runs it: (exit code, {name: value})."""
    done = run_cli("status", "-c", str(config_dir))
    assert "Traceback" not in done.stdout + done.stderr, done.stderr
    return done.returncode, dict(line.split(": ", 1) for line in done.stdout.splitlines())


def test_status_reads_the_apis_own_figures_with_no_token():
    # As conf/api: neither metrics_public nor jwt_secret, so /metrics is for an admin's login only.
    with running_api(jwt_secret=None) as env:
        code, lines = status_lines(env.config_dir)
        assert code == 0, lines
        assert lines["api"].startswith(f"running (pid {env.api.proc.pid}, up ")
        assert lines["api"].endswith(f" on http://127.0.0.1:{env.port}")
        assert lines["sse_streams"] == "0"
        requests_before = int(lines["api_requests_total"])
        with SSEReader(env, headers={"X-Auth-Token": env.login("alice")}) as stream:
            assert stream.response.status_code == 200
            lines = wait_for(lambda: (seen := status_lines(env.config_dir)[1])["sse_streams"] == "1" and seen,
                             20, interval=0.2, what="the open stream in eventbus status")
        assert int(lines["api_requests_total"]) >= requests_before + 2  # the login and the stream
        # CloudEvents counts as /metrics labels them: one post to a channel that does not exist.
        assert requests.post(env.url("/cloudevents/nosuch"), data=b"{}", timeout=10).status_code == 404
        refused = wait_for(lambda: [value for name, value in status_lines(env.config_dir)[1].items()
                                    if name.startswith("cloudevents_refused_total{")], 20, interval=0.2,
                           what="the refused CloudEvent in eventbus status")
        assert refused == ["1"]
        # The figures are the API's own business: its directory is the owner's alone.
        assert stat.S_IMODE((env.root / "var/run/eventbus/api").stat().st_mode) == 0o700
        env.stop_api()
        code, lines = status_lines(env.config_dir)
        assert code == 1 and lines["api"].startswith("not running ("), lines
        assert "sse_streams" not in lines


def test_status_and_metrics_show_the_reactor():
    from tests.reactorkit import wait_reactor

    rules = [{"react/*": [{"fire": {"tag": "reacted/{{ data.n }}", "data": {"n": "{{ data.n }}"}}}]}]
    with running_api(master_keys={"reactor": rules}) as env:
        wait_reactor(env.master)
        fire_many(env.master, 3, tag="react/go")
        token = env.login("alice")
        samples = wait_for(lambda: (s := scrape(env, **{"X-Auth-Token": token})).get(
            ("eventbus_reactor_done_total", ()), 0) >= 3 and s, 30, interval=0.1, what="3 reactions counted")
        assert samples[("eventbus_up", (("daemon", "reactor"),))] == 1
        assert samples[("eventbus_reactor_failed_total", ())] == 0
        done = run_cli("status", "-c", str(env.config_dir))
        assert done.returncode == 0, done.stdout + done.stderr
        lines = dict(line.split(": ", 1) for line in done.stdout.splitlines())
        assert lines["reactor"].startswith("running (pid ") and lines["reactor"].endswith(", 1 rules)")
        assert lines["reactor_done"] == "3" and lines["reactor_failed"] == "0"


def test_cloudevents_counters_follow_what_the_ingest_accepted_and_refused():
    import json

    from tests.cehelp import ORDER_SCHEMA, sign, structured

    with running_api() as env:
        conf = str(env.config_dir)
        schema = env.root / "order.json"
        schema.write_text(json.dumps(ORDER_SCHEMA))
        for args in (("eventtype", "add", "com.example.order", "--schema", str(schema)),
                     ("eventtype", "finalize", "com.example.order", "--version", "1.0"),
                     ("channel", "add", "shop")):
            done = run_cli(*args, "-c", conf)
            assert done.returncode == 0, done.stderr
        secret = done.stdout.splitlines()[0].split(" ", 1)[1]

        def post(ev: dict) -> int:
            body = json.dumps(ev).encode()
            return requests.post(env.url("/cloudevents/shop"), data=body, timeout=10,
                                 headers={"Content-Type": "application/cloudevents+json",
                                          "X-Hub-Signature": sign(secret, body)}).status_code

        def accepted() -> bool:
            return post(structured(id_="probe")) == 200  # the running API sees the new channel within a second
        wait_for(accepted, 10, interval=0.1, what="the channel to be live")
        assert post(structured(id_="a-1")) == 200
        assert post(structured(id_="a-2")) == 200
        assert post(structured(id_="bad", data={"order": {"qty": 0}})) == 400
        samples = scrape(env, **{"X-Auth-Token": env.login("alice")})
        assert samples[("eventbus_cloudevents_accepted_total", (("type", "com.example.order"),))] == 3
        assert samples[("eventbus_cloudevents_refused_total", (("code", "SchemaViolation"), ("status", "400")))] == 1
