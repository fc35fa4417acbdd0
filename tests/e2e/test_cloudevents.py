"""``POST /cloudevents/<channel>`` as outside applications drive it: the cloudevents SDK, curl, our client,
and every bad input of issue 9 with its exact answer, nothing fired on the master bus, and the refusal
reported (signed) to the channel's outbound URL."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import requests
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventbus import cloudevents as client
from tests.apinode import running_api
from tests.cehelp import ORDER_SCHEMA, BusWatch, Outbound, sign, structured
from tests.helpers import run_cli, wait_for

STRUCTURED = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"


class Shop:
    """A running API with type com.example.order 1.0 (finalized), 2.0 (draft), channels shop and other."""

    def __init__(self, env, outbound: Outbound) -> None:
        self.env = env
        self.conf = str(env.config_dir)
        schema = env.root / "order.json"
        schema.write_text(json.dumps(ORDER_SCHEMA))
        for args in (("eventtype", "add", "com.example.order", "--schema", str(schema)),
                     ("eventtype", "finalize", "com.example.order", "--version", "1.0"),
                     ("eventtype", "add", "com.example.order", "--schema", str(schema), "--version", "2.0")):
            done = run_cli(*args, "-c", self.conf)
            assert done.returncode == 0, done.stderr
        self.secret = self.add_channel("shop", "--outbound-url", outbound.url)
        self.other_secret = self.add_channel("other")
        outbound.secret = self.secret
        self.outbound = outbound
        self.url = env.url("/cloudevents/shop")

    def add_channel(self, name: str, *args: str) -> str:
        done = run_cli("channel", "add", name, *args, "-c", self.conf)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0].startswith("secret: ") and lines[1].endswith(f"/cloudevents/{name}")
        return lines[0].split(" ", 1)[1]

    def post(self, body: bytes, content_type: str = STRUCTURED, secret: str | None = "", channel: str = "shop",
             headers: dict | None = None) -> requests.Response:
        sent = {"Content-Type": content_type}
        if secret is not None:
            sent["X-Hub-Signature"] = sign(secret or self.secret, body)
        sent.update(headers or {})
        return requests.post(self.env.url(f"/cloudevents/{channel}"), data=body, headers=sent, timeout=10)

    def post_event(self, ev: dict, **kwargs) -> requests.Response:
        return self.post(json.dumps(ev).encode(), **kwargs)


@pytest.fixture(scope="module")
def shop():
    outbound = Outbound()
    try:
        with running_api(max_event_size=8192) as env:
            yield Shop(env, outbound)
    finally:
        outbound.close()


@pytest.fixture
def watch(shop):
    """A bus listener proven live by a first good event; at the end ``fired()`` lists what came after it."""
    bus = BusWatch(shop.env.master.opts())
    first = structured(id_="start-" + uuid.uuid4().hex)
    wait_for(lambda: shop.post_event(first).status_code == 200 and bool(bus.until(first["id"], 5)), 30,
             what="the bus listener to see a first event")
    bus.seen.clear()

    def fired() -> list[tuple[str, dict]]:
        last = structured(id_="end-" + uuid.uuid4().hex)
        assert shop.post_event(last).status_code == 200
        return [(tag, data) for tag, data in bus.until(last["id"]) if data["id"] != last["id"]]
    bus.fired = fired
    yield bus
    bus.close()


def test_sdk_structured_and_binary_fire_the_spec_event(shop, watch):
    attributes = {"type": "com.example.order", "source": "/shop", "id": "sdk-s-1", "specversion": "1.0",
                  "version": "1.0", "userid": "u7", "tenancy": "acme"}
    message = ce_http.to_structured(CloudEvent(attributes, {"order": {"qty": 3}}), JSONFormat())
    answer = shop.post(message.body, content_type=message.headers["content-type"])
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"success": True, "accepted": ["sdk-s-1"], "duplicates": []}
    attributes["id"] = "sdk-b-1"
    message = ce_http.to_binary(CloudEvent(attributes, {"order": {"qty": 4}}), JSONFormat())
    answer = shop.post(message.body, content_type="application/json", headers=message.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["accepted"] == ["sdk-b-1"]
    fired = watch.fired()
    assert [tag for tag, _ in fired] == ["cloudevents/com.example.order"] * 2
    data = fired[0][1]
    for key, value in {"specversion": "1.0", "id": "sdk-s-1", "source": "/shop", "type": "com.example.order",
                       "version": "1.0", "data": {"order": {"qty": 3}}, "channel": "shop", "userid": "u7",
                       "tenancy": "acme"}.items():
        assert data[key] == value, key
    assert fired[1][1]["data"] == {"order": {"qty": 4}} and fired[1][1]["tenancy"] == "acme"


def test_curl_and_the_client(shop, watch):
    body = json.dumps(structured(id_="curl-1")).encode()
    done = subprocess.run(["curl", "-sS", "-X", "POST", shop.url, "-H", f"Content-Type: {STRUCTURED}",
                           "-H", f"X-Hub-Signature: {sign(shop.secret, body)}", "--data-binary", "@-"],
                          input=body, capture_output=True, timeout=30)
    assert json.loads(done.stdout) == {"success": True, "accepted": ["curl-1"], "duplicates": []}
    assert client.send(shop.url, shop.secret, type="com.example.order", source="/shop", id="cli-1",
                       data={"order": {"qty": 1}}, mode="binary")["accepted"] == ["cli-1"]
    answer = client.send_events(shop.url, shop.secret, [structured(id_="b-1"), structured(id_="b-2")])
    assert answer["accepted"] == ["b-1", "b-2"]
    with pytest.raises(client.CloudEventRefused) as refused:
        client.send(shop.url, "not-the-secret", type="com.example.order", source="/shop", data={})
    assert refused.value.status == 401
    assert [d["id"] for _t, d in watch.fired()] == ["curl-1", "cli-1", "b-1", "b-2"]


def test_duplicates_are_answered_and_not_fired_again(shop, watch):
    ev = structured(id_="dup-1")
    assert shop.post_event(ev).json() == {"success": True, "accepted": ["dup-1"], "duplicates": []}
    assert shop.post_event(ev).json() == {"success": True, "accepted": [], "duplicates": ["dup-1"]}
    other_source = dict(ev, source="/elsewhere")
    assert shop.post_event(other_source).json()["accepted"] == ["dup-1"]
    body = json.dumps([structured(id_="dup-2"), structured(id_="dup-1")]).encode()
    assert shop.post(body, BATCH).json() == {"success": True, "accepted": ["dup-2"], "duplicates": ["dup-1"]}
    assert [d["id"] for _t, d in watch.fired()] == ["dup-1", "dup-1", "dup-2"]


def _missing(attribute: str) -> dict:
    ev = structured()
    del ev[attribute]
    return ev


BAD = [
    # (what, request kwargs builder, status, reason fragment, error code reported outbound or None)
    ("missing signature", lambda s: dict(body=json.dumps(structured()).encode(), secret=None), 401,
     "X-Hub-Signature is missing", None),
    ("wrong signature", lambda s: dict(body=json.dumps(structured()).encode(), secret="wrong"), 401,
     "X-Hub-Signature is wrong", None),
    ("another channel's signature", lambda s: dict(body=json.dumps(structured()).encode(), secret=s.other_secret),
     401, "X-Hub-Signature is wrong", None),
    ("unknown channel", lambda s: dict(body=b"{}", channel="nosuch"), 404, "unknown channel 'nosuch'", None),
    ("unknown type", lambda s: dict(body=json.dumps(structured("com.example.nope")).encode()), 400,
     "unknown event type 'com.example.nope'", "UnknownEventType"),
    ("draft type", lambda s: dict(body=json.dumps(structured(version="2.0")).encode()), 400,
     "version '2.0' is a draft", "UnknownEventType"),
    ("wrong version", lambda s: dict(body=json.dumps(structured(version="9.9")).encode()), 400,
     "has no version '9.9'", "UnknownEventType"),
    *[(f"missing {a}", (lambda a: lambda s: dict(body=json.dumps(_missing(a)).encode()))(a), 400,
       f"required attribute '{a}' is missing", "InvalidParameter")
      for a in ("specversion", "id", "source", "type", "version")],
    ("wrong specversion", lambda s: dict(body=json.dumps(structured(specversion="0.3")).encode()), 400,
     "attribute 'specversion' is '0.3'", "InvalidParameter"),
    ("schema violation", lambda s: dict(body=json.dumps(structured(data={"order": {"qty": 0}})).encode()), 400,
     "schema violation at data.order.qty: 0 is less than the minimum of 1 (rule minimum)", "SchemaViolation"),
    ("schema violation, required", lambda s: dict(body=json.dumps(structured(data={"x": 1})).encode()), 400,
     "schema violation at data: 'order' is a required property (rule required)", "SchemaViolation"),
    ("malformed JSON", lambda s: dict(body=b'{"specversion": "1.0",'), 400, "is not valid JSON",
     "InvalidParameter"),
    ("batch with one bad event",
     lambda s: dict(body=json.dumps([structured(), structured(), _missing("source")]).encode(),
                    content_type=BATCH), 400, "event 2: required attribute 'source' is missing", "InvalidParameter"),
    ("batch not an array", lambda s: dict(body=json.dumps(structured()).encode(), content_type=BATCH), 400,
     "a batch must be a JSON array", "InvalidParameter"),
    ("wrong content type", lambda s: dict(body=json.dumps(structured()).encode(), content_type="text/plain"), 415,
     "Content-Type 'text/plain' is not supported", "UnsupportedMediaType"),
    ("binary with XML data", lambda s: dict(body=b"<a/>", content_type="application/xml",
                                             headers={"ce-specversion": "1.0"}), 415,
     "binary mode data must be JSON", "UnsupportedMediaType"),
    ("ce- header with a non-ASCII byte",
     lambda s: dict(body=b'{"order": {"qty": 1}}', content_type="application/json",
                    headers={"ce-specversion": "1.0", "ce-id": "x1", "ce-source": "/s\xe9",
                             "ce-type": "com.example.order", "ce-version": "1.0"}), 400,
     "header ce-source holds a control character or a non-ASCII byte", "InvalidParameter"),
]


@pytest.mark.parametrize("what,build,status,reason,code", BAD, ids=[b[0] for b in BAD])
def test_bad_input_exact_answer_nothing_fired_reported_outbound(shop, watch, what, build, status, reason, code):
    before = len(shop.outbound.received)
    answer = shop.post(**build(shop))
    assert answer.status_code == status, answer.text
    assert answer.json()["status"] == status
    assert reason in answer.json()["return"], answer.json()
    assert watch.fired() == []
    if code is not None:
        wait_for(lambda: len(shop.outbound.received) > before, 20, what="the error report at the outbound URL")
        report = shop.outbound.received[before]
        assert report["type"] == "eventbus.error" and report["specversion"] == "1.0"
        assert report["data"]["code"] == code and reason in report["data"]["message"]
    assert shop.outbound.bad_signatures == 0


def test_ce_header_with_a_newline_never_fires(shop, watch):
    import socket

    body = b'{"order": {"qty": 1}}'
    head = (f"POST /cloudevents/shop HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"ce-specversion: 1.0\r\nce-id: nl1\r\nce-source: /a\r\n\tb\r\nce-type: com.example.order\r\n"
            f"ce-version: 1.0\r\nX-Hub-Signature: {sign(shop.secret, body)}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    with socket.create_connection(("127.0.0.1", shop.env.port), timeout=10) as sock:
        sock.sendall(head + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.split(b" ", 2)[1] == b"400", answer[:200]
    assert watch.fired() == []


def test_oversize_body_is_413(shop, watch):
    big = json.dumps(structured(data={"order": {"qty": 1}, "pad": "x" * 9000})).encode()
    answer = shop.post(big)
    assert answer.status_code == 413 and answer.json()["status"] == 413
    assert watch.fired() == []


def test_registry_cli_rules(shop):
    conf = shop.conf
    listed = run_cli("eventtype", "list", "-c", conf).stdout.splitlines()
    assert "com.example.order\t1.0\tfinalized" in listed and "com.example.order\t2.0\tdraft" in listed
    schema = shop.env.root / "order.json"
    again = run_cli("eventtype", "add", "com.example.order", "--schema", str(schema), "-c", conf)
    assert again.returncode == 1 and "finalized and cannot change" in again.stderr
    bad = shop.env.root / "bad.json"
    bad.write_text(json.dumps({"$schema": "http://json-schema.org/draft-07/schema#", "type": "nonsense"}))
    refused = run_cli("eventtype", "add", "x.bad", "--schema", str(bad), "-c", conf)
    assert refused.returncode == 1 and refused.stderr.startswith("error: invalid schema")
    bad.write_text(json.dumps({"$schema": "http://example.com/my-draft", "type": "object"}))
    refused = run_cli("eventtype", "add", "x.bad", "--schema", str(bad), "-c", conf)
    assert refused.returncode == 1 and "is not one of the drafts accepted" in refused.stderr
    for number, draft in enumerate(("http://json-schema.org/draft-04/schema#", "http://json-schema.org/draft-06/schema#",
                  "http://json-schema.org/draft-07/schema#", "https://json-schema.org/draft/2019-09/schema")):
        bad.write_text(json.dumps({"$schema": draft, "type": "object"}))
        assert run_cli("eventtype", "add", "x.drafts", "--schema", str(bad), "--version", f"{number}.0",
                       "-c", conf).returncode == 0
    secret_file = shop.env.root / "var/lib/eventbus/cloudevents/secrets/shop"
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert shop.secret not in run_cli("channel", "list", "-c", conf).stdout


def test_channel_changes_reach_the_running_api_within_a_second(shop):
    secret = shop.add_channel("late")
    body = json.dumps(structured(id_="late-1")).encode()
    deadline_answer = None
    import time
    start = time.monotonic()
    while time.monotonic() - start < 5:
        deadline_answer = shop.post(body, secret=secret, channel="late")
        if deadline_answer.status_code == 200:
            break
    assert deadline_answer.status_code == 200 and time.monotonic() - start < 1.5
    rotated = run_cli("channel", "rotate", "late", "-c", shop.conf)
    assert rotated.returncode == 0 and "3600 s" in rotated.stdout
    new_secret = rotated.stdout.splitlines()[0].split(" ", 1)[1]
    wait_for(lambda: shop.post(json.dumps(structured()).encode(), secret=new_secret, channel="late").status_code
             == 200, 5, what="the rotated secret to be accepted")
    assert shop.post(json.dumps(structured()).encode(), secret=secret, channel="late").status_code == 200
    assert run_cli("channel", "remove", "late", "-c", shop.conf).returncode == 0
    wait_for(lambda: shop.post(body, secret=new_secret, channel="late").status_code == 404, 5,
             what="the removed channel to be unknown")


def test_the_readme_lines_run_as_written_from_a_checkout():
    """The README's CloudEvents shell blocks, as written, from a directory laid out like a checkout
    (``.venv`` and ``conf``) after ``make run``; only the API's port differs."""
    import re
    import tempfile
    from pathlib import Path

    from tests.helpers import EVENTBUS

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## External events: CloudEvents in and out", 1)[1].split("\n## ", 1)[0]
    register, send = re.findall(r"```sh\n(.*?)```", section, re.S)
    with running_api() as env, tempfile.TemporaryDirectory() as checkout:
        (Path(checkout) / ".venv").symlink_to(Path(EVENTBUS).parents[1])
        (Path(checkout) / "conf").symlink_to(env.config_dir)
        bus = BusWatch(env.master.opts())
        try:
            def run(script: str, **extra: str) -> subprocess.CompletedProcess:
                script = script.replace("127.0.0.1:8000", f"127.0.0.1:{env.port}")
                return subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True,
                                      timeout=60, cwd=checkout, env={"PATH": "/usr/bin:/bin", **extra})
            done = run(register + 'echo "test: SECRET=$SECRET"\n')
            assert done.returncode == 0, done.stderr
            assert done.stderr.startswith("secret: ") and "/cloudevents/shop" in done.stderr
            secret = done.stdout.splitlines()[-1].split("test: SECRET=", 1)[1]
            assert secret and (env.root / "var/lib/eventbus/cloudevents/secrets/shop").is_file()
            probe = json.dumps(structured(id_="probe")).encode()
            wait_for(lambda: requests.post(env.url("/cloudevents/shop"), data=probe, timeout=10, headers={
                "Content-Type": STRUCTURED, "X-Hub-Signature": sign(secret, probe)}).status_code == 200,
                10, what="the API to see the README's channel")
            done = run(send, SECRET=secret)
            assert json.loads(done.stdout) == {"success": True, "accepted": ["o-1"], "duplicates": []}, done.stderr
            assert ("cloudevents/com.example.order", "o-1") in [(t, d["id"]) for t, d in bus.until("o-1")]
            bad = json.dumps(structured(id_="o-2", data={"order": {"qty": 0}})).encode()
            answer = requests.post(env.url("/cloudevents/shop"), data=bad, timeout=10, headers={
                "Content-Type": STRUCTURED, "X-Hub-Signature": sign(secret, bad)})
            assert answer.status_code == 400 and "data.order.qty" in answer.json()["return"]
        finally:
            bus.close()


