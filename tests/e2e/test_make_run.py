"""What `make run` starts (daemon/devrun.py on the conf/ samples) works as its printout says."""
from __future__ import annotations

import json
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests
import yaml

from tests.helpers import free_port, run_cli, short_tmpdir

REPO = Path(__file__).resolve().parents[2]


def sample_conf_with_free_ports(root: Path) -> Path:
    """The checkout's conf/ samples, copied as they are, except for ports free on this machine."""
    conf = root / "conf"
    shutil.copytree(REPO / "conf", conf)
    publish, ret, http = free_port(), free_port(), free_port()
    for name, ports in (("master", {"publish_port": publish, "ret_port": ret}),
                        ("minion", {"publish_port": publish, "ret_port": ret}), ("api", {"port": http})):
        keys = yaml.safe_load((conf / name).read_text())
        keys.update(ports)
        (conf / name).write_text(yaml.safe_dump(keys))
    return conf


def read_until(stream, marker: str, timeout: float) -> str:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in stream], daemon=True).start()
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if marker in seen[-1]:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout}s; printed so far:\n{''.join(seen)}")


def test_make_run_starts_master_minion_and_api_that_work_together():
    root = short_tmpdir("ebr")
    conf = sample_conf_with_free_ports(root)
    log = open(root / "devrun.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "daemon.devrun", str(conf)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        printed = read_until(proc.stdout, "Ctrl-C stops everything.", 90)
        assert "watch the master bus" in printed
        token = re.search(r"API token:\s+(\S+)", printed).group(1)
        url = re.search(r"curl -N '(\S+)'", printed).group(1)
        assert token in url
        # The minion's key is pending, as in Salt, until accepted.
        accepted = run_cli("key", "--accept", "local-minion", "-c", str(conf))
        assert accepted.returncode == 0, accepted.stderr
        with requests.get(url, stream=True, timeout=30) as stream:
            assert stream.status_code == 200
            assert run_cli("fire", '{"message": "It works!"}', "myco/event/success", "--node", "master",
                           "-c", str(conf)).returncode == 0

            def relayed() -> bool:
                return run_cli("send", "myco/hello", "who=me", "-c", str(conf)).returncode == 0
            assert relayed()
            seen = {}
            for line in stream.iter_lines(decode_unicode=True):
                if line.startswith("data: "):
                    record = json.loads(line[6:])
                    seen[record["tag"]] = record["data"]
                    if "myco/event/success" in seen and "myco/hello" in seen:
                        break
        assert seen["myco/event/success"]["message"] == "It works!"
        assert seen["myco/hello"]["id"] == "local-minion" and seen["myco/hello"]["data"]["who"] == "me"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
        log.close()
    assert code == 0
    leftovers = list((root / "run" / "var" / "run" / "eventbus").rglob("*.ipc"))
    assert leftovers == [], leftovers
    assert "Traceback" not in (root / "devrun.log").read_text()
    shutil.rmtree(root, ignore_errors=True)
