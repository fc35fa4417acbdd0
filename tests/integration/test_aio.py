"""The asyncio handle against a real daemon."""
from __future__ import annotations

import asyncio
import time

from eventbus import aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_fire_and_get(master):
    async def scenario():
        async with aio.get_event("master", opts=master.opts()) as bus:
            assert bus.connected
            assert await bus.fire_event({"x": 1}, "aio/one") is True
            return await bus.get_event(wait=5, tag="aio/", full=True)
    full = run(scenario())
    assert full["tag"] == "aio/one" and full["data"]["x"] == 1


def test_async_for_over_a_subscription_keeps_order(master):
    async def scenario():
        async with aio.get_event("master", opts=master.opts()) as bus:
            async with bus.subscribe("aio/seq/") as sub:
                for n in range(50):
                    await bus.fire_event({"n": n}, f"aio/seq/{n}")
                    await bus.fire_event({"n": -1}, "aio/noise")
                got = []
                async for full in sub:
                    got.append(full["data"]["n"])
                    if len(got) == 50:
                        return got
    assert run(scenario()) == list(range(50))


def test_timeout_and_no_block(master):
    async def scenario():
        async with aio.get_event("master", opts=master.opts()) as bus:
            started = time.monotonic()
            assert await bus.get_event(wait=0.3, tag="never/") is None
            waited = time.monotonic() - started
            assert await bus.get_event(no_block=True) is None
            return waited
    assert 0.25 <= run(scenario()) < 3


def test_other_tasks_run_while_waiting(master):
    async def scenario():
        async with aio.get_event("master", opts=master.opts()) as bus, \
                aio.get_event("master", opts=master.opts(), listen=False) as pub:
            async def fire_later():
                # Runs only once get_event yields to the loop: a get_event that blocked the loop never sees it.
                await pub.fire_event({"from": "task"}, "aio/task")
            task = asyncio.create_task(fire_later())
            data = await bus.get_event(wait=5, tag="aio/task")
            await task
            return data
    assert run(scenario())["from"] == "task"


def test_fire_without_daemon_returns_false(short_tmp):
    async def scenario():
        bus = aio.get_event("master", sock_dir=short_tmp / "none", listen=False)
        try:
            return await bus.fire_event({}, "no/daemon", timeout=200)
        finally:
            await bus.aclose()
    assert run(scenario()) is False
