"""Load generators for the gateway benchmark (``benchmarks/gateways.py``): an open loop at a
constant arrival rate, and a closed loop at a fixed concurrency, both over one aiohttp session.

What it is for: the open loop sends request ``i`` at ``start + i / rate`` whether or not earlier
ones were answered, and measures every latency from that *scheduled* time, so a server that falls
behind is charged for the queue it causes (the "coordinated omission" of closed-loop tools, which
wait for an answer before sending the next request and so never see that queue). How far the
generator itself fell behind its schedule is recorded per request (``lag``): when that grows, the
generator, not the server, is the bottleneck. The closed loop keeps ``concurrency`` requests in
flight for a fixed time: the most a server sustains. Streaming answers (SSE) are timed to the
first body byte and to the end of the stream (``data: [DONE]``).

Every answer is checked: 200, a body that is a chat completion (or an SSE stream ending in
``[DONE]``), and whatever the caller's ``check`` asks of the headers (a cache hit, say). A failed
request counts at the time it failed (a timeout at its timeout), and by its kind.

What it must never do: send to anything but the URL it is given, send more requests than it is
given bodies, or retry (a retry would hide a failure and double a load).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import aiohttp

from sidecar_latency import percentile_stats

# What a response's headers must say beyond its status: None when they are right, else an error kind.
HeaderCheck = Callable[[Mapping[str, str]], "str | None"]
SSE_END = b"data: [DONE]"


@dataclass(frozen=True)
class Target:
    """Where and how to send: one contender's endpoint, headers, and what its answers must carry."""

    url: str
    headers: Mapping[str, str]
    stream: bool = False
    check: HeaderCheck | None = None


@dataclass(frozen=True)
class Sample:
    """One request. Times in seconds; ``ttfb`` and ``total`` count from the scheduled send time."""

    scheduled: float  # seconds after the run's start
    lag: float  # how late the generator sent it
    ttfb: float  # first body byte (for a failure: when it failed)
    total: float
    error: str | None


@dataclass
class Run:
    """The samples of one run, and what the run cost the client process."""

    samples: list[Sample]
    wall_s: float  # from the first scheduled send to the last answer
    offered_rps: float | None  # None: closed loop
    concurrency: int | None  # None: open loop

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None]

    @property
    def errors(self) -> Counter[str]:
        return Counter(s.error for s in self.samples if s.error is not None)

    @property
    def achieved_rps(self) -> float:
        """Answered requests per second over the run (errors excluded)."""
        return len(self.ok) / self.wall_s if self.wall_s > 0 else 0.0


def completion_error(body: bytes, stream: bool) -> str | None:
    """Whether a 200 answer is what a chat completion call must return: None, or the error kind."""
    if stream:
        return None if body.rstrip().endswith(SSE_END) else "bad_stream_end"
    try:
        parsed = json.loads(body)
    except ValueError:
        return "bad_json"
    if not isinstance(parsed, dict) or not parsed.get("choices") or not isinstance(parsed.get("usage"), dict):
        return "bad_completion"
    return None


async def call(session: aiohttp.ClientSession, target: Target, body: bytes, due: float, started: float) -> Sample:
    """Send one request scheduled for ``due`` (a ``perf_counter`` time) and time it from then."""
    sent = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(target.url, data=body, headers=target.headers) as response:
            chunks: list[bytes] = []
            async for chunk in response.content.iter_any():
                if first is None:
                    first = time.perf_counter()
                chunks.append(chunk)
            done = time.perf_counter()
            if response.status != 200:
                error: str | None = f"http_{response.status}"
            else:
                error = completion_error(b"".join(chunks), target.stream)
                if error is None and target.check is not None:
                    error = target.check(response.headers)
    except asyncio.TimeoutError:
        done, error = time.perf_counter(), "timeout"
    except aiohttp.ClientError as e:
        done, error = time.perf_counter(), type(e).__name__
    return Sample(scheduled=due - started, lag=max(0.0, sent - due), ttfb=(first or done) - due, total=done - due,
                  error=error)


async def open_loop(session: aiohttp.ClientSession, target: Target, bodies: Sequence[bytes], rate: float) -> Run:
    """Send ``bodies[i]`` at ``start + i / rate``, each in its own task, whatever the answers do."""
    if rate <= 0:
        raise ValueError("rate must be positive")
    tasks: list[asyncio.Task[Sample]] = []
    started = time.perf_counter()
    for index, body in enumerate(bodies):
        due = started + index / rate
        ahead = due - time.perf_counter()
        if ahead > 0:
            await asyncio.sleep(ahead)  # the schedule itself: wait for this request's send time
        tasks.append(asyncio.create_task(call(session, target, body, due, started)))
    samples = list(await asyncio.gather(*tasks))
    return Run(samples, time.perf_counter() - started, rate, None)


async def closed_loop(session: aiohttp.ClientSession, target: Target, bodies: Sequence[bytes], concurrency: int,
                      duration_s: float) -> Run:
    """``concurrency`` workers each send their next request when the last is answered, until
    ``duration_s`` has passed or the bodies run out."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    samples: list[Sample] = []
    next_index = itertools.count()
    started = time.perf_counter()
    deadline = started + duration_s

    async def worker() -> None:
        while time.perf_counter() < deadline and (index := next(next_index)) < len(bodies):
            samples.append(await call(session, target, bodies[index], time.perf_counter(), started))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(samples, time.perf_counter() - started, None, concurrency)


@dataclass(frozen=True)
class Summary:
    """A run in numbers: milliseconds, counts, requests per second."""

    requests: int
    errors: dict[str, int]
    error_rate: float
    achieved_rps: float
    latency_ms: dict[str, float]
    ttfb_ms: dict[str, float]
    lag_ms: dict[str, float]


def summarise(run: Run) -> Summary:
    """Latency over every request (failures at the time they failed); error rate; throughput."""
    n = len(run.samples)
    errors = dict(run.errors)
    return Summary(
        requests=n, errors=errors, error_rate=sum(errors.values()) / n if n else 0.0,
        achieved_rps=run.achieved_rps,
        latency_ms=percentile_stats([s.total for s in run.samples]),
        ttfb_ms=percentile_stats([s.ttfb for s in run.samples]),
        lag_ms=percentile_stats([s.lag for s in run.samples]),
    )
