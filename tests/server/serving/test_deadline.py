"""server/serving/deadline.py: asyncio.timeout's behaviour over the waits of a loop, with one
timer."""

import asyncio

import pytest
from nanoserve.server.serving.deadline import Alarm


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 5))


def test_a_wait_past_the_deadline_raises_timeout_error():
    async def main():
        alarm = Alarm(asyncio.get_running_loop().time() + 0.5)
        async with alarm:
            await asyncio.sleep(0.01)  # within: fine
        with pytest.raises(TimeoutError):
            async with alarm:
                await asyncio.sleep(1)
        alarm.close()

    run(main())


def test_time_between_waits_is_not_timed_but_a_passed_deadline_raises_at_the_next_wait():
    async def main():
        loop = asyncio.get_running_loop()
        alarm = Alarm(loop.time() + 0.05)
        async with alarm:
            await asyncio.sleep(0)
        await asyncio.sleep(0.1)  # our own work (a slow client): the alarm rings, nothing raises
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with alarm:
                await asyncio.sleep(1)
        assert loop.time() - t0 < 0.5  # at once, not after the 1 s sleep

    run(main())


def test_later_postpones_without_a_new_timer_and_still_rings():
    async def main():
        loop = asyncio.get_running_loop()
        # Each "token" arrives within 0.2 s of the last, the five together take 0.3 s, past the
        # first deadline: only `later` keeps it from ringing. The 0.14 s of slack per token
        # absorbs a busy machine's scheduling delays.
        alarm = Alarm(loop.time() + 0.2)
        for _ in range(5):
            async with alarm:
                await asyncio.sleep(0.06)
            alarm.later(loop.time() + 0.2)
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with alarm:
                await asyncio.sleep(1)
        assert 0.15 < loop.time() - t0 < 0.9
        alarm.close()

    run(main())


def test_reschedule_earlier_cuts_a_wait_short():
    async def main():
        loop = asyncio.get_running_loop()
        alarm = Alarm(loop.time() + 60)
        loop.call_later(0.05, lambda: alarm.reschedule(loop.time()))  # a drain
        t0 = loop.time()
        with pytest.raises(TimeoutError):
            async with alarm:
                await asyncio.sleep(5)
        assert loop.time() - t0 < 1

    run(main())


def test_someone_elses_cancel_stays_a_cancel():
    async def main():
        alarm = Alarm(asyncio.get_running_loop().time() + 60)

        async def waiter():
            async with alarm:
                await asyncio.sleep(5)

        task = asyncio.create_task(waiter())
        await asyncio.sleep(0.02)
        task.cancel()  # a client that left
        with pytest.raises(asyncio.CancelledError):
            await task
        alarm.close()

    run(main())


def test_the_waiting_task_may_change_between_waits():
    # a stream's first event is awaited in a task of its own (routes.respond), the rest in the
    # response's task
    async def main():
        alarm = Alarm(asyncio.get_running_loop().time() + 0.05)

        async def first():
            async with alarm:
                await asyncio.sleep(0)

        await asyncio.create_task(first())
        with pytest.raises(TimeoutError):
            async with alarm:
                await asyncio.sleep(1)

    run(main())
