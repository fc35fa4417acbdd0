"""The REST API as its users drive it: requests and curl against a real master and ``eventbus api``."""
from __future__ import annotations

import json
import subprocess
import time

import jwt
import pytest
import requests

from eventbus.bus import control
from tests.apinode import JWT_SECRET, PASSWORDS, running_api
from tests.helpers import wait_for
from tests.sse import SSEParser, SSEReader, records_of


# -- login ------------------------------------------------------------------------------------

def test_login_json_and_form_answer_salts_shape_and_cookie(shared_api):
    answer = requests.post(shared_api.url("/login"), json={"username": "bob", "password": PASSWORDS["bob"],
                                                            "eauth": "file"}, timeout=10)
    assert answer.status_code == 200
    session = answer.json()["return"][0]
    assert set(session) == {"token", "start", "expire", "user", "eauth", "perms"}
    assert session["user"] == "bob" and session["eauth"] == "file" and session["perms"] == ["myco/*"]
    assert 43190 < session["expire"] - session["start"] <= 43200
    assert answer.cookies["session_id"] == session["token"]
    form = requests.post(shared_api.url("/login"), data={"username": "alice", "password": PASSWORDS["alice"],
                                                         "eauth": "file"}, timeout=10)
    assert form.status_code == 200 and form.json()["return"][0]["perms"] == ["*"]


def test_failed_login_is_401_json_and_logged_without_the_password(shared_api):
    wrong = requests.post(shared_api.url("/login"), json={"username": "alice", "password": "not-the-pw-x9",
                                                          "eauth": "file"}, timeout=10)
    unknown = requests.post(shared_api.url("/login"), json={"username": "mallory", "password": "whatever",
                                                            "eauth": "file"}, timeout=10)
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert answer.json() == {"status": 401, "return": "authentication failed: wrong user name or password"}
        assert "session_id" not in answer.cookies
    log = wait_for(lambda: "login failed for user" in shared_api.api.log and shared_api.api.log, what="log line")
    assert "login failed for user 'alice'" in log
    assert "not-the-pw-x9" not in log


def test_malformed_login_bodies_are_400_json(shared_api):
    cases = [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('{"username": "alice"}', "application/json"),
        ("\xff\xfe", "application/json"),
    ]
    for body, content_type in cases:
        answer = requests.post(shared_api.url("/login"), data=body.encode("latin-1"),
                               headers={"Content-Type": content_type}, timeout=10)
        assert answer.status_code == 400, body
        assert answer.json()["status"] == 400 and answer.json()["return"]
    huge = requests.post(shared_api.url("/login"), data=b"x" * 100_000,
                         headers={"Content-Type": "application/json"}, timeout=10)
    assert huge.status_code == 413 and huge.json()["status"] == 413


def test_every_error_is_json_including_404_and_405(shared_api):
    for method, path, status in [("GET", "/nope", 404), ("GET", "/login", 405), ("POST", "/events", 405),
                                 ("DELETE", "/hook/x", 405), ("GET", "/events/extra/bits", 404)]:
        answer = requests.request(method, shared_api.url(path), timeout=10)
        assert answer.status_code == status, (method, path, answer.text)
        assert answer.headers["Content-Type"] == "application/json"
        body = answer.json()
        assert body["status"] == status and isinstance(body["return"], str) and "\n" not in body["return"]


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


# -- JWT ------------------------------------------------------------------------------------------

def _jwt(role: str, username: str = "web01", secret: str = JWT_SECRET, exp: float | None = 600,
         algorithm: str = "HS256") -> str:
    claims: dict = {"user": {"username": username, "role": role}}
    if exp is not None:
        claims["exp"] = int(time.time() + exp)
    return jwt.encode(claims, secret, algorithm=algorithm)


def test_jwt_roles_admin_sees_all_user_sees_its_own(shared_api):
    admin = SSEReader(shared_api, headers={"Authorization": f"Bearer {_jwt('admin')}"})
    user = SSEReader(shared_api, headers={"Authorization": f"Bearer {_jwt('user', 'web01')}"})
    shared_api.fire({"id": "web02", "n": 1}, "jwt/a")
    shared_api.fire({"id": "web01", "n": 2}, "jwt/b")
    assert [r["tag"] for r in admin.records(2)] == ["jwt/a", "jwt/b"]
    assert [r["data"]["data"]["n"] for r in user.records(1)] == [2]
    admin.close()
    user.close()


