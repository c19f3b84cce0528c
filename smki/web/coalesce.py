"""Requests that arrive while the actor thread is busy, handled together as its next call.

A worker has one actor thread (python-pkcs11 and the SQLite connection are not thread-safe), and
an actor call that handles a group costs little more than one that handles a single request (one
transaction, one commit). So a `Coalescer` sends a request to the actor thread at once when it is
idle (no timer, no added latency), and otherwise queues it: when the running call returns, every
request queued meanwhile goes as the next group. Each request is answered with its own result.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from aiohttp import web

from smki.web.context import run_in_actor_thread

Item = TypeVar("Item")
Answer = TypeVar("Answer")

# The most requests in one group: a bound on one transaction's length (the others wait for the next).
MAX_GROUP = 256


class Coalescer(Generic[Item, Answer]):
    """Feeds `handle_group(items) -> answers` (one answer per item, in order; run on the actor thread) from many requests."""

    def __init__(self, app: web.Application, handle_group: Callable[[Sequence[Item]], Sequence[Answer]], max_group: int = MAX_GROUP) -> None:
        if max_group < 1:
            raise ValueError("a group holds at least one request")
        self._app, self._handle_group, self._max_group = app, handle_group, max_group
        self._waiting: list[tuple[Item, asyncio.Future]] = []
        self._draining: asyncio.Task | None = None

    async def submit(self, item: Item) -> Answer:
        """`item`'s answer, once the group it joined has been handled (an exception of the whole call is raised for each)."""
        answer = asyncio.get_running_loop().create_future()
        self._waiting.append((item, answer))
        if self._draining is None:
            self._draining = asyncio.create_task(self._drain())
        return await answer

    async def _drain(self) -> None:
        # A separate task, not the first caller's: a client that hangs up must not stop the others' group.
        try:
            while self._waiting:
                group, self._waiting = self._waiting[:self._max_group], self._waiting[self._max_group:]
                try:
                    answers = await run_in_actor_thread(self._app, self._handle_group, [item for item, _ in group])
                    if len(answers) != len(group):
                        raise RuntimeError(f"a group of {len(group)} requests was given {len(answers)} answers")
                except Exception as fault:  # noqa: BLE001 - the whole call failed: each request is answered with it
                    answers = [fault] * len(group)
                    _settle(group, answers, failed=True)
                else:
                    _settle(group, answers, failed=False)
        finally:
            self._draining = None


def _settle(group: list[tuple[object, asyncio.Future]], answers: Sequence, failed: bool) -> None:
    for (_, future), answer in zip(group, answers):
        if future.done():  # its client went away (the handler was cancelled): nobody to answer
            continue
        if failed:
            future.set_exception(answer)
        else:
            future.set_result(answer)
