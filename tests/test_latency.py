"""
Learned hedging (`hedge_after="p95"`): the percentile is checked at construction, learned from
a windowed histogram of successes and timeouts, read every few seconds, never used before 20
samples, and every hedge sent on time is paid from a hedge budget. End to end against a real
loopback server that counts requests.
"""

from __future__ import annotations

import asyncio
import math
import time

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fastapi_retry_http import Client, RetryPolicy, clients_lifespan
from fastapi_retry_http._pipeline.attempts import Call, Outcome
from fastapi_retry_http._pipeline.strategy import Refusal
from fastapi_retry_http._strategies.latency import (
    BUDGET_BURST,
    FIXED_SHARE,
    MIN_DELAY,
    REFRESH,
    HedgeBudget,
    HedgePacer,
    LatencyStrategy,
)
from fastapi_retry_http._strategies.latency_window import FRESH, MIN_SAMPLES, WINDOW, LatencyWindow
from fastapi_retry_http.exceptions import AttemptTimeout, ConfigurationError
from tests.servers import RawServer, response_bytes

pytestmark = pytest.mark.anyio


class TestThePercentileIsChecked:
    @pytest.mark.parametrize(("value", "percentile"), [("p50", 50.0), ("p95", 95.0), ("p97.5", 97.5), ("p99.9", 99.9)])
    def test_percentiles_from_p50_to_p99_9(self, value: str, percentile: float) -> None:
        policy = RetryPolicy(hedge_after=value)
        assert (policy.hedge_after, policy.hedge_percentile) == (value, percentile)

    @pytest.mark.parametrize("value", ["p0", "p100", "fast", "p49", "p99.95", "P95", "p", "", "p95 ", "pinf", "nan"])
    def test_anything_else_fails_at_construction(self, value: str) -> None:
        with pytest.raises(ValueError, match=r"RetryPolicy.hedge_after must be .*'p50' to 'p99.9'"):
            RetryPolicy(hedge_after=value)

    def test_seconds_in_a_string_are_seconds(self) -> None:
        policy = RetryPolicy(hedge_after="0.05")
        assert (policy.hedge_after, policy.hedge_percentile) == (0.05, None)

    @pytest.mark.parametrize("value", ["p0", "p100", "fast"])
    def test_bad_settings_fail_at_startup_naming_the_client_and_the_field(self, value: str) -> None:
        config = {"base_url": "http://x.internal/", "retry": {"hedge_after": value}}
        with pytest.raises(ConfigurationError, match=r"'billing'.*retry.*hedge_after") as caught:
            clients_lifespan({"billing": config})
        assert value not in str(caught.value).replace("'p50' to 'p99.9'", "")

    def test_from_the_environment(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from fastapi_retry_http import HttpClientsSettings

        monkeypatch.setenv("HTTP_CLIENTS__BILLING__BASE_URL", "http://x.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__BILLING__RETRY__HEDGE_AFTER", "p95")
        monkeypatch.setenv("HTTP_CLIENTS__STOCK__BASE_URL", "http://y.internal/")
        monkeypatch.setenv("HTTP_CLIENTS__STOCK__RETRY__HEDGE_AFTER", "0.05")
        configured = HttpClientsSettings().http_clients
        assert configured["billing"].retry.hedge_after == "p95"
        assert configured["stock"].retry.hedge_after == 0.05


def exact(samples: list[float], percentile: float) -> float:
    ordered = sorted(samples)
    return ordered[math.ceil(len(ordered) * percentile / 100) - 1]


class TestLatencyWindow:
    def test_nothing_before_min_samples(self) -> None:
        window = LatencyWindow()
        for _ in range(MIN_SAMPLES - 1):
            window.add(0.01, now=0.0)
        assert window.percentile(95, now=0.0) is None
        window.add(0.01, now=0.0)
        assert window.percentile(95, now=0.0) == pytest.approx(0.01, rel=0.04)

    @pytest.mark.parametrize("percentile", [50, 90, 95, 99, 99.9])
    def test_within_the_bucket_resolution_of_the_exact_percentile(self, percentile: float) -> None:
        samples = [0.0002 * 1.013**i for i in range(1000)]  # 0.2 ms to 85 ms
        window = LatencyWindow()
        for sample in samples:
            window.add(sample, now=1.0)
        estimate = window.percentile(percentile, now=1.0)
        assert estimate is not None
        # Never below (a delay read from the histogram errs towards fewer hedges), at most 4% above.
        assert exact(samples, percentile) <= estimate <= exact(samples, percentile) * 1.04 + 1e-12

    @settings(max_examples=200, deadline=None)
    @given(
        st.lists(st.floats(0, 600), min_size=MIN_SAMPLES, max_size=400),
        st.floats(1, 100),
        st.lists(st.integers(0, 400), max_size=4),
    )
    def test_any_durations_batched_any_way_read_never_below_and_within_a_bucket(
        self, samples: list[float], percentile: float, reads: list[int]
    ) -> None:
        window = LatencyWindow()
        for index, sample in enumerate(samples):
            window.add(sample, now=1.0)
            if index in reads:
                window.percentile(50, now=1.0)  # a reading puts what came so far into its buckets
        estimate = window.percentile(percentile, now=1.0)
        assert estimate is not None
        assert window.count == len(samples)
        assert exact(samples, percentile) <= estimate * (1 + 1e-12)
        assert estimate <= max(exact(samples, percentile), 1e-4) * 1.04 * (1 + 1e-12)

    def test_durations_wait_in_a_bounded_batch(self) -> None:
        window = LatencyWindow()
        for index in range(3 * FRESH):
            window.add(0.001 * (1 + index % 7), now=1.0)
        assert len(window.fresh) < FRESH  # never more waiting than that, however many come between reads
        assert window.count == 3 * FRESH
        assert window.percentile(50, now=1.0) == pytest.approx(0.004, rel=0.04)

    def test_extremes_land_in_the_first_and_last_buckets(self) -> None:
        window = LatencyWindow()
        for _ in range(MIN_SAMPLES):
            window.add(0.0, now=0.0)
        assert window.percentile(50, now=0.0) == pytest.approx(1e-4)
        for _ in range(10 * MIN_SAMPLES):
            window.add(1e9, now=0.0)
        assert window.percentile(99, now=0.0) == pytest.approx(1e-4 * 1.04**399)

    def test_old_samples_leave_the_window(self) -> None:
        window = LatencyWindow()
        for _ in range(100):
            window.add(1.0, now=0.0)
        for _ in range(100):
            window.add(0.01, now=WINDOW / 2)
        assert window.percentile(60, now=WINDOW / 2) == pytest.approx(1.0, rel=0.04)
        assert window.percentile(60, now=WINDOW + 1) == pytest.approx(0.01, rel=0.04)  # the 1 s ones rolled out
        assert window.count == 100
        assert window.percentile(50, now=10 * WINDOW) is None  # a quiet spell empties it
        assert window.count == 0


def call(policy: RetryPolicy | None = None) -> Call:
    return Call(httpx.Request("GET", "http://x.internal/"), policy or RetryPolicy(hedge_after="p95"), "x", None, True)


def answered(status: int, duration: float) -> Outcome:
    outcome = Outcome(response=httpx.Response(status), duration=duration)
    return outcome


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class TestWhatIsLearned:
    def strategy(self) -> tuple[LatencyStrategy, FakeClock]:
        clock = FakeClock()
        return LatencyStrategy(clock), clock

    @pytest.mark.parametrize(
        ("outcome", "learned"),
        [
            (answered(200, 0.5), True),
            (answered(404, 0.5), True),  # an answer, if not a happy one
            (answered(503, 0.5), False),  # a fast failure would pull the delay down
            (answered(500, 0.5), False),
            (answered(429, 0.5), False),
            (Outcome(error=AttemptTimeout("slow"), duration=0.5), True),
            (Outcome(error=httpx.ReadTimeout("slow"), duration=0.5), True),
            (Outcome(error=httpx.PoolTimeout("local"), duration=0.5), False),
            (Outcome(error=httpx.ConnectError("refused"), duration=0.5), False),
            (Outcome(refusal=Refusal("budget"), duration=0.5), False),
            (Outcome(cancelled=True, duration=0.5), False),  # no delay in force yet: unknown
        ],
    )
    def test_successes_and_timeouts_only(self, outcome: Outcome, learned: bool) -> None:
        strategy, _ = self.strategy()
        strategy.admit(call())  # admits everything; nothing to hold
        strategy.record(call(), outcome)
        assert strategy.window.count == int(learned)

    def test_an_attempt_cut_off_past_the_delay_is_in_the_tail(self) -> None:
        strategy, _ = self.strategy()
        for _ in range(MIN_SAMPLES):
            strategy.record(call(), answered(200, 0.01))
        delay = strategy.delay("p95")
        assert delay == pytest.approx(0.01, rel=0.04)
        strategy.record(call(), Outcome(cancelled=True, duration=0.005))  # cut before the delay: unknown
        assert strategy.window.count == MIN_SAMPLES
        strategy.record(call(), Outcome(cancelled=True, duration=0.5))  # a slow original that lost
        assert strategy.window.count == MIN_SAMPLES + 1

    def test_the_delay_is_read_every_refresh_not_per_call(self) -> None:
        strategy, clock = self.strategy()
        assert strategy.delay("p95") is None  # learning
        for _ in range(MIN_SAMPLES):
            strategy.record(call(), answered(200, 0.01))
        assert strategy.delay("p95") == pytest.approx(0.01, rel=0.04)  # at once, at 20 samples
        for _ in range(10 * MIN_SAMPLES):
            strategy.record(call(), answered(200, 0.2))
        clock.now += REFRESH / 2
        assert strategy.delay("p95") == pytest.approx(0.01, rel=0.04)  # held until the refresh
        clock.now += REFRESH / 2
        assert strategy.delay("p95") == pytest.approx(0.2, rel=0.04)
        assert strategy.status() == {"samples": 11 * MIN_SAMPLES, "delays": {"p95": strategy.delay("p95")}}

    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.tuples(st.floats(0, 2), st.floats(0, 12), st.booleans()), max_size=120))
    def test_recording_keeps_the_window_its_own_add_would(self, steps: list[tuple[float, float, bool]]) -> None:
        # Steps of (duration, seconds passed, whether the delay is read then), against a
        # window fed by its own `add` and read at the same times: the strategy appends on its
        # own between the times a slot ends or a reading is due, and must miss neither.
        strategy, clock = self.strategy()
        reference = LatencyWindow()
        for duration, passed, read in steps:
            clock.now += passed
            strategy.record(call(), answered(200, duration), clock.now)
            reference.add(duration, clock.now)
            if read:
                strategy.delay("p95")
                reference.percentile(95, clock.now)
            assert strategy.window.count == reference.count
        for percentile in (50, 95, 99):
            assert strategy.window.percentile(percentile, clock.now) == reference.percentile(percentile, clock.now)

    def test_a_delay_is_read_at_once_at_its_twentieth_sample_again_after_a_quiet_spell(self) -> None:
        strategy, clock = self.strategy()
        assert strategy.delay("p95") is None
        for _ in range(MIN_SAMPLES):
            strategy.record(call(), answered(200, 0.01), clock.now)
        assert strategy.status()["delays"] == {"p95": pytest.approx(0.01, rel=0.04)}  # read as recorded
        clock.now += 10 * WINDOW  # nothing for a while: the window empties, the delay is unknown again
        for _ in range(MIN_SAMPLES - 1):
            strategy.record(call(), answered(200, 0.2), clock.now)
        assert strategy.status() == {"samples": MIN_SAMPLES - 1, "delays": {"p95": None}}
        strategy.record(call(), answered(200, 0.2), clock.now)
        assert strategy.status()["delays"] == {"p95": pytest.approx(0.2, rel=0.04)}  # not in 3 s: at once

    def test_a_percentile_first_asked_before_its_twentieth_sample_is_read_at_it(self) -> None:
        strategy, clock = self.strategy()
        for _ in range(5):  # recorded before any percentile was asked for
            strategy.record(call(), answered(200, 0.01), clock.now)
        assert strategy.delay("p95") is None
        for _ in range(MIN_SAMPLES - 5):
            strategy.record(call(), answered(200, 0.01), clock.now)
        assert strategy.status()["delays"] == {"p95": pytest.approx(0.01, rel=0.04)}

    def test_recorded_durations_wait_in_a_bounded_batch(self) -> None:
        strategy, clock = self.strategy()
        strategy.delay("p95")
        for _ in range(2 * FRESH):
            strategy.record(call(), answered(200, 0.01), clock.now)
        assert len(strategy.window.fresh) < FRESH  # however many come between two readings
        assert strategy.window.count == 2 * FRESH

    def test_a_delay_never_goes_below_the_floor(self) -> None:
        strategy, _ = self.strategy()
        for _ in range(MIN_SAMPLES):
            strategy.record(call(), answered(200, 0.0))
        assert strategy.delay("p50") == MIN_DELAY


