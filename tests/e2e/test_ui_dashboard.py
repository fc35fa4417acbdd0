"""``/ui`` as a dashboard in headless Chromium: the chart, busiest tags, present minions and forwarders show what was fired."""
from __future__ import annotations

import base64

from eventbus import event
from tests.e2e.test_api_browser import chromium, log_in_ui  # noqa: F401  (the fixture)
from tests.e2e.test_metrics import linked_api  # noqa: F401  (the fixture)
from tests.helpers import wait_for


def test_dashboard_shows_rates_tags_minions_and_forwarders(chromium, linked_api, tmp_path):  # noqa: F811
    env, minion, forward = linked_api
    chromium.call("Emulation.setDeviceMetricsOverride", width=1280, height=1000, deviceScaleFactor=1, mobile=False)
    log_in_ui(chromium, env)
    wait_for(lambda: chromium.evaluate("window.eb.state") == "open", timeout=20, what="the stream to open")
    wait_for(lambda: chromium.evaluate("window.eb.dash.metrics !== null"), timeout=20, what="a first scrape")

    with event.get_event("master", opts=env.master.opts(), listen=False) as bus:
        for n in range(60):
            assert bus.fire_event({"n": n}, "ui/busy", timeout=3000)
        for n in range(15):
            assert bus.fire_event({"n": n}, "ui/calm", timeout=3000)
    with event.MinionEvent(opts=minion.opts(), listen=False) as handle:
        for n in range(5):
            assert handle.fire_master({"n": n}, "ui/relayed") is True
    forward.wait_delivered("out", 80)

    def page_has_it() -> bool:
        return chromium.evaluate("window.eb.events.filter(e => e.tag.startsWith('ui/')).length") >= 80
    wait_for(page_has_it, timeout=30, interval=0.2, what="the page to receive every event")
    # The chart: the stream's line adds up to what was fired, and the bus line (from /metrics) saw a rate.
    wait_for(lambda: chromium.evaluate("window.eb.chart.stream.reduce((a, b) => a + b, 0)") >= 80
             and chromium.evaluate("Math.max(...window.eb.chart.bus.filter(v => v !== null), 0)") > 0,
             timeout=20, interval=0.2, what="the chart to show the burst")
    points = chromium.evaluate("document.getElementById('stream-line').getAttribute('points')")
    heights = [float(pair.split(",")[1]) for pair in points.split()]
    assert min(heights) < max(heights), "the drawn line has a peak where the events came"
    assert chromium.evaluate("document.querySelectorAll('#chart path.bus').length") >= 1
    # Busiest tags, most first, with their counts.
    tags = chromium.evaluate("[...document.querySelectorAll('#tags li')].map(li => li.innerText.replace(/\\s+/g, ' ').trim())")
    assert tags[0] == "ui/busy 60" and tags[1] == "ui/calm 15" and "ui/relayed 5" in tags, tags
    # Present minions and the forwarder, from /metrics.
    wait_for(lambda: chromium.evaluate("document.getElementById('minions').innerText").strip() == "m1",
             timeout=20, interval=0.2, what="m1 in the minion list")
    wait_for(lambda: "out up" in chromium.evaluate("document.getElementById('brokers').innerText")
             and "pending 0" in chromium.evaluate("document.getElementById('brokers').innerText"),
             timeout=20, interval=0.2, what="the forwarder in the list")
    assert chromium.evaluate("document.getElementById('m-minions').textContent") == "1"
    # Names are readable, not squeezed to nothing by the bars beside them.
    assert chromium.evaluate("Math.min(...[...document.querySelectorAll('.list .name')]"
                             ".map(e => e.getBoundingClientRect().width))") > 30
    # The live stream and its controls are still there.
    assert chromium.evaluate("document.querySelectorAll('#rows tr').length") >= 80
    chromium.evaluate("document.getElementById('pause').click()")
    assert chromium.evaluate("window.eb.state") == "paused"
    shot = chromium.call("Page.captureScreenshot", format="png")
    path = tmp_path / "ui-dashboard.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    assert path.stat().st_size > 10_000


def test_a_non_admin_gets_the_stream_figures_and_a_note_instead_of_metrics(chromium):  # noqa: F811
    from tests.apinode import running_api

    with running_api() as env:
        chromium.call("Page.enable")
        chromium.call("Page.navigate", url=env.url("/ui"))
        wait_for(lambda: chromium.evaluate("document.readyState") == "complete"
                 and chromium.evaluate("typeof window.eb") == "object", timeout=20, what="the /ui page")
        chromium.evaluate("""
            document.getElementById('username').value = 'bob';
            document.getElementById('password').value = 'bob-secret-pw';
            document.getElementById('login').requestSubmit();
        """)
        wait_for(lambda: chromium.evaluate("window.eb.state") == "open", timeout=20, what="the stream to open")
        wait_for(lambda: "403" in (chromium.evaluate("window.eb.dash.metricsError") or ""), timeout=20,
                 what="the refused scrape")
        env.fire({"n": 1}, "myco/seen")
        env.fire({"n": 2}, "other/unseen")
        env.fire({"n": 3}, "myco/seen")
        wait_for(lambda: chromium.evaluate("window.eb.events.length") >= 2, timeout=20, what="bob's events")
        wait_for(lambda: chromium.evaluate("document.getElementById('tags').innerText")
                 .replace("\n", " ").split() == ["myco/seen", "2"], timeout=10, interval=0.2, what="the tag list")
        assert "metrics unavailable (403" in chromium.evaluate("document.getElementById('metrics-note').innerText")
        assert chromium.evaluate("document.getElementById('minions').innerText").strip() == \
            "needs the metrics (an admin login)"
