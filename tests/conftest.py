"""Shared fixtures: real daemons on per-test config dirs in short temp dirs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from tests.apinode import ApiEnv, running_api
from tests.helpers import Node, short_tmpdir
from tests.linkkit import Site


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so a fixture's teardown can tell whether its test failed
    (``tests.helpers.failed``)."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    import shutil

    path = short_tmpdir()
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def master_node() -> Iterator[Node]:
    """A master config in its own short temp dir (not started)."""
    node = Node(short_tmpdir("ebm"), "master")
    yield node
    node.cleanup()


@pytest.fixture
def master(master_node: Node) -> Iterator[Node]:
    """A running master daemon."""
    master_node.start()
    yield master_node
    master_node.stop()


@pytest.fixture
def minion_node() -> Iterator[Node]:
    node = Node(short_tmpdir("ebn"), "minion", id="testminion")
    yield node
    node.cleanup()


@pytest.fixture
def minion(minion_node: Node) -> Iterator[Node]:
    """A running minion daemon (its local bus)."""
    minion_node.start()
    yield minion_node
    minion_node.stop()


@pytest.fixture
def zmq_context():
    """A raw zmq context for tests that play a rogue or raw peer; always torn down, linger 0."""
    import zmq

    context = zmq.Context()
    yield context
    context.destroy(linger=0)


@pytest.fixture
def api_env() -> Iterator[ApiEnv]:
    """A running master and API; users alice (sees all) and bob (myco/*)."""
    with running_api() as env:
        yield env


@pytest.fixture(scope="module")
def shared_api() -> Iterator[ApiEnv]:
    """One running master and API shared by a module's read-mostly tests."""
    with running_api() as env:
        yield env


@pytest.fixture
def site() -> Iterator[Site]:
    s = Site()
    yield s
    s.cleanup()
