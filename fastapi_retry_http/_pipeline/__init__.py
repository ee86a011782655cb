"""
The resilience pipeline: every attempt of every request passes the same stages.

    deadline → gates (budget; breaker next) → send (attempt timeout, body read) → classify
    → gates record → decide (wait, or stop and why) → event

`pipeline.RetryTransport` runs them; `gates.Gate` and `events.Instrument` are the seams new
features plug into without touching the loop; `store.StateStore` keeps the counters the
gates need (in memory, or shared by a fleet); tenacity drives the waits behind `engine`.
"""
