"""CloudEvents channels and event types as operators run them: registry CLI, rotation, schema drafts, README."""
from __future__ import annotations

import json
import subprocess

import requests

from tests.apinode import running_api
from tests.cehelp import STRUCTURED, BusWatch, shop, sign, structured  # noqa: F401 - shop: the fixture
from tests.helpers import run_cli, wait_for


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