def _secret(done) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[0].split(" ", 1)[1]


def test_rotate_grace_0_revokes_a_leaked_secret_within_a_second(shop):
    import time

    leaked = shop.add_channel("leaky")

    def status(secret: str) -> int:
        return shop.post(json.dumps(structured()).encode(), secret=secret, channel="leaky").status_code
    wait_for(lambda: status(leaked) == 200, 10, what="the new channel to be live")

    # The default rotation keeps the old secret accepted (one hour) so senders can switch over.
    rotated = run_cli("channel", "rotate", "leaky", "-c", shop.conf)
    assert rotated.stdout.splitlines()[1].startswith("old secret valid until "), rotated.stdout
    second = _secret(rotated)
    wait_for(lambda: status(second) == 200, 10, what="the rotated secret to be accepted")
    assert status(leaked) == 200

    revoked = run_cli("channel", "rotate", "leaky", "--grace", "0", "-c", shop.conf)
    assert revoked.stdout.splitlines()[1] == "old secret revoked", revoked.stdout
    third = _secret(revoked)
    rotated_at = time.monotonic()
    sent_at = []

    def refused() -> bool:
        sent_at.append(time.monotonic())
        return status(second) == 401
    wait_for(refused, 10, interval=0.05, what="the revoked secret to be refused")
    assert sent_at[-1] - rotated_at < 1.0, f"refused only {sent_at[-1] - rotated_at:.2f} s after the rotation"
    assert status(leaked) == 401
    assert status(third) == 200


