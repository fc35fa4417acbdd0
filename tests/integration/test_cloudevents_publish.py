"""Channel publishing (SPEC 9 "Publish"): bus events matching a channel's globs reach its outbound URL,
signed structured CloudEvents, retried until a 2xx, none lost across API and master restarts."""
from __future__ import annotations

from eventbus.bus import control
from tests.apinode import ApiEnv
from tests.cehelp import Outbound
from tests.forwardkit import Forwarder, fire_many
from tests.helpers import run_cli, wait_for


def _add_channel(env: ApiEnv, name: str, url: str, *globs: str) -> str:
    done = run_cli("channel", "add", name, "--outbound-url", url, "--publish", *globs, "-c", str(env.config_dir))
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0].split(" ", 1)[1]


def _broker(forward: Forwarder, channel: str) -> str | None:
    """The name of ``channel``'s broker in the running forwarder, if it has one."""
    return next((n for n in forward.stats() if n.startswith(f"channel.{channel}.")), None)


def test_published_events_survive_api_and_master_restarts_signed_and_in_order():
    env = ApiEnv()
    outbound = Outbound(fail_first=3)   # the first POSTs are refused: delivery must retry
    forward = None
    try:
        env.start_master()
        env.start_api()
        outbound.secret = _add_channel(env, "crm", outbound.url, "myco/*")
        forward = Forwarder(env.master, []).start()
        wait_for(lambda: _broker(forward, "crm"), 20, what="the channel's broker")
        fire_many(env.master, 100, tag="myco/order")
        fire_many(env.master, 50, tag="other/thing")
        env.stop_api()
        fire_many(env.master, 100, tag="myco/order", start=100)
        env.start_api()
        head = control.ping(env.master.sock_dir)["seq"]
        fire_many(env.master, 100, tag="myco/order", start=200)
        wait_for(lambda: control.ping(env.master.sock_dir)["seq"] >= head + 100, 30, what="the master to take 100")
        env.master.stop()
        env.master.start()
        fire_many(env.master, 100, tag="myco/order", start=300)
        wait_for(lambda: len(outbound.received) >= 400, 90, what="400 published events")
        got = outbound.received
        assert [e["data"]["n"] for e in got] == list(range(400))
        assert {e["type"] for e in got} == {"myco/order"}
        assert all(e["specversion"] == "1.0" and e["source"] == "/eventbus/master" for e in got)
        assert [int(e["id"]) for e in got] == sorted(int(e["id"]) for e in got)
        assert outbound.bad_signatures == 0

        # A channel added while everything runs is published too, within seconds.
        second = Outbound()
        try:
            second.secret = _add_channel(env, "late", second.url, "late/*")
            wait_for(lambda: _broker(forward, "late"), 20, what="the new channel's broker")
            fire_many(env.master, 5, tag="late/x")
            wait_for(lambda: len(second.received) >= 5, 30, what="5 events at the new channel")
            assert [e["data"]["n"] for e in second.received] == list(range(5))
            assert len(outbound.received) == 400
            # Removed then added again: a new broker at the bus head, none of the events in between.
            assert run_cli("channel", "remove", "late", "-c", str(env.config_dir)).returncode == 0
            wait_for(lambda: not _broker(forward, "late"), 20, what="the removed channel's broker to go")
            fire_many(env.master, 3, tag="late/x", start=100)
            second.secret = _add_channel(env, "late", second.url, "late/*")
            wait_for(lambda: _broker(forward, "late"), 20, what="the re-added channel's broker")
            fire_many(env.master, 2, tag="late/x", start=200)
            wait_for(lambda: len(second.received) >= 7, 30, what="2 events at the re-added channel")
            assert [e["data"]["n"] for e in second.received[5:]] == [200, 201]
        finally:
            second.close()
    finally:
        if forward is not None:
            forward.stop()
        env.stop_api()
        env.master.stop()
        env.cleanup()
        outbound.close()
