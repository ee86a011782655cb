"""
Chaos in the pipeline: what is injected, how often, and that every other stage sees it as
real. Against the loopback upstream that counts requests (nothing is sent for an injected
fault or status), or a MockTransport for the 10,000-attempt tallies. No test sleeps for real:
injected latency runs on the recorded no-sleep waits, or on a sleep that never returns, cut by
the attempt's own watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from fastapi_retry_http import AttemptEvent, CircuitBreaker, Client, RetryBudget, RetryPolicy, RetryTransport
from fastapi_retry_http._strategies.chaos import ChaosInterceptor, Deck
from fastapi_retry_http.chaos import INJECTED_EXTENSION, Chaos
from fastapi_retry_http.exceptions import (
    AttemptTimeout,
    CircuitOpenError,
    ClientClosedError,
    DeadlineExceeded,
    InjectedFault,
)
from tests.servers import Upstream
from tests.test_transport import Scripted

pytestmark = pytest.mark.anyio

ONCE = RetryPolicy(attempts=1)


class Recorder:
    def __init__(self) -> None:
        self.events: list[AttemptEvent] = []

    def on_attempt(self, event: AttemptEvent) -> None:
        self.events.append(event)


def chaos_of(client: Client) -> ChaosInterceptor:
    strategy = client.transport.strategies.by_option["chaos"]
    assert isinstance(strategy, ChaosInterceptor)
    return strategy


class TestConfiguration:
    @pytest.mark.parametrize(
        ("arguments", "field"),
        [
            ({"fault_rate": -0.1}, "fault_rate"),
            ({"fault_rate": 1.5}, "fault_rate"),
            ({"fault_rate": float("nan")}, "fault_rate"),
            ({"status_rate": 2}, "status_rate"),
            ({"fault_rate": 0.6, "status_rate": 0.5}, "status_rate plus fault_rate"),
            ({"status": 302}, "status"),
            ({"status": 600}, "status"),
            ({"status": True}, "status"),
            ({"latency_rate": -1}, "latency_rate"),
            ({"latency": -0.5}, "latency"),
            ({"latency": float("inf")}, "latency"),
            ({"seed": 1.5}, "seed"),
        ],
    )
    def test_bad_input_names_the_field(self, arguments: dict[str, object], field: str) -> None:
        with pytest.raises(ValueError, match=rf"^Chaos\.{field} "):
            Chaos(**arguments)  # type: ignore[arg-type]

    def test_the_edges_are_accepted(self) -> None:
        Chaos(fault_rate=1.0)
        Chaos(fault_rate=0.25, status_rate=0.75, status=400, latency_rate=1.0, latency=0.0, seed=0)
        Chaos(status=599)

    def test_off_builds_nothing_and_an_attempt_asks_no_interceptor(self) -> None:
        off = Client("http://upstream")
        on = Client("http://upstream", chaos=Chaos(fault_rate=0.5))
        assert "chaos" not in off.transport.strategies.by_option
        assert off.transport.strategies.send == []
        assert not off.transport._sender.interceptors
        assert on.transport._sender.interceptors == (chaos_of(on),)

    async def test_status_is_json_and_counts_what_was_injected(self) -> None:
        chaos = Chaos(fault_rate=0.2, status_rate=0.3, status=500, latency_rate=0.1, latency=0.5, seed=3)
        handler = Scripted(200)
        async with Client("http://upstream", transport=httpx.MockTransport(handler), retry=ONCE, chaos=chaos) as c:
            for _ in range(200):
                with contextlib.suppress(InjectedFault):
                    await c.get("/x")
            status = chaos_of(c).status()
        assert json.loads(json.dumps(status)) == status
        assert status["injected"] == {"attempts": 200, "fault": 40, "status": 60, "latency": 20}
        assert (status["fault_rate"], status["status"], status["latency"]) == (0.2, 500, 0.5)
        assert handler.attempts == 100  # neither a fault nor a status


class TestRates:
    @pytest.mark.parametrize("rate", [0.01, 0.3, 0.75])
    async def test_over_10000_attempts_each_share_is_within_one_point(self, rate: float) -> None:
        """Through a whole client: faults raised, statuses returned, the rest sent upstream."""
        status_rate = round((1 - rate) / 3, 4)
        chaos = Chaos(fault_rate=rate, status_rate=status_rate, status=502, seed=None)
        handler = Scripted(200)
        seen: Counter[str] = Counter()
        async with Client("http://upstream", transport=httpx.MockTransport(handler), retry=ONCE, chaos=chaos) as c:
            for _ in range(10_000):
                try:
                    seen[str((await c.get("/x")).status_code)] += 1
                except InjectedFault:
                    seen["fault"] += 1
        assert abs(seen["fault"] / 10_000 - rate) <= 0.01
        assert abs(seen["502"] / 10_000 - status_rate) <= 0.01
        assert seen["200"] == handler.attempts == 10_000 - seen["fault"] - seen["502"]

    @settings(max_examples=150, deadline=None)
    @given(
        st.floats(0, 1),
        st.floats(0, 1),
        st.integers(0, 2**64),
        st.integers(1, 3_000),
    )
    def test_any_seed_and_rates_stay_within_two_hits_of_exact_at_every_full_deck(
        self, first: float, second: float, seed: int, draws: int
    ) -> None:
        second = min(second, 1 - first)
        deck = Deck((first, second), random.Random(seed))
        hits = Counter(deck.draw() for _ in range(draws))
        full = draws - draws % 100
        for index, rate in enumerate((first, second)):
            # Within a deck the hits sit anywhere; they are exact (within the carried
            # fractions) at each deck's end.
            assert hits[index] <= rate * draws + 2 + rate * 100
            assert hits[index] >= rate * full - 2
        assert sum(hits.values()) == draws

    @pytest.mark.parametrize("rates", [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)])
    def test_a_deck_of_one_kind_is_dealt_without_a_shuffle(self, rates: tuple[float, float]) -> None:
        generator = random.Random(3)
        state = generator.getstate()
        deck = Deck(rates, generator)
        card = rates.index(1.0) if 1.0 in rates else -1
        assert [deck.draw() for _ in range(250)] == [card] * 250
        assert generator.getstate() == state  # nothing drawn from the generator for it

    def test_the_same_seed_gives_the_same_sequence_and_another_seed_another(self) -> None:
        def sequence(seed: int) -> list[int]:
            deck = Deck((0.3, 0.2), random.Random(seed))
            return [deck.draw() for _ in range(500)]

        assert sequence(7) == sequence(7)
        assert sequence(7) != sequence(8)

    async def test_two_clients_with_one_seed_inject_into_the_same_attempts(self) -> None:
        async def outcomes() -> list[str]:
            chaos = Chaos(fault_rate=0.3, status_rate=0.2, latency_rate=0.3, latency=0.01, seed=42)
            transport = httpx.MockTransport(Scripted(200))
            found: list[str] = []
            async with Client("http://upstream", transport=transport, retry=ONCE, chaos=chaos) as c:
                for _ in range(300):
                    try:
                        response = await c.get("/x")
                    except InjectedFault:
                        found.append("fault")
                    else:
                        marks = response.request.extensions.get(INJECTED_EXTENSION, {})
                        found.append(f"{response.status_code} {marks.get(1)}")
            return found

        first = await outcomes()
        assert first == await outcomes()
        assert set(first) == {"fault", "503 status", "200 latency", "200 None"}

    def test_rates_summing_to_one_never_overfill_a_deck(self) -> None:
        deck = Deck((0.505, 0.495), random.Random(1))
        hits = Counter(deck.draw() for _ in range(10_000))
        assert (hits[0], hits[1], hits[-1]) == (5050, 4949, 1)  # the second lags a hit every other deck


class TestSeenAsReal:
    """Nothing sent for an injected fault or status; retries, breaker, budget and events see them."""

    @pytest.mark.usefixtures("backend", "request_path")
    async def test_an_injected_status_sends_nothing_and_is_retried(self, upstream: Upstream) -> None:
        recorder = Recorder()
        chaos = Chaos(status_rate=1.0, status=503)
        async with Client(upstream.url, chaos=chaos, instrumentation=[recorder]) as c:
            response = await c.get("/x")
        assert upstream.hits["/x"] == 0
        assert response.status_code == 503
        assert response.extensions[INJECTED_EXTENSION] is True
        assert response.request.extensions[INJECTED_EXTENSION] == {1: "status", 2: "status", 3: "status"}
        assert [(e.outcome, e.status_code, e.injected) for e in recorder.events] == [
            ("retry", 503, True),
            ("retry", 503, True),
            ("returned", 503, True),
        ]

    @pytest.mark.usefixtures("backend")
    async def test_an_injected_fault_is_a_connect_error_retried_even_for_post(self, upstream: Upstream) -> None:
        recorder = Recorder()
        # Seeded so the first two attempts fault and the third goes through (found by trying).
        chaos = Chaos(fault_rate=0.5, seed=7)
        async with Client(upstream.url, name="billing", chaos=chaos, instrumentation=[recorder]) as c:
            response = await c.post("/pay", json={"amount": 1})
        assert response.status_code == 200
        assert upstream.hits["/pay"] == 1
        assert [(e.outcome, e.error, e.injected) for e in recorder.events] == [
            ("retry", "InjectedFault", True),
            ("retry", "InjectedFault", True),
            ("success", None, False),
        ]

    async def test_an_injected_fault_names_the_client_and_is_an_httpx_error(self) -> None:
        async with Client("http://upstream", name="billing", retry=ONCE, chaos=Chaos(fault_rate=1.0)) as c:
            with pytest.raises(InjectedFault) as caught:
                await c.get("/x")
        error = caught.value
        assert isinstance(error, httpx.ConnectError)
        assert (error.client, error.retry_after) == ("billing", 0.0)
        assert "billing" in str(error)
        assert "nothing was sent" in str(error)

    async def test_the_breaker_opens_on_injected_failures(self) -> None:
        handler = Scripted(200)
        breaker = CircuitBreaker(failure_ratio=0.5, minimum_throughput=4)
        chaos = Chaos(status_rate=1.0, status=503)
        transport = httpx.MockTransport(handler)
        async with Client(
            "http://upstream", transport=transport, retry=ONCE, circuit_breaker=breaker, chaos=chaos
        ) as c:
            for _ in range(4):
                assert (await c.get("/x")).status_code == 503
            with pytest.raises(CircuitOpenError):
                await c.get("/x")
            assert c.circuit is not None
            assert c.circuit.state == "open"
            assert chaos_of(c).counts["attempts"] == 4  # the refused attempt never reached chaos
        assert handler.attempts == 0

    async def test_the_retry_budget_is_spent_by_injected_failures(self) -> None:
        recorder = Recorder()
        budget = RetryBudget(ratio=0.0, min_retries=2)
        chaos = Chaos(fault_rate=1.0)
        async with Client("http://upstream", retry_budget=budget, chaos=chaos, instrumentation=[recorder]) as c:
            for _ in range(2):
                with pytest.raises(InjectedFault):
                    await c.get("/x")
        assert [(e.outcome, e.reason) for e in recorder.events] == [
            ("retry", None),
            ("retry", None),
            ("returned", "attempts"),
            ("returned", "budget"),  # the two retries of the floor are spent
        ]

    async def test_hedges_are_marked_by_their_own_attempt(self) -> None:
        recorder = Recorder()
        sent: list[str] = []

        async def first_hangs(request: httpx.Request) -> httpx.Response:
            sent.append(request.url.path)
            if sent.count(request.url.path) == 1:
                await asyncio.Event().wait()  # cancelled when a hedge wins
            return httpx.Response(200)

        chaos = Chaos(status_rate=0.5, status=500, seed=5)  # a 500 is not retried: it wins the race
        policy = RetryPolicy(hedge_after=0.001, attempts=3)
        transport = httpx.MockTransport(first_hangs)
        async with Client(
            "http://upstream", transport=transport, retry=policy, chaos=chaos, instrumentation=[recorder]
        ) as c:
            injected = 0
            for number in range(20):
                response = await c.get(f"/{number}")
                marks = response.request.extensions.get(INJECTED_EXTENSION, {})
                injected += len(marks)
                for event in recorder.events:
                    assert event.injected == (event.attempt in marks and event.outcome != "hedge_lost")
                recorder.events.clear()
        assert injected > 5
        assert any(sent.count(path) == 2 for path in set(sent))  # some calls hedged for real


class TestLatency:
    async def test_latency_is_waited_on_the_injected_sleep_then_sent(
        self, upstream: Upstream, waits: list[float]
    ) -> None:
        recorder = Recorder()
        chaos = Chaos(latency_rate=1.0, latency=2.5)
        async with Client(upstream.url, retry=ONCE, chaos=chaos, instrumentation=[recorder]) as c:
            started = time.perf_counter()
            response = await c.get("/x")
            took = time.perf_counter() - started
        assert response.status_code == 200
        assert upstream.hits["/x"] == 1
        assert waits == [2.5]
        assert took < 2.0  # never slept for real
        assert response.request.extensions[INJECTED_EXTENSION] == {1: "latency"}
        assert [e.injected for e in recorder.events] == [True]

    async def test_virtual_latency_is_cut_by_the_attempt_timeout(self, upstream: Upstream, waits: list[float]) -> None:
        policy = RetryPolicy(attempts=1, attempt_timeout=0.5)
        async with Client(upstream.url, retry=policy, chaos=Chaos(latency_rate=1.0, latency=3)) as c:
            with pytest.raises(AttemptTimeout, match=r"attempt_timeout \(0.5s\)"):
                await c.get("/x")
        assert waits == [0.5]
        assert upstream.hits["/x"] == 0

    async def test_virtual_latency_is_cut_by_the_deadline(self, upstream: Upstream, waits: list[float]) -> None:
        policy = RetryPolicy(attempts=3, deadline=2.0, attempt_timeout=1.5, wait_initial=0)
        async with Client(upstream.url, retry=policy, chaos=Chaos(latency_rate=1.0, latency=3)) as c:
            with pytest.raises(DeadlineExceeded):
                await c.get("/x")
        # 1.5 s cut by the attempt timeout, a retry at once, then 0.5 s left of the deadline.
        assert waits[0] == 1.5
        assert waits[-1] == pytest.approx(0.5, abs=0.05)
        assert upstream.hits["/x"] == 0

    async def test_the_attempt_watch_cuts_a_sleep_that_never_ends(self, upstream: Upstream) -> None:
        """What a real sleep meets: the attempt's own timer, with no help from chaos."""

        async def forever(seconds: float) -> None:
            await asyncio.Event().wait()

        for policy, error in [
            (RetryPolicy(attempts=1, attempt_timeout=0.05), AttemptTimeout),
            (RetryPolicy(attempts=1, deadline=0.05), DeadlineExceeded),
        ]:
            transport = RetryTransport(
                httpx.AsyncHTTPTransport(), policy, sleep=forever, chaos=Chaos(latency_rate=1.0, latency=60)
            )
            async with httpx.AsyncClient(transport=transport, base_url=upstream.url) as c:
                started = time.perf_counter()
                with pytest.raises(error):
                    await c.get("/x")
                assert time.perf_counter() - started < 2
        assert upstream.hits["/x"] == 0

    async def test_latency_shorter_than_the_timeout_then_a_fault(self, waits: list[float]) -> None:
        policy = RetryPolicy(attempts=1, attempt_timeout=1.0)
        chaos = Chaos(fault_rate=1.0, latency_rate=1.0, latency=0.25)
        async with Client("http://upstream", retry=policy, chaos=chaos) as c:
            with pytest.raises(InjectedFault):
                await c.get("/x")
            assert chaos_of(c).counts == {"attempts": 1, "fault": 1, "status": 0, "latency": 1}
        assert waits == [0.25]

    async def test_closing_the_client_ends_an_injected_latency(self) -> None:
        async def forever(seconds: float) -> None:
            await asyncio.Event().wait()

        transport = RetryTransport(
            httpx.AsyncHTTPTransport(), ONCE, sleep=forever, chaos=Chaos(latency_rate=1, latency=9)
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:9") as c:
            call = asyncio.ensure_future(c.get("/x"))
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            await transport.aclose()
            with pytest.raises(ClientClosedError):
                await call


class TestMarks:
    async def test_a_request_object_sent_again_starts_with_no_marks(self) -> None:
        chaos = Chaos(status_rate=0.5, seed=11)
        transport = RetryTransport(httpx.MockTransport(Scripted(200)), ONCE, chaos=chaos)
        request = httpx.Request("GET", "http://upstream/x")
        seen = []
        for _ in range(30):
            response = await transport.handle_async_request(request)
            seen.append((response.status_code, request.extensions.get(INJECTED_EXTENSION)))
        assert {marks for status, marks in seen if status == 200} == {None}
        assert all(marks == {1: "status"} for status, marks in seen if status == 503)

    async def test_a_stream_gets_the_injected_status(self) -> None:
        chaos = Chaos(status_rate=1, status=429)
        async with Client("http://upstream", retry=ONCE, chaos=chaos) as c, c.stream("GET", "/x") as response:
            assert response.status_code == 429
            assert await response.aread() == b""


class DeckMachine(RuleBasedStateMachine):
    """
    A deck against its reference: after `d` full decks each rate was hit `floor(rate * 100 * d)`
    times, but for one hit a second rate may lag when the two fill the deck; a twin dealt from
    the same seed gives the same cards.
    """

    @initialize(first=st.floats(0, 1), second=st.floats(0, 1), seed=st.integers(0, 2**32))
    def deal(self, first: float, second: float, seed: int) -> None:
        self.rates = (first, min(second, 1 - first))
        self.deck = Deck(self.rates, random.Random(seed))
        self.twin = Deck(self.rates, random.Random(seed))
        self.hits = [0, 0]
        self.draws = 0

    @rule(count=st.integers(1, 250))
    def draw(self, count: int) -> None:
        for _ in range(count):
            card = self.deck.draw()
            assert card == self.twin.draw()
            if card >= 0:
                self.hits[card] += 1
            self.draws += 1
            if self.draws % 100 == 0:
                self.check_a_full_deck()

    def check_a_full_deck(self) -> None:
        decks = self.draws // 100
        for index, rate in enumerate(self.rates):
            owed = math.floor(rate * 100 * decks + 1e-6) - self.hits[index]
            assert 0 <= owed <= (1 if index else 0)

    @invariant()
    def never_more_hits_than_draws(self) -> None:
        if hasattr(self, "hits"):
            assert sum(self.hits) <= self.draws


TestDeckMachine = DeckMachine.TestCase
TestDeckMachine.settings = settings(max_examples=100, stateful_step_count=20, deadline=None)
