"""`make run` with the conf/master sample rule: the README's reactor section, as a user follows it."""
from __future__ import annotations

import os
import re
import signal

from eventbus import config
from eventbus.event import MasterEvent
from tests.e2e.test_make_run import MakeRun
from tests.helpers import run_cli, wait_for


def test_the_sample_rule_reacts_and_a_sighup_to_the_master_keeps_make_run_up():
    run = MakeRun()
    try:
        conf = str(run.conf)
        def reactor_status() -> dict[str, str]:
            shown = run_cli("reactor", "--status", "-c", conf)
            assert shown.returncode == 0, shown.stderr
            return dict(line.split(": ", 1) for line in shown.stdout.splitlines())
        lines = wait_for(lambda: (s := reactor_status())["running"].startswith("yes") and s, 30,
                         what="the sample rule's reactor to run")
        assert int(lines["rules"]) >= 1
        assert run_cli("key", "--accept", "local-minion", "-c", conf).returncode == 0
        seen: dict[str, list[dict]] = {}
        with MasterEvent(config.load(config.MasterConfig, run.conf / "master").sock_dir) as bus:
            def collect(tag: str) -> list[dict]:
                while (record := bus.get_event(wait=0.05, full=True)) is not None:
                    seen.setdefault(record["tag"], []).append(record["data"])
                return seen.get(tag, [])

            def send() -> bool:
                sent = run_cli("send", "myco/deploy/done", '{"app": "web"}', "version=7", "-c", conf)
                assert sent.returncode == 0, sent.stderr
                return bool(wait_for(lambda: collect("myco/audit/local-minion"), 15, what="the audit event"))

            send()
            assert [{k: v for k, v in e.items() if k != "_stamp"} for e in seen["myco/audit/local-minion"]] \
                == [{"app": "web"}]
            assert any(r["ok"] and r["rule"] == "myco/deploy/*" for r in seen["eventbus/reactor/result"])

            # The master's pid, where the README says to find it; SIGHUP reloads, nothing stops.
            status = run_cli("status", "-c", conf).stdout
            pid = int(re.search(r"^master: running \(pid (\d+)", status, re.M).group(1))
            os.kill(pid, signal.SIGHUP)
            seen.clear()
            send()
        assert run.proc.poll() is None, run.log_path.read_text()[-4000:]
        assert "SIGHUP: nothing to reload" in run.log_path.read_text()
        assert run.stop(signal.SIGINT) == 0
        assert run.ipc_files() == []
        assert "Traceback" not in run.log_path.read_text()
    finally:
        run.cleanup()
