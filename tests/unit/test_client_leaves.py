"""The request's work runs in its own task and is cancelled when the client leaves (gateway.proxying).

The end-to-end behaviour (an upstream call closed, the ledger's 499) is tests/e2e/test_cancel_early.py's;
here, the orderings a live client cannot be made to produce: the client leaving in the same loop turn as
the work ends, a shutdown's cancel, work that finishes despite the cancel, a watcher with nothing to watch.
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from cascadeflow.gateway.proxying import _ClientLeft, _unless_client_leaves


def _client(gone: asyncio.Event) -> SimpleNamespace:
    async def receive() -> dict:
        await gone.wait()
        return {"type": "http.disconnect"}

    return SimpleNamespace(receive=receive)


async def test_the_client_leaving_cancels_the_work_and_leaves_the_task_uncancelled() -> None:
    gone, cleaned = asyncio.Event(), []

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)
        return "never"

    asyncio.get_running_loop().call_later(0.01, gone.set)
    with pytest.raises(_ClientLeft):
        await _unless_client_leaves(_client(gone), work())
    assert cleaned == [True]
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)  # the request goes on (its ledger entry, its 499) without a stray cancel


async def test_a_client_leaving_as_the_work_ends_cancels_nothing_after_it() -> None:
    gone, done = asyncio.Event(), asyncio.Event()

    async def work() -> str:
        await done.wait()
        return "answer"

    def both() -> None:  # the watcher wakes first: its callback is scheduled after the work's last step
        gone.set()
        done.set()

    asyncio.get_running_loop().call_later(0.01, both)
    assert await _unless_client_leaves(_client(gone), work()) == "answer"
    for _ in range(5):
        await asyncio.sleep(0)  # a stray cancel would land on one of these
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]


async def test_a_shutdown_cancel_is_not_taken_for_the_client_leaving() -> None:
    cleaned = []

    async def work() -> None:
        try:
            await asyncio.sleep(30)
        finally:
            cleaned.append(True)

    async def request() -> None:
        await _unless_client_leaves(_client(asyncio.Event()), work())

    task = asyncio.ensure_future(request())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]


async def test_work_that_ends_on_its_own_after_the_cancel_gives_its_result() -> None:
    gone = asyncio.Event()

    async def work() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            return "finished anyway"
        return "never"

    asyncio.get_running_loop().call_later(0.01, gone.set)
    assert await _unless_client_leaves(_client(gone), work()) == "finished anyway"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.01)


async def test_nothing_to_watch_means_waiting_for_the_work() -> None:
    async def receive() -> dict:
        raise RuntimeError("no receive channel")

    async def work() -> str:
        await asyncio.sleep(0.02)
        return "answer"

    assert await _unless_client_leaves(SimpleNamespace(receive=receive), work()) == "answer"
