"""``POST /cloudevents/<channel>`` as senders drive it: SDK, curl, client, duplicates, bad input, refusals."""
from __future__ import annotations

import json
import subprocess
import uuid

import pytest
from cloudevents.core.bindings import http as ce_http
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from eventbus import cloudevents as client
from tests.cehelp import STRUCTURED, BusWatch, shop, sign, structured  # noqa: F401 - shop: the fixture
from tests.helpers import wait_for

BATCH = "application/cloudevents-batch+json"


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