def test_rotate_refuses_a_bad_grace_and_keeps_the_secret(shop):
    secret = shop.add_channel("graceful")
    for bad in ("5x", "1h30", "-1", "tomorrow"):
        done = run_cli("channel", "rotate", "graceful", "--grace", bad, "-c", shop.conf)
        assert done.returncode != 0 and done.stdout == ""
        assert len(done.stderr.splitlines()) == 1 and done.stderr.startswith("error: "), done.stderr
    assert "--grace" in done.stderr and "90s" in done.stderr
    for good, seconds in (("90s", 90), ("10m", 600), ("2h", 7200), ("1d", 86400), ("45", 45)):
        done = run_cli("channel", "rotate", "graceful", "--grace", good, "-c", shop.conf)
        assert done.returncode == 0, done.stderr
        assert f"({seconds} s)" in done.stdout.splitlines()[1], done.stdout
    wait_for(lambda: shop.post(json.dumps(structured()).encode(), secret=_secret(done),
                               channel="graceful").status_code == 200, 10, what="the last secret to be accepted")
    assert shop.post(json.dumps(structured()).encode(), secret=secret, channel="graceful").status_code == 401


LIST_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"qty": {"type": "integer", "minimum": 1}},
    "type": "object", "required": ["lines"],
    "properties": {"lines": {"type": "array", "items": {
        "type": "array", "prefixItems": [{"type": "string"}, {"$ref": "#/$defs/qty"}], "items": False}}},
}


