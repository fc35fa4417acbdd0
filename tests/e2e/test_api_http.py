"""The REST API as its users drive it: login, errors, JWTs, hooks, CORS, the UI page and HTTPS, over real HTTP."""
from __future__ import annotations

import json
import subprocess
import time

import jwt
import pytest
import requests

from tests.apinode import JWT_SECRET, PASSWORDS
from tests.helpers import wait_for
from tests.sse import SSEParser, SSEReader


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
