"""What the HTTP fuzz targets found, as a user of a real ``eventbus api`` meets it (docs/fuzz.md, "Findings")."""
from __future__ import annotations

import base64
import socket

import pytest
import requests

from tests.apinode import ApiEnv
from tests.sse import SSEReader


def test_an_event_with_a_bytes_key_reaches_streams_and_the_next_event_too(api_env: ApiEnv):
    """F1: a publisher's event whose data has a bytes map key (the intake takes it) ended every plain-HTTP stream."""
    token = api_env.login("alice")
    with SSEReader(api_env, headers={"X-Auth-Token": token}, timeout=30) as stream:
        assert stream.response.status_code == 200
        api_env.fire({b"raw": 1, "n": 1}, "app/raw")
        api_env.fire({"n": 2}, "app/after")
        got = stream.records(2, within=30)
    assert [r["tag"] for r in got] == ["app/raw", "app/after"]
    assert got[0]["data"]["data"][base64.b64encode(b"raw").decode()] == 1


def test_a_malformed_http_version_gets_a_json_400_not_a_traceback(api_env: ApiEnv):
    """F11: ``GET / HTTP/1.-1`` got a 500 whose body was a Python traceback (file paths and all)."""
    for version in (b"HTTP/1.-1", b"HTTP/01.1"):
        with socket.create_connection(("127.0.0.1", api_env.port), timeout=15) as sock:
            sock.sendall(b"GET / " + version + b"\r\nHost: a\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
        assert b"Traceback" not in answer and b'"status": 400' in answer


def test_events_with_a_query_parameter_given_twice_gets_a_400(api_env: ApiEnv):
    """F13: ``/events?tag=a&tag=b`` (or ``last_event_id`` twice) reached the route as a list: a 500."""
    token = api_env.login("alice")
    for params in ([("tag", "a/*"), ("tag", "b/*")], [("last_event_id", "1"), ("last_event_id", "2")]):
        answer = requests.get(api_env.url("/events"), params=params, headers={"X-Auth-Token": token}, timeout=15)
        assert answer.status_code == 400, (params, answer.status_code, answer.text[:200])
        assert answer.json()["status"] == 400
