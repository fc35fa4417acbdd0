"""The REST API's ``/events`` stream as clients drive it: record layout, tokens, filters, resume, slow readers."""
from __future__ import annotations

import json
import subprocess
import time

import requests

from eventbus.bus import control
from tests.apinode import running_api
from tests.helpers import wait_for
from tests.sse import SSEReader, records_of


# -- /events ------------------------------------------------------------------------------------

def test_curl_streams_salts_record_layout_with_ids(shared_api):
    token = shared_api.login("alice")
    curl = subprocess.Popen(["curl", "-sN", shared_api.url(f"/events?token={token}")],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert curl.stdout.readline() == "retry: 400\n"
        assert curl.stdout.readline() == "\n"
        shared_api.fire({"message": "It works!"}, "myco/event/success")
        lines = [curl.stdout.readline() for _ in range(4)]
    finally:
        curl.kill()
        curl.wait()
    assert lines[0].startswith("id: ") and int(lines[0][4:]) > 0
    assert lines[1] == "tag: myco/event/success\n"
    assert lines[2].startswith("data: ")
    record = json.loads(lines[2][6:])
    assert record["tag"] == "myco/event/success" and record["data"]["message"] == "It works!"
    assert "_stamp" in record["data"]
    assert lines[3] == "\n"


def test_token_from_header_query_cookie_and_401_before_any_byte(shared_api):
    token = shared_api.login("alice")
    for kwargs in ({"headers": {"X-Auth-Token": token}}, {"params": {"token": token}},
                   {"headers": {"Cookie": f"session_id={token}"}}):
        reader = SSEReader(shared_api, **kwargs)
        assert reader.response.status_code == 200
        assert reader.response.headers["Content-Type"].startswith("text/event-stream")
        reader.close()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for bad in ("", "garbage", "a.b", forged, "x" * 5000):
        answer = requests.get(shared_api.url("/events"), params={"token": bad}, timeout=10, stream=True)
        assert answer.status_code == 401, bad
        assert answer.headers["Content-Type"] == "application/json"
        assert answer.json()["status"] == 401


def test_perms_and_tag_filter_decide_what_a_stream_sees(shared_api):
    bob = SSEReader(shared_api, params={"token": shared_api.login("bob")})
    alice_jobs = SSEReader(shared_api, params={"token": shared_api.login("alice"), "tag": "salt/job/*"})
    shared_api.fire({"n": 1}, "secret/thing")
    shared_api.fire({"n": 2}, "myco/visible")
    shared_api.fire({"n": 3}, "salt/job/1/new")
    shared_api.fire({"n": 4}, "myco/last")
    assert [r["tag"] for r in bob.records(2)] == ["myco/visible", "myco/last"]
    assert [r["tag"] for r in alice_jobs.records(1)] == ["salt/job/1/new"]
    bob.close()
    alice_jobs.close()


def test_resume_with_last_event_id_has_no_gap_and_no_duplicate(shared_api):
    token = shared_api.login("alice")
    first = SSEReader(shared_api, params={"token": token, "tag": "resume/*"})
    for n in range(5):
        shared_api.fire({"n": n}, "resume/a")
    seen = first.records(5)
    first.close()
    assert [r["data"]["data"]["n"] for r in seen] == [0, 1, 2, 3, 4]
    last_id = seen[2]["id"]
    for n in range(5, 8):
        shared_api.fire({"n": n}, "resume/a")
    # The header form (what EventSource sends), then the query form, both from the 3rd event.
    for kwargs in ({"headers": {"Last-Event-ID": str(last_id)}}, {"params": {"last_event_id": str(last_id)}}):
        params = {"token": token, "tag": "resume/*", **kwargs.get("params", {})}
        again = SSEReader(shared_api, params=params, headers=kwargs.get("headers"))
        shared_api.fire({"n": 8}, "resume/a")
        got = again.records(6)
        again.close()
        assert [r["data"]["data"]["n"] for r in got] == [3, 4, 5, 6, 7, 8]
        ids = [r["id"] for r in got]
        assert ids == sorted(set(ids)) and ids[0] > last_id


def test_bad_last_event_id_is_400(shared_api):
    answer = requests.get(shared_api.url("/events"), params={"token": shared_api.login("alice")},
                          headers={"Last-Event-ID": "1; DROP"}, timeout=10)
    assert answer.status_code == 400 and "Last-Event-ID" in answer.json()["return"]


def test_resume_past_what_the_master_keeps_gets_a_gap_record_first():
    # Without the journal the master keeps only its window (20 events): older ones are gone.
    with running_api(master_keys={"event_window": 20, "event_journal": False}) as env:
        token = env.login("alice")
        reader = SSEReader(env, params={"token": token})
        env.fire({"n": 0}, "gap/test")
        start = reader.records(1)[0]["id"]
        for n in range(1, 51):
            env.fire({"n": n}, "gap/test")
        # Resume only once the master numbered all 50 and this API's own feed has them too (the open
        # stream read them): this checks resuming past the master's window, not an API behind its feed.
        wait_for(lambda: control.ping(env.master.sock_dir)["seq"] >= start + 50, what="the master to number 50 events")
        assert [r["data"]["data"]["n"] for r in reader.records(50)] == list(range(1, 51))
        reader.close()
        again = SSEReader(env, params={"token": token}, headers={"Last-Event-ID": str(start)})
        got = again.records(21)
        again.close()
        assert got[0]["tag"] == "eventbus/stream/gap" and got[0]["data"]["data"] == {"lost": 30}
        assert "id" not in got[0]
        assert [r["data"]["data"]["n"] for r in got[1:]] == list(range(31, 51))


def test_resume_survives_an_api_restart(api_env):
    token = api_env.login("alice")
    reader = SSEReader(api_env, params={"token": token, "tag": "restart/*"})
    api_env.fire({"n": 0}, "restart/x")
    last = reader.records(1)[0]["id"]
    assert api_env.stop_api() == 0  # a clean stop, even with a stream open
    reader.close()
    for n in range(1, 4):
        api_env.fire({"n": n}, "restart/x")  # fired while no API runs
    api_env.start_api()
    again = SSEReader(api_env, params={"token": token, "tag": "restart/*"}, headers={"Last-Event-ID": str(last)})
    api_env.fire({"n": 4}, "restart/x")
    got = again.records(4)
    again.close()
    assert [r["data"]["data"]["n"] for r in got] == [1, 2, 3, 4]


def test_resume_survives_a_master_restart_and_reaches_past_the_window():
    # The window keeps 10 events; the journal keeps them all, across the master's restart.
    with running_api(master_keys={"event_window": 10}) as env:
        token = env.login("alice")
        live = SSEReader(env, params={"token": token, "tag": "mr/*"}, timeout=30)
        env.fire({"n": 0}, "mr/x")
        last = live.records(1)[0]["id"]
        for n in range(1, 41):
            env.fire({"n": n}, "mr/x")
        assert env.master.stop() == 0
        env.start_master()
        for n in range(41, 61):
            env.fire({"n": n}, "mr/x")
        # A stream left open rides through the restart: nothing missed, nothing twice.
        assert [r["data"]["data"]["n"] for r in live.records(60)] == list(range(1, 61))
        live.close()
        # A client that left after event 0 resumes past the restarted master's 10-event window.
        again = SSEReader(env, params={"token": token, "tag": "mr/*"}, headers={"Last-Event-ID": str(last)},
                          timeout=30)
        got = again.records(60)
        env.fire({"n": 61}, "mr/x")
        got += again.records(1)
        again.close()
        assert [r["data"]["data"]["n"] for r in got] == list(range(1, 62)), "no gap, no duplicate, no gap record"
        ids = [r["id"] for r in got]
        assert ids == sorted(set(ids))


def test_a_client_that_never_reads_is_dropped_and_stalls_no_one():
    import socket

    with running_api(stream_queue=200) as env:
        token = env.login("alice")
        stuck = socket.create_connection(("127.0.0.1", env.port))
        stuck.sendall(f"GET /events?token={token} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        out = env.root / "curl.out"
        with open(out, "wb") as sink:
            curl = subprocess.Popen(["curl", "-sN", env.url(f"/events?token={token}")], stdout=sink)
        wait_for(lambda: out.stat().st_size > 0, what="curl's stream to start")
        blob = "x" * 4000  # 3,000 of these overflow the kernel's socket buffers (a few MB) too
        from eventbus import event

        with event.get_event("master", opts=env.master.opts(), listen=False) as bus:
            for n in range(3000):
                assert bus.fire_event({"n": n, "pad": blob}, "flood/x", timeout=3000)
                if n % 100 == 99:
                    # A reader that reads keeps up, however loaded the machine; the stuck one cannot.
                    wait_for(lambda: out.read_bytes().count(b"\nid: ") > n - 100 or curl.poll() is not None,
                             timeout=30, interval=0.01, what="curl to keep up")
        wait_for(lambda: len(records_of(out.read_text())) >= 3000 or curl.poll() is not None,
                 timeout=30, interval=0.2, what="curl to get every event")
        curl.kill()
        curl.wait()
        got = [r["data"]["data"]["n"] for r in records_of(out.read_text())]
        assert got == list(range(3000))
        # The server hung up on the client that stopped reading: what its buffers held, then EOF.
        stuck.settimeout(20)
        while stuck.recv(1 << 20):
            pass
        stuck.close()
        wait_for(lambda: "dropped the stream of alice" in env.api.log, timeout=10, what="the drop log line")


def test_stream_keeps_alive_and_ends_when_the_token_expires():
    with running_api(token_expire=16.5) as env:
        started = time.monotonic()
        reader = SSEReader(env, params={"token": env.login("alice")}, timeout=30)
        assert reader.next_record() is None  # no events: only a keepalive, then the end
        elapsed = time.monotonic() - started
        assert reader.comments == [": keepalive"]
        assert 14 < elapsed < 25
        expired = requests.get(env.url("/events"), params={"token": reader.response.request.url.split("token=")[1]},
                               timeout=10)
        assert expired.status_code == 401 and "expired" in expired.json()["return"]


def test_events_the_bus_dropped_for_a_stalled_api_are_filled_from_the_window():
    import signal

    with running_api(master_keys={"subscriber_queue": 1000}) as env:
        token = env.login("alice")
        out = env.root / "curl.out"
        with open(out, "wb") as sink:
            curl = subprocess.Popen(["curl", "-sN", env.url(f"/events?token={token}&tag=stall/*")], stdout=sink)
        wait_for(lambda: out.stat().st_size > 0, what="curl's stream to start")
        env.api.signal(signal.SIGSTOP)  # the API stops reading the bus; the master drops for it
        try:
            from eventbus import event

            from eventbus.bus import control

            before = control.ping(env.master.sock_dir)["seq"]
            with event.get_event("master", opts=env.master.opts(), listen=False) as bus:
                for n in range(5000):
                    assert bus.fire_event({"n": n, "pad": "y" * 500}, "stall/x", timeout=3000)
            # Every event published (and dropped for the stopped API) before it may read again.
            wait_for(lambda: control.ping(env.master.sock_dir)["seq"] >= before + 5000, timeout=30,
                     what="the master to publish all 5000 events")
        finally:
            env.api.signal(signal.SIGCONT)
        wait_for(lambda: len(records_of(out.read_text())) >= 5000, timeout=30, interval=0.2,
                 what="curl to get all 5000 events")
        curl.kill()
        curl.wait()
        records = records_of(out.read_text())
        assert [r["data"]["data"]["n"] for r in records] == list(range(5000))
        assert all(r["tag"] == "stall/x" for r in records)  # no eventbus/stream/gap record
        assert "events missing on the master bus" in env.api.log, "the bus dropped nothing: test the fill"


def test_a_client_that_hangs_up_frees_its_stream_at_once():
    with running_api(stream_limit=1) as env:
        token = env.login("alice")
        first = SSEReader(env, params={"token": token})
        assert first.response.status_code == 200
        busy = requests.get(env.url("/events"), params={"token": token}, timeout=10)
        assert busy.status_code == 503
        first.close()  # no event is ever written to it: the server must notice the hang-up by itself
        started = time.monotonic()

        def second_is_served() -> bool:
            answer = requests.get(env.url("/events"), params={"token": token}, timeout=10, stream=True)
            answer.close()
            return answer.status_code == 200
        wait_for(second_is_served, timeout=10, interval=0.1, what="the freed stream slot")
        assert time.monotonic() - started < 5  # not the 15 s keepalive
