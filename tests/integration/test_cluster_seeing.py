"""Seeing the fleet-wide bus (SPEC 11, 12): ``eventbus status`` lines, ``/metrics`` and the ``/ui`` cluster
panel of a master with ``cluster``, from the status file its cluster process keeps (written here the way
that process writes it, with this test's own pid as the live process). A real API and the real CLI."""
from __future__ import annotations

import os
import time
from typing import Any, Iterator

import pytest

from eventbus import systemstatus
from eventbus.cloudevents import jsonfile
from tests.apinode import PASSWORDS, ApiEnv
from tests.e2e.test_api_browser import chromium, log_in_ui  # noqa: F401  (the fixture)
from tests.e2e.test_metrics import scrape
from tests.helpers import free_port, run_cli, wait_for

# No NATS listens there: the API's own fleet reader stays down, which these figures do not depend on.
CLUSTER = {"servers": [f"nats://127.0.0.1:{free_port()}"], "stream": "FLEETSEEN", "subject_prefix": "seen"}


@pytest.fixture
def clustered() -> Iterator[ApiEnv]:
    env = ApiEnv({"id": "m1", "cluster": CLUSTER})
    try:
        for name, password in PASSWORDS.items():
            env.add_user(name, password)
        yield env
    finally:
        env.stop_api()
        env.cleanup()


def write_status(env: ApiEnv, **figures: Any) -> None:
    status = {"pid": os.getpid(), "running": True, "state": "up", "error": None, "exported": 0, "imported": 0,
              "duplicates": 0, "export_lag": 0, "stream": CLUSTER["stream"], "updated": time.time(), **figures}
    jsonfile.write_atomic(systemstatus.cluster_status_path(env.master.settings), status)


def status_lines(env: ApiEnv) -> tuple[int, dict[str, str]]:
    done = run_cli("status", "-c", str(env.config_dir))
    lines = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    return done.returncode, lines


def test_status_shows_the_cluster_up_down_and_not_running(clustered: ApiEnv) -> None:
    code, lines = status_lines(clustered)
    assert code == 1
    assert lines["cluster"].startswith("not running (") and "cluster process" in lines["cluster"]
    assert "cluster_exported" not in lines
    write_status(clustered, exported=120, imported=45, duplicates=6, export_lag=3)
    _, lines = status_lines(clustered)
    assert lines["cluster"] == "up"
    assert [lines[f"cluster_{key}"] for key in ("exported", "imported", "duplicates", "export_lag")] == \
        ["120", "45", "6", "3"]
    write_status(clustered, state="down", error="no server answered", exported=121, export_lag=9)
    _, lines = status_lines(clustered)
    assert lines["cluster"] == "down (no server answered)"
    assert lines["cluster_exported"] == "121" and lines["cluster_export_lag"] == "9"
    # A status file whose process is gone is no running process.
    write_status(clustered, pid=2 ** 22 + 7)
    _, lines = status_lines(clustered)
    assert lines["cluster"].startswith("not running (")


def test_a_master_without_cluster_has_no_cluster_lines() -> None:
    env = ApiEnv()
    try:
        _, lines = status_lines(env)
        assert not any(name.startswith("cluster") for name in lines)
    finally:
        env.cleanup()


def test_metrics_show_the_cluster(clustered: ApiEnv) -> None:
    clustered.start_api()
    token = clustered.login("alice")
    samples = scrape(clustered, **{"X-Auth-Token": token})
    assert samples[("eventbus_cluster_up", ())] == 0
    assert ("eventbus_cluster_exported_total", ()) not in samples
    write_status(clustered, exported=7, imported=3, duplicates=1, export_lag=2)
    samples = scrape(clustered, **{"X-Auth-Token": token})
    assert samples[("eventbus_cluster_up", ())] == 1
    assert samples[("eventbus_cluster_exported_total", ())] == 7
    assert samples[("eventbus_cluster_imported_total", ())] == 3
    assert samples[("eventbus_cluster_duplicates_total", ())] == 1
    assert samples[("eventbus_cluster_export_lag", ())] == 2
    write_status(clustered, state="down", error="authorization violation", exported=8)
    samples = scrape(clustered, **{"X-Auth-Token": token})
    assert samples[("eventbus_cluster_up", ())] == 0
    assert samples[("eventbus_cluster_info", (("error", "authorization violation"), ("stream", "FLEETSEEN")))] == 1


def _login_ui(browser: Any, env: ApiEnv) -> None:
    log_in_ui(browser, env)
    wait_for(lambda: browser.evaluate("window.eb.dash.metrics !== null"), timeout=30, what="a first scrape")


def test_ui_cluster_panel_follows_the_status(chromium: Any, clustered: ApiEnv) -> None:  # noqa: F811
    write_status(clustered, exported=11, imported=4, duplicates=2, export_lag=0)
    clustered.start_api()
    _login_ui(chromium, clustered)
    panel = "document.getElementById('cluster')"
    wait_for(lambda: chromium.evaluate(f"{panel}.hidden") is False, timeout=30, what="the cluster panel")
    assert chromium.evaluate("document.getElementById('c-state').innerText") == "up"
    tiles = [chromium.evaluate(f"document.getElementById('{name}').innerText")
             for name in ("c-exported", "c-imported", "c-duplicates", "c-lag")]
    assert tiles == ["11", "4", "2", "0"]
    # Live: the next scrapes show the cluster going down, with why.
    write_status(clustered, state="down", error="no server answered", exported=12, export_lag=5)
    wait_for(lambda: chromium.evaluate("document.getElementById('c-state').innerText") == "down", timeout=30,
             what="the panel to show the cluster down")
    assert chromium.evaluate("document.getElementById('c-error').innerText") == "no server answered"
    wait_for(lambda: chromium.evaluate("document.getElementById('c-lag').innerText") == "5", timeout=30,
             what="the new export lag")


def test_ui_has_no_cluster_panel_without_cluster(chromium: Any) -> None:  # noqa: F811
    from tests.apinode import running_api

    with running_api() as env:
        _login_ui(chromium, env)
        wait_for(lambda: chromium.evaluate("window.eb.dash.masterUp") is True, timeout=30, what="a master scrape")
        assert chromium.evaluate("document.getElementById('cluster').hidden") is True
