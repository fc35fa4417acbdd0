"""``make cluster`` and docs/fleet.md's "Trying it" block, run as a person runs them.

The real ``make cluster`` (three nats-server nodes, masters ``a`` and ``b`` with their APIs from
``conf/cluster``), then each command of the block as written (``TOKEN`` replaced by the one it printed),
each checked against what its comment promises; Ctrl-C (SIGINT) stops everything.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.readme_tour import doc_blocks, split_comment

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(240)


def trying_it() -> list[str]:
    found = [b for b in doc_blocks() if b.doc == "docs/fleet.md" and b.lang == "sh"
             and "conf/cluster/a" in b.text]
    assert len(found) == 1, "docs/fleet.md has no single 'Trying it' block"
    return [line for line in found[0].text.splitlines() if line.strip()]


class Output:
    """A process's stdout read by a thread, kept whole."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.text = ""
        self.proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.text += line

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text)
            if found:
                return found
            assert self.proc.poll() is None or re.search(pattern, self.text), \
                f"exited with {self.proc.returncode}:\n{self.text[-3000:]}"
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout:g} s:\n{self.text[-3000:]}")


def test_make_cluster_and_the_trying_it_block_as_written():
    lines = trying_it()
    make = subprocess.Popen(["make", "cluster"], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    out = Output(make)
    try:
        out.wait_for(r"A local fleet is running", 150)
        token = out.wait_for(r"127\.0\.0\.1:8002/events\?token=([^']+)'", 5).group(1)
        fire, watch, status, curl = (split_comment(line) for line in lines)
        done = subprocess.run(fire[0], shell=True, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        seen = subprocess.run(watch[0], shell=True, cwd=REPO, capture_output=True, text=True, timeout=60)
        assert seen.returncode == 0, seen.stderr
        assert seen.stdout.startswith("myco/hello\t") and '"_origin": "a"' in seen.stdout, seen.stdout
        shown = ""
        for _ in range(50):  # the status file is rewritten every second; the counts move after the fire
            shown = subprocess.run(status[0], shell=True, cwd=REPO, capture_output=True, text=True, timeout=60).stdout
            if "cluster: up" in shown.splitlines() and re.search(r"^cluster_exported: [1-9]", shown, re.M):
                break
            time.sleep(0.2)
        assert "cluster: up" in shown.splitlines() and re.search(r"^cluster_exported: [1-9]", shown, re.M), shown
        reader = subprocess.Popen(curl[0].replace("TOKEN", token), shell=True, cwd=REPO, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        stream = Output(reader)
        try:
            stream.wait_for(r"retry: ", 30)
            again = subprocess.run(fire[0], shell=True, cwd=REPO, capture_output=True, text=True, timeout=60)
            assert again.returncode == 0, again.stderr
            record = stream.wait_for(r"id: (\d+)\ntag: myco/hello\ndata: .*\"_origin\": \"a\"", 30)
            assert int(record.group(1)) > 0
        finally:
            os.killpg(reader.pid, signal.SIGTERM)
            reader.wait(10)
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C, as the page says
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            raise
    left = subprocess.run(["pgrep", "-f", "conf/cluster/[ab]|run/cluster/nats"], capture_output=True, text=True)
    assert left.stdout == "", f"still running after Ctrl-C: {left.stdout}"
