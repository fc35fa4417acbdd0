"""Test helpers: per-test config dirs, real daemon processes, the CLI as a user runs it.

The process helpers are ``bench.procs`` (the benchmarks start daemons the same way).
"""
from __future__ import annotations

import os
import subprocess

from bench.procs import EVENTBUS, Daemon, Node, free_port, short_tmpdir, wait_for, write_config

__all__ = ["EVENTBUS", "Daemon", "Node", "env_without", "failed", "free_port", "run_cli", "short_tmpdir", "wait_for",
           "write_config"]


def run_cli(*args: str, input: str | None = None, timeout: float = 30.0,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``eventbus ARGS`` as a user would and capture what it prints."""
    return subprocess.run([EVENTBUS, *args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=env)


def env_without(*names: str) -> dict:
    env = dict(os.environ)
    for name in names:
        env.pop(name, None)
    return env


def failed(request) -> bool:
    """Whether the test using a fixture failed, in its setup or its call (from ``request`` in the fixture's
    teardown; the reports are kept by ``tests/conftest.py``)."""
    return any(getattr(getattr(request.node, f"report_{when}", None), "failed", False) for when in ("setup", "call"))