def test_a_draft_2020_12_schema_is_added_and_enforced(shop):
    schema = shop.env.root / "list.json"
    schema.write_text(json.dumps(LIST_SCHEMA))
    for args in (("eventtype", "add", "com.example.list", "--schema", str(schema)),
                 ("eventtype", "finalize", "com.example.list", "--version", "1.0")):
        done = run_cli(*args, "-c", shop.conf)
        assert done.returncode == 0, done.stderr
    good = structured("com.example.list", data={"lines": [["apple", 2], ["pear", 1]]})
    wait_for(lambda: shop.post_event(good).status_code == 200, 10, what="the 2020-12 type to be usable")
    answer = shop.post_event(structured("com.example.list", data={"lines": [["apple", 2], ["pear", 0]]}))
    assert answer.status_code == 400
    assert answer.json()["return"] == ("schema violation at data.lines[1][1]: 0 is less than the minimum of 1 "
                                       "(rule minimum)")
    answer = shop.post_event(structured("com.example.list", data={"lines": [["apple", 2, "extra"]]}))
    assert answer.status_code == 400 and "data.lines[0]" in answer.json()["return"]


def test_an_unknown_schema_draft_is_refused_naming_the_accepted_ones(shop):
    schema = shop.env.root / "odd.json"
    schema.write_text(json.dumps({"$schema": "https://json-schema.org/draft/2031-01/schema", "type": "object"}))
    done = run_cli("eventtype", "add", "x.odd", "--schema", str(schema), "-c", shop.conf)
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    for draft in ("draft-04", "draft-06", "draft-07", "2019-09", "2020-12"):
        assert draft in done.stderr, done.stderr
    assert "'https://json-schema.org/draft/2031-01/schema'" in done.stderr


def test_refusals_are_counted_once_by_status_and_code(shop):
    from tests.e2e.test_metrics import scrape

    def refused() -> dict:
        samples = scrape(shop.env, **{"X-Auth-Token": shop.env.login("alice")})
        return {labels: value for (name, labels), value in samples.items()
                if name == "eventbus_cloudevents_refused_total"}
    before = refused()
    assert shop.post_event(structured(data={"order": {"qty": 0}})).status_code == 400
    assert shop.post_event(structured(), secret="wrong").status_code == 401
    assert shop.post(b"{}", channel="nosuch").status_code == 404
    assert shop.post(json.dumps(structured()).encode(), content_type="text/plain").status_code == 415
    after = refused()
    grown = {labels: after[labels] - before.get(labels, 0) for labels in after
             if after[labels] != before.get(labels, 0)}
    assert grown == {(("code", "SchemaViolation"), ("status", "400")): 1,
                     (("code", "BadSignature"), ("status", "401")): 1,
                     (("code", "UnknownChannel"), ("status", "404")): 1,
                     (("code", "UnsupportedMediaType"), ("status", "415")): 1}
    assert all(dict(labels).keys() == {"status", "code"} for labels in after)
