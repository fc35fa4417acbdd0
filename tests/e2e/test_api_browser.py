"""A real browser on ``/ui``: headless Chromium's EventSource keeps every event across an API restart.

Chromium is driven over the DevTools protocol (a websocket): the test types
into the page's login form, then reads what the page collected.
"""
from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import threading
import time
from typing import Any

import pytest
import requests
import websocket

from tests.apinode import running_api
from tests.helpers import free_port, short_tmpdir, wait_for

CHROMIUM = "/usr/bin/chromium"


class DevTools:
    """The smallest DevTools client: call a method on one page target, get its result."""

    def __init__(self, port: int) -> None:
        def page_target() -> Any:
            try:
                targets = requests.get(f"http://127.0.0.1:{port}/json/list", timeout=1).json()
            except (requests.RequestException, ValueError):
                return None
            return next((t for t in targets if t.get("type") == "page"), None)

        target = wait_for(page_target, timeout=30, interval=0.1, what="Chromium's DevTools endpoint")
        self.socket = websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30,
                                                  suppress_origin=True)
        self.ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict:
        call_id = next(self.ids)
        self.socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"page error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def chromium():
    if not shutil.which(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    profile = short_tmpdir("ebc")
    port = free_port()
    proc = subprocess.Popen([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                             "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
                             f"--remote-debugging-port={port}", f"--user-data-dir={profile}", "about:blank"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tools = None
    try:
        tools = DevTools(port)
        yield tools
    finally:
        if tools is not None:
            tools.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def log_in_ui(browser, env, tag: str = "") -> None:
    """Open ``/ui`` in the browser and log in as alice (with a tag filter when given)."""
    browser.call("Page.enable")
    browser.call("Page.navigate", url=env.url("/ui"))
    wait_for(lambda: browser.evaluate("document.readyState") == "complete"
             and browser.evaluate("typeof window.eb") == "object", timeout=30, what="the /ui page")
    browser.evaluate(f"""
        document.getElementById('username').value = 'alice';
        document.getElementById('password').value = 'alice-secret-pw';
        document.getElementById('tag').value = {tag!r};
        document.getElementById('login').requestSubmit();
    """)


def test_browser_eventsource_misses_nothing_across_an_api_restart(chromium):
    with running_api() as env:
        log_in_ui(chromium, env, "ui/*")
        wait_for(lambda: chromium.evaluate("window.eb.state") == "open", timeout=20, what="the stream to open")

        total = 90
        restarted = threading.Event()

        def fire_all() -> None:
            from eventbus import event

            with event.get_event("master", opts=env.master.opts(), listen=False) as bus:
                for n in range(total):
                    assert bus.fire_event({"n": n}, "ui/test", timeout=3000)
                    fired_one(n)

        def fired_one(n: int) -> None:
            if n == 30:
                assert env.stop_api() == 0  # mid-stream: the page's EventSource loses its server
            if n == 50:
                env.start_api()
                restarted.set()
            time.sleep(0.02)

        firing = threading.Thread(target=fire_all)
        firing.start()
        firing.join(60)
        assert restarted.is_set()
        wait_for(lambda: chromium.evaluate("window.eb.events.length") >= total, timeout=30, interval=0.2,
                 what="the page to collect every event")
        collected = chromium.evaluate("window.eb.events.map(e => [Number(e.id), e.tag, e.data.n])")
        reconnects = chromium.evaluate("window.eb.reconnects")
        lost = chromium.evaluate("window.eb.lost")
    numbers = [n for _, _, n in collected]
    ids = [event_id for event_id, _, _ in collected]
    assert numbers == list(range(total)), "the page missed or repeated events"
    assert ids == sorted(set(ids)), "ids must grow with no duplicate"
    assert all(tag == "ui/test" for _, tag, _ in collected)
    assert reconnects >= 1 and lost == 0


def open_ui(chromium: DevTools, url: str) -> None:
    chromium.call("Page.enable")
    chromium.call("Page.navigate", url=url)
    wait_for(lambda: chromium.evaluate("document.readyState") == "complete"
             and chromium.evaluate("typeof window.eb") == "object", timeout=20, what="the /ui page")


def test_ui_with_a_token_in_the_address_logs_in_with_it_and_drops_it_from_the_address(chromium):
    with running_api() as env:
        token = env.login("alice")
        open_ui(chromium, env.url(f"/ui?token={token}"))
        wait_for(lambda: chromium.evaluate("window.eb.state") == "open", timeout=20, what="the stream to open")
        env.fire({"n": 1}, "ui/token")
        wait_for(lambda: chromium.evaluate("window.eb.events.filter(e => e.tag === 'ui/token').length") == 1,
                 timeout=20, interval=0.1, what="the fired event on the page")
        assert chromium.evaluate("document.getElementById('login').hidden") is True
        assert chromium.evaluate("document.getElementById('who').textContent").startswith("alice")
        # Out of the address bar, hence out of history and bookmarks.
        assert token not in chromium.evaluate("location.href")
        assert "token" not in chromium.evaluate("location.search")
        # A token that is not (or no longer) valid: the login form, saying why, and the address cleaned too.
        open_ui(chromium, env.url("/ui?token=not-a-token"))
        wait_for(lambda: "refused" in chromium.evaluate("document.getElementById('error').textContent"),
                 timeout=20, what="the refusal on the page")
        assert chromium.evaluate("document.getElementById('login').hidden") is False
        assert chromium.evaluate("window.eb.state") == "off"
        assert chromium.evaluate("location.search") == ""