class TestPacer:
    def test_each_hedge_after_has_its_budget_sized_by_its_share(self) -> None:
        learned: list[LatencyStrategy] = []
        pacer = HedgePacer(FakeClock(), learned.append)
        hedges: dict[float | str, int] = {"p95": 0, "p99": 0, 0.05: 0}
        for _ in range(100):
            for hedge_after in hedges:
                budget = pacer.pace(hedge_after)
                budget.deposit()  # a hedged call starts
                hedges[hedge_after] += budget.take()  # a hedge wanted for every call
        # The burst it starts with, then its share of the 100 calls (less the first share, the bucket being full).
        for hedge_after, share in (("p95", 0.06), ("p99", 0.012), (0.05, FIXED_SHARE)):
            assert hedges[hedge_after] == int(BUDGET_BURST + share * 99 + 1e-9)
        budgets = pacer.status()["budgets"]
        assert isinstance(budgets, dict)
        assert {key: budget["refused"] for key, budget in budgets.items()} == {
            str(key): 100 - count for key, count in hedges.items()
        }
        assert len(learned) == 1  # one estimate for every percentile
        assert pacer.pace(0.05).delay == 0.05

    def test_a_fixed_delay_learns_nothing(self) -> None:
        pacer = HedgePacer(FakeClock(), lambda latency: None)
        pacer.pace(0.05)
        assert pacer.latency is None
        assert "samples" not in pacer.status()


