"""Servers the tests run for real (PostgreSQL, Redis), installed by ``setup.sh``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

Server = TypeVar("Server")


def start_or_fail(start: Callable[[], Server], unavailable: type[Exception],
                  name: str) -> Server:
    """``start()``, or fail the test with what to do about it (never a silent skip)."""
    try:
        return start()
    except unavailable as error:
        pytest.fail(f"Cannot start the test {name} server: {error}", pytrace=False)


def serve_session(server, stop: Callable[[], None]) -> Iterator:
    """The body of a session fixture: the running server, stopped afterwards."""
    try:
        yield server
    finally:
        stop()
