"""A small asyncio load generator.

A scenario gives an async ``operation(user)`` (one request, or one whole sign-in) and a set
of virtual users (each with its own state: cookies, a refresh token chain…). Two ways to
drive it:

- :func:`saturate`: ``concurrency`` virtual users, each starting its next operation as soon
  as the last one ended (closed loop): the server's throughput;
- :func:`paced`: operations started at a fixed rate, evenly spaced (open loop), by whichever
  virtual user is free: the latency below saturation.

Both run a warm-up first that is not measured; the server's CPU time and the load
generator's own are read at the start and at the end of the measured window.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Operation = Callable[[Any], Awaitable[None]]
FINISH_TIMEOUT = 60.0  # seconds the operations in flight get to finish at the end


class OperationError(Exception):
    """An operation got a wrong answer (status, missing field, invalid token…)."""


@dataclass
class Measurement:
    operations: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    first_error: str | None = None
    requests: int = 0

    @property
    def rate(self) -> float:
        return self.operations / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        """The ``q`` quantile of the latencies (nearest rank), in seconds."""
        if not self.latencies:
            return math.nan
        ordered = sorted(self.latencies)
        rank = max(1, math.ceil(q * len(ordered)))
        return ordered[rank - 1]

    @property
    def cpu_per_operation(self) -> float:
        return self.server_cpu / self.operations if self.operations else math.nan

    @property
    def server_busy(self) -> float:
        """Share of one CPU the server used during the window."""
        return self.server_cpu / self.elapsed if self.elapsed else 0.0

    @property
    def client_busy(self) -> float:
        return self.client_cpu / self.elapsed if self.elapsed else 0.0


class _Window:
    """Counts only what ends inside the measured window."""

    def __init__(self, server_cpu: Callable[[], float]):
        self.server_cpu = server_cpu
        self.measuring = False
        self.result = Measurement()

    def begin(self) -> None:
        self.measuring = True
        self.started = time.perf_counter()
        self.cpu0 = self.server_cpu()
        self.own0 = time.process_time()

    def end(self) -> Measurement:
        self.measuring = False
        result = self.result
        result.elapsed = time.perf_counter() - self.started
        result.server_cpu = self.server_cpu() - self.cpu0
        result.client_cpu = time.process_time() - self.own0
        return result

    async def run(self, operation: Operation, user: Any) -> None:
        started = time.perf_counter()
        try:
            await operation(user)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is counted, none is fatal
            if self.measuring:
                self.result.errors += 1
                if self.result.first_error is None:
                    self.result.first_error = f"{type(exc).__name__}: {exc}"[:300]
            return
        if self.measuring:
            self.result.operations += 1
            self.result.latencies.append(time.perf_counter() - started)


@contextlib.contextmanager
def no_collector_pauses():
    """The load generator's own garbage collector stays off while it measures: a full
    collection pauses every virtual user for milliseconds, which would show as the
    server's latency. What the measurement leaves is collected afterwards."""
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


async def saturate(operation: Operation, users: list[Any], duration: float, warmup: float,
                   server_cpu: Callable[[], float]) -> Measurement:
    """Every virtual user runs operations back to back: ``warmup`` seconds unmeasured, then
    ``duration`` seconds measured. At the end each user finishes the operation it is in
    (a refresh token chain stays whole), within ``FINISH_TIMEOUT``."""
    window = _Window(server_cpu)
    stopping = asyncio.Event()

    async def loop(user: Any) -> None:
        while not stopping.is_set():
            await window.run(operation, user)
            await asyncio.sleep(0)  # an operation that fails at once must not starve the loop

    tasks = [asyncio.create_task(loop(user)) for user in users]
    try:
        with no_collector_pauses():
            return await _saturated(window, stopping, tasks, duration, warmup)
    finally:
        stopping.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _saturated(window: _Window, stopping: asyncio.Event, tasks: list[asyncio.Task],
                     duration: float, warmup: float) -> Measurement:
    await asyncio.sleep(warmup)
    window.begin()
    await asyncio.sleep(duration)
    result = window.end()
    stopping.set()
    await asyncio.wait(tasks, timeout=FINISH_TIMEOUT)
    return result


async def paced(operation: Operation, users: list[Any], rate: float, duration: float,
                warmup: float, server_cpu: Callable[[], float]) -> Measurement:
    """Start operations at ``rate`` per second, evenly spaced, each by a free virtual user
    (when none is free, the start waits for one). Latencies are measured from the start."""
    window = _Window(server_cpu)
    free: asyncio.Queue = asyncio.Queue()
    for user in users:
        free.put_nowait(user)
    tasks: set[asyncio.Task] = set()
    interval = 1.0 / rate
    begin = time.perf_counter()
    measured_from = begin + warmup
    finish = measured_from + duration

    async def one(user: Any) -> None:
        try:
            await window.run(operation, user)
        finally:
            free.put_nowait(user)

    try:
        with no_collector_pauses():
            return await _paced(window, one, free, tasks, begin, interval, measured_from,
                                finish)
    finally:
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _paced(window: _Window, one, free: asyncio.Queue, tasks: set[asyncio.Task],
                 begin: float, interval: float, measured_from: float,
                 finish: float) -> Measurement:
    n = 0
    while True:
        due = begin + n * interval
        if due >= finish:
            break
        now = time.perf_counter()
        if not window.measuring and now >= measured_from:
            window.begin()
        if due > now:
            await asyncio.sleep(due - now)
        user = await asyncio.wait_for(free.get(), timeout=FINISH_TIMEOUT)
        task = asyncio.create_task(one(user))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        n += 1
    if not window.measuring:
        window.begin()
    result = window.end()
    if tasks:
        await asyncio.wait(list(tasks), timeout=FINISH_TIMEOUT)
    return result
