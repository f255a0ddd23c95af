"""A route's answer in stages, so that a repeat is answered on the event loop and only the making of
an answer goes to a thread.

A route written as stages is a generator: its checks, then `row = yield StateRead(query, params)` for
the state its answer depends on (what was materialised: the tag's material, read before any row),
then its decision (a 304, the response cache's answer, or none), then at most one
`rows = yield RowsRead(read)` for everything it reads to make the answer, then the answer (returned).
The route's own code decides every answer; only where each stage runs differs:

* `run` (the route's FastAPI endpoint, in the thread pool) reads the state and the rows on one
  connection of the sync pool, the state statement standing in for the pool's check
  (Database.checked_by), exactly as the route did when it was one function;
* api/revalidate.py's fast path runs the checks and the decision on the event loop, reads the state
  through the async pool on the loop (Database.first_row), and goes to the thread pool (`rest`) only
  when rows must be read. A repeat or a 304 then never leaves the loop: the hop to a thread and back,
  two wake-ups on the VM's shared cores, was the largest part of its cost (docs/benchmarks.md).

Code on the loop must not block: while a stage runs there (`on_loop`), the sync pool refuses to hand a
connection (WouldBlock), so a check that would read the database (a stale metrics catalogue, the first
look-up of the daily view) makes the fast path run the whole route in the thread pool instead."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from fastapi import Response

from analytics_platform.api.db import Database, on_loop


@dataclass(frozen=True)
class StateRead:
    """The route's first statement: what its answer depends on. Answered with its first row."""

    query: Any
    params: Any


@dataclass(frozen=True)
class RowsRead:
    """Everything the route reads to make its answer, on one connection. Answered with what `read` returns."""

    read: Callable[[psycopg.Connection], Any]


Steps = Generator[StateRead | RowsRead, Any, Response]
F = TypeVar("F", bound=Callable[..., Any])


def answered_by(stages: Callable[..., Steps]) -> Callable[[F], F]:
    """Marks an endpoint as `stages` run by `run`: the fast path calls `stages` with the endpoint's own
    arguments (its parameter names must be the endpoint's: api/revalidate.py checks them)."""

    def mark(endpoint: F) -> F:
        endpoint.stages = stages  # type: ignore[attr-defined]
        return endpoint

    return mark


def advance(steps: Steps, value: Any) -> tuple[bool, Any]:
    """Send `value` into the route: (True, its answer) when it returned, else (False, its next read)."""
    try:
        return False, steps.send(value)
    except StopIteration as done:
        return True, done.value


def advance_on_loop(steps: Steps, value: Any) -> tuple[bool, Any]:
    """advance() on the event loop: the sync pool refuses the route's code (WouldBlock)."""
    with on_loop():
        return advance(steps, value)


def run(db: Database, steps: Steps) -> Response:
    """The whole route in this thread: the state and the rows read on one connection, as one function did."""
    done, step = advance(steps, None)
    if done:
        return step
    if not isinstance(step, StateRead):
        return rest(db, steps, step)
    with db.checked_by(step.query, step.params) as (conn, row):
        done, step = advance(steps, row)
        if done:
            return step
        rows = _read(step, conn)
    return _answer(steps, rows)  # the connection back in the pool while the answer is written


def rest(db: Database, steps: Steps, step: RowsRead) -> Response:
    """The route from its read of rows on (a connection of the sync pool) to its answer. The rows are
    read without the pool's check of the connection, as the state statement does in `run` (a round
    trip less per answer made); the reads of a route are safe to repeat on a checked one."""
    return _answer(steps, db.read(lambda conn: _read(step, conn)))


def _answer(steps: Steps, rows: Any) -> Response:
    done, answer = advance(steps, rows)
    if not done:
        raise TypeError(f"a route read rows twice: {answer!r}")
    return answer


def _read(step: Any, conn: psycopg.Connection) -> Any:
    if not isinstance(step, RowsRead):
        raise TypeError(f"a route's read after its state must be RowsRead, not {step!r}")
    return step.read(conn)