class BudgetMachine(RuleBasedStateMachine):
    """The hedge budget against a model: hedges never exceed the burst plus the share of the calls so far."""

    def __init__(self) -> None:
        super().__init__()
        self.share = 0.06
        self.budget = HedgeBudget(self.share)
        self.model = BUDGET_BURST  # tokens, kept apart from the budget's own count: it starts full
        self.calls = 0
        self.hedges = 0
        self.refused = 0

    @rule(n=st.integers(1, 60))
    def calls_start(self, n: int) -> None:
        for _ in range(n):
            self.budget.deposit()
            self.model = min(BUDGET_BURST, self.model + self.share)
            self.calls += 1

    @rule(n=st.integers(1, 5))
    def hedges_are_due(self, n: int) -> None:
        for _ in range(n):
            allowed = self.model >= 1
            assert self.budget.withdraw() == allowed
            if allowed:
                self.model -= 1
                self.hedges += 1
            else:
                self.refused += 1

    @invariant()
    def never_more_than_the_share_of_calls(self) -> None:
        assert self.hedges <= BUDGET_BURST + self.share * self.calls + 1e-9
        assert self.budget.tokens == pytest.approx(self.model)
        assert 0 <= self.budget.tokens <= BUDGET_BURST
        assert self.budget.refused == self.refused