def test_bad_jwts_are_401(shared_api):
    header = jwt.utils.base64url_encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).decode()
    body = jwt.utils.base64url_encode(json.dumps({"user": {"username": "x", "role": "admin"},
                                                  "exp": int(time.time()) + 600}).encode()).decode()
    cases = {
        "another key": _jwt("admin", secret="another-secret-0123456789-abcdefghijklmnopq"),
        "alg none": f"{header}.{body}.",
        "expired": _jwt("admin", exp=-10),
        "no exp": _jwt("admin", exp=None),
        "HS512": _jwt("admin", secret=JWT_SECRET * 2, algorithm="HS512"),
        "bad role": _jwt("root"),
        "garbage": "not.a.jwt",
    }
    for what, token in cases.items():
        answer = requests.get(shared_api.url("/events"), headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert answer.status_code == 401, what
        assert answer.json()["status"] == 401
        assert token not in answer.text


# -- hooks ----------------------------------------------------------------------------------------------

def test_hooks_fire_parsed_bodies_without_credential_headers(shared_api):
    token = shared_api.login("alice")
    reader = SSEReader(shared_api, params={"token": token, "tag": "salt/netapi/hook/*"})
    posts = [
        ("/hook/github/push", {"json": {"ref": "main"}}, {"ref": "main"}),
        ("/hook/form", {"data": {"a": "1", "b": "2"}}, {"a": "1", "b": "2"}),
        ("/hook/yaml", {"data": "a: [1, 2]\n", "headers": {"Content-Type": "application/x-yaml"}}, {"a": [1, 2]}),
    ]
    for path, kwargs, _ in posts:
        headers = {"X-Auth-Token": token, "Cookie": f"session_id={token}", **kwargs.pop("headers", {})}
        answer = requests.post(shared_api.url(path), headers=headers, timeout=10, **kwargs)
        assert answer.status_code == 200 and answer.json() == {"success": True}
    got = reader.records(3)
    reader.close()
    assert [r["tag"] for r in got] == ["salt/netapi/hook/github/push", "salt/netapi/hook/form",
                                       "salt/netapi/hook/yaml"]
    for record, (_, _, body) in zip(got, posts):
        data = record["data"]["data"]
        assert data["body"] == body
        lowered = {k.lower() for k in data["headers"]}
        assert "x-auth-token" not in lowered and "cookie" not in lowered and "authorization" not in lowered
        assert token not in json.dumps(data)


def test_hook_refusals(shared_api):
    token = shared_api.login("alice")
    url = shared_api.url("/hook/x")
    assert requests.post(url, json={}, timeout=10).status_code == 401
    big = requests.post(url, data=b'{"a": "' + b"x" * 1_100_000 + b'"}', timeout=10,
                        headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["status"] == 413

    def chunks():
        yield b'{"a": "'
        for _ in range(20):
            yield b"x" * 60_000
        yield b'"}'
    chunked = requests.post(url, data=chunks(), timeout=10,
                            headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    assert chunked.status_code == 413
    # Under the body limit but over max_event_size once headers are added: still 413.
    near = requests.post(url, data=b'{"a": "' + b"x" * 1_048_400 + b'"}', timeout=10,
                         headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    assert near.status_code == 413
    for body, content_type, status in [(b"{oops", "application/json", 400), (b"a: &x [1]\nb: *x\n", "text/yaml", 400),
                                       (b"a: [", "application/x-yaml", 400), (b"hello", "text/plain", 415)]:
        answer = requests.post(url, data=body, headers={"X-Auth-Token": token, "Content-Type": content_type},
                               timeout=10)
        assert answer.status_code == status, (body, answer.text)
        assert answer.json()["status"] == status


def test_cors_preflight_and_header():
    from tests.apinode import ApiEnv

    env = ApiEnv(cors_origin="https://dash.example.com")
    try:
        env.start_master()
        env.start_api()
        preflight = requests.options(env.url("/login"), timeout=10, headers={
            "Origin": "https://dash.example.com", "Access-Control-Request-Method": "POST"})
        assert preflight.status_code in (200, 204)
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://dash.example.com"
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        other = requests.get(env.url("/"), headers={"Origin": "https://evil.example.com"}, timeout=10)
        assert "Access-Control-Allow-Origin" not in other.headers
    finally:
        env.stop_api()
        env.master.stop()
        env.cleanup()


def test_ui_page_is_served(shared_api):
    page = requests.get(shared_api.url("/ui"), timeout=10)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "EventSource" in page.text and "<script src" not in page.text


def test_https_with_a_self_signed_certificate_open_hooks_and_the_stream_limit():
    from tests.apinode import ApiEnv, PASSWORDS

    env = ApiEnv(ssl_crt="api.crt", ssl_key="api.key", webhook_disable_auth=True, stream_limit=1)
    try:
        made = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                               "-keyout", str(env.root / "api.key"), "-out", str(env.root / "api.crt"),
                               "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        env.start_master()
        env.start_api()
        crt = str(env.root / "api.crt")
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.get(f"http://127.0.0.1:{env.port}/", timeout=5)  # plain HTTP is not served
        answer = requests.post(env.url("/login"), json={"username": "alice", "password": PASSWORDS["alice"],
                                                        "eauth": "file"}, verify=crt, timeout=10)
        assert answer.status_code == 200
        assert "secure" in answer.headers["Set-Cookie"].lower()
        token = answer.json()["return"][0]["token"]
        stream = requests.get(env.url("/events"), params={"token": token}, stream=True, verify=crt, timeout=10)
        assert stream.status_code == 200
        parser = SSEParser()
        lines = stream.iter_lines(chunk_size=1, decode_unicode=True)
        assert next(lines) == "retry: 400"
        second = requests.get(env.url("/events"), params={"token": token}, verify=crt, timeout=10)
        assert second.status_code == 503 and "stream_limit" in second.json()["return"]
        hooked = requests.post(env.url("/hook/open"), json={"x": 1}, verify=crt, timeout=10)  # no token needed
        assert hooked.status_code == 200
        record = next(parser.records(lines))
        assert record["id"] > 0 and record["tag"] == "salt/netapi/hook/open"
        assert record["data"]["data"]["body"] == {"x": 1}
        stream.close()
    finally:
        env.stop_api()
        env.master.stop()
        env.cleanup()


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
