"""
The slot schedule (`_strategies/slots.py`) against a reference model, with hypothesis: over
ANY window of `per` seconds (not just aligned ones) at most `rate + burst` slots are used,
whatever the order of asks, give-backs, pauses and server quotas; slots are FIFO; a refusal
happens exactly when the earliest slot is too late; a pause and a spent quota are obeyed.
"""

from __future__ import annotations

import bisect

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from fastapi_retry_http._strategies.slots import EPSILON, Schedule

RATES = st.sampled_from([(1, 1.0), (5, 1.0), (10, 2.0), (100, 60.0), (3, 0.5)])


def most_in_any_window(slots: list[float], per: float) -> int:
    """The largest number of slots in a half-open window [t, t + per), over every t."""
    ordered = sorted(slots)
    # A window holding the most can start at a slot.
    return max((bisect.bisect_left(ordered, s + per - EPSILON) - i for i, s in enumerate(ordered)), default=0)


@settings(max_examples=300, deadline=None)
@given(
    rate_per=RATES,
    burst=st.integers(0, 4),
    asks=st.lists(st.tuples(st.floats(0, 3), st.floats(0, 5)), min_size=1, max_size=60),
)
def test_no_window_holds_more_than_rate_plus_burst_and_slots_are_fifo(
    rate_per: tuple[int, float], burst: int, asks: list[tuple[float, float]]
) -> None:
    rate, per = rate_per
    schedule, now, used = Schedule(per / rate, burst), 0.0, list[float]()
    for step, patience in asks:
        now += step * per / rate
        earliest = schedule.earliest(now)
        slot = schedule.take(now, now + patience)
        assert (slot is None) == (earliest > now + patience + EPSILON)
        if slot is not None:
            assert slot == earliest
            assert slot >= now
            assert not used or slot >= used[-1]  # FIFO: never ahead of an earlier ask
            used.append(slot)
    assert most_in_any_window(used, per) <= rate + burst


class ScheduleMachine(RuleBasedStateMachine):
    """Asks, give-backs, pauses and server quotas in any order; the bound always holds."""

    def __init__(self) -> None:
        super().__init__()
        self.rate, self.per, self.burst = 4, 1.0, 1
        self.schedule = Schedule(self.per / self.rate, self.burst)
        self.now = 0.0
        self.used: list[float] = []
        self.paused: list[tuple[float, float]] = []  # (from, until)
        self.quota: tuple[float, float, int] | None = None  # (set at, reset at, left)
        self.after_quota: list[float] = []

    @rule(dt=st.floats(0, 2))
    def advance(self, dt: float) -> None:
        self.now += dt

    @rule(patience=st.floats(0, 10))
    def take(self, patience: float) -> None:
        slot = self.schedule.take(self.now, self.now + patience)
        if slot is None:
            assert self.schedule.earliest(self.now) > self.now + patience
            return
        assert slot >= self.now
        for start, until in self.paused:
            assert not start <= slot < until - EPSILON, "a slot inside a pause"
        self.used.append(slot)
        if self.quota is not None and slot < self.quota[1]:
            self.after_quota.append(slot)

    @precondition(lambda self: any(s > self.now for s in self.used))
    @rule(data=st.data())
    def give_back(self, data: st.DataObject) -> None:
        ahead = [s for s in self.used if s > self.now]
        slot = data.draw(st.sampled_from(ahead))
        self.used.remove(slot)
        if slot in self.after_quota:
            self.after_quota.remove(slot)
        self.schedule.give_back(slot, self.now)

    @rule(seconds=st.floats(0.1, 3))
    def pause(self, seconds: float) -> None:
        self.schedule.pause(self.now + seconds)
        self.paused.append((self.now, self.now + seconds))
        # A waiter holding a slot inside the pause takes a new one (the gate's `valid`).
        for slot in [s for s in self.used if s > self.now and not self.schedule.valid(s)]:
            self.give_back_and_retake(slot)

    @rule(left=st.integers(0, 5), seconds=st.floats(0.5, 5))
    def server_quota(self, left: int, seconds: float) -> None:
        reset = self.now + seconds
        self.schedule.quota(left, reset)
        if self.quota is None or reset > self.quota[1] + 0.5:
            self.quota, self.after_quota = (self.now, reset, left), []

    def give_back_and_retake(self, slot: float) -> None:
        self.used.remove(slot)
        self.schedule.give_back(slot, self.now)
        new = self.schedule.take(self.now, float("inf"))
        assert new is not None
        assert self.schedule.valid(new)
        self.used.append(new)

    @invariant()
    def never_more_than_rate_plus_burst_in_any_window(self) -> None:
        assert most_in_any_window(self.used, self.per) <= self.rate + self.burst

    @invariant()
    def a_spent_quota_holds_until_its_reset(self) -> None:
        if self.quota is not None:
            # At most `left` of the slots taken after it fall before the reset (same-window updates only lower it).
            assert len(self.after_quota) <= self.quota[2]


TestSchedule = ScheduleMachine.TestCase
TestSchedule.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
