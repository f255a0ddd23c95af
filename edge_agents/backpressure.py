"""Backpressure: slow the sources while the queue is deep, with hysteresis and a dwell time.

Two thresholds (high > low) give hysteresis; a switch also needs its condition to hold for
`delay_s` without interruption, so a queue that hovers around a threshold does not make the sources
flap. Pure: the caller passes the clock, which is what the unit tests drive.
"""

from __future__ import annotations


class Backpressure:
    def __init__(self, high: int, low: int, delay_s: float) -> None:
        if low >= high:
            raise ValueError(f"low ({low}) must be below high ({high})")
        self.high = high
        self.low = low
        self.delay_s = delay_s
        self.slow = False
        self._since: float | None = None

    def update(self, depth: int, now: float) -> bool | None:
        """Feed the current depth; returns the new state (True = slow) when it switches, else None."""
        wants_switch = depth < self.low if self.slow else depth > self.high
        if not wants_switch:
            self._since = None
            return None
        if self._since is None:
            self._since = now
        if now - self._since < self.delay_s:
            return None
        self.slow = not self.slow
        self._since = None
        return self.slow
