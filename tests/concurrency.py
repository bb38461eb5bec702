"""Running work in several threads released together, to test what must be atomic."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from idp.extensions import db


def run_in_threads(count: int, work: Callable[[int], object], timeout: float = 60.0) -> list:
    """Run ``work(i)`` for i in range(count) in as many threads started together; returns
    their results in order. Every wait is bounded; an error in a thread fails the caller."""
    results: list = [None] * count
    errors: list = []
    barrier = threading.Barrier(count)

    def run(i):
        try:
            barrier.wait(timeout=timeout)
            results[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    assert not any(t.is_alive() for t in threads), "a thread never finished"
    assert not errors, errors
    return results


def in_app_contexts(instances: Sequence, work: Callable[[int], object]):
    """``work`` run by thread ``i`` in an application context of ``instances[i % n]`` (as
    many instances of the IdP), with its own database session."""

    def run(i: int):
        with instances[i % len(instances)].app_context():
            try:
                return work(i)
            finally:
                db.session.remove()

    return run
