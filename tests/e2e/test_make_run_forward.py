"""`make run` with the conf/forward sample: the forwarder starts beside the master and its file sink works."""
from __future__ import annotations

import json
import signal

from tests.e2e.test_make_run import MakeRun
from tests.helpers import run_cli, wait_for


def test_make_run_forwards_the_bus_into_the_sample_file_sink():
    run = MakeRun()
    try:
        assert "forward --status" in run.printed and "events-file (file)" in run.printed
        fired = run_cli("fire", '{"message": "It works!"}', "myco/event/success", "--node", "master",
                        "-c", str(run.conf))
        assert fired.returncode == 0, fired.stderr
        sink = run.root / "run" / "forwarded_events.log"

        def forwarded() -> list[dict]:
            lines = sink.read_text().splitlines() if sink.exists() else []
            return [r for r in map(json.loads, lines) if r["tag"] == "myco/event/success"]
        record = wait_for(forwarded, 30, what="the fired event in forwarded_events.log")[0]
        assert record["data"]["message"] == "It works!" and isinstance(record["seq"], int)
        status = run_cli("forward", "--status", "-c", str(run.conf))
        assert status.returncode == 0, status.stderr
        assert status.stdout.startswith("events-file file up delivered=")
        assert run.stop(signal.SIGINT) == 0
        assert run.ipc_files() == []
        assert "Traceback" not in run.log_path.read_text()
    finally:
        run.cleanup()