TestHedgeBudget = BudgetMachine.TestCase
TestHedgeBudget.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)


Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


class SlowOnce:
    """Every request answers at once, except the first to `/slow`, which takes `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.server = RawServer(self.handle)
        self.slow = 0

    async def handle(self, reader: Reader, writer: Writer, n: int) -> None:
        if b"/slow" in self.server.heads[n - 1].split(b"\r\n", 1)[0]:
            self.slow += 1
            if self.slow == 1:
                await asyncio.sleep(self.seconds)
        writer.write(response_bytes(200, f"answer {n}".encode()))
        await writer.drain()


async def warm(client: Client, calls: int = 2 * MIN_SAMPLES) -> None:
    for _ in range(calls):
        assert (await client.get("/fast")).status_code == 200


class TestHedgingAtALearnedPercentile:
    async def test_a_slow_call_is_hedged_at_the_learned_delay(self) -> None:
        upstream = SlowOnce(5.0)
        async with upstream.server as server, Client(server.url, retry=RetryPolicy(hedge_after="p95")) as c:
            await warm(c)
            latency = c.transport.hedging.latency
            assert latency is not None
            started = time.monotonic()
            response = await c.get("/slow")
            elapsed = time.monotonic() - started
        assert response.status_code == 200
        # One hedge at the learned delay (a second one too, when the first hedge is slower than
        # the delay on a busy machine: `attempts` caps them).
        assert 2 <= upstream.slow <= 3
        assert elapsed < 2  # the first attempt would have taken 5 s
        assert latency.window.count >= MIN_SAMPLES
        delay = latency.delay("p95")
        assert delay is not None
        assert delay < 1
        assert c.transport.strategies.by_option["hedging"] is c.transport.hedging

    async def test_no_hedge_on_time_before_twenty_samples(self) -> None:
        upstream = SlowOnce(0.3)
        async with upstream.server as server, Client(server.url, retry=RetryPolicy(hedge_after="p95")) as c:
            await warm(c, MIN_SAMPLES - 2)
            started = time.monotonic()
            response = await c.get("/slow")
        assert (response.status_code, upstream.slow) == (200, 1)
        assert time.monotonic() - started >= 0.3

    @pytest.mark.parametrize("hedge_after", ["p95", 0.05])
    async def test_a_spent_hedge_budget_sends_no_hedge(self, hedge_after: float | str) -> None:
        upstream = SlowOnce(0.3)
        async with upstream.server as server, Client(server.url, retry=RetryPolicy(hedge_after=hedge_after)) as c:
            await warm(c)
            drain = c.transport.hedging.pace(hedge_after)  # as a burst of hedged calls would
            while drain.take():
                pass
            # A drain can leave a fraction (a warm-up call hedged on a busy machine spent a whole
            # token); with the next call's share it would fund a hedge: spent means none left.
            drain.tokens = 0.0
            sent = server.requests
            response = await c.get("/slow")
            budgets = c.transport.hedging.status()["budgets"]
        assert (response.status_code, upstream.slow, server.requests) == (200, 1, sent + 1)
        assert isinstance(budgets, dict)
        assert budgets[str(hedge_after)]["refused"] >= 2  # the drain's last try, and the slow call's hedge

    async def test_a_percentile_on_one_request_builds_the_estimate_then(self) -> None:
        upstream = SlowOnce(0.0)
        async with upstream.server as server, Client(server.url, retry=RetryPolicy(hedge_after=0.5)) as c:
            await c.get("/fast")
            assert c.transport.hedging.latency is None  # a fixed delay learns nothing
            assert c.transport.strategies.by_option["hedging"] is c.transport.hedging  # but has a budget
            await c.get("/fast", retry=RetryPolicy(hedge_after="p99"))
            await c.get("/fast")
            assert c.transport.hedging.latency is not None
            assert c.transport.hedging.latency.window.count == 2  # told of every attempt from then on

    def test_a_client_that_never_hedges_shows_no_hedging(self) -> None:
        assert "hedging" not in Client("http://x.internal").transport.strategies.by_option
