"""Circuit breakers: stop calling an upstream that keeps failing, and try it again later.

One :class:`Breaker` per guarded thing — a model route, a region, a tool, the L2 cache — held
by a :class:`Breakers` registry keyed by ``(kind, name)``. The state machine::

    closed --(failureThreshold consecutive failures)--> open
    open --(recoveryTimeoutSeconds elapsed)--> half_open
    half_open --(halfOpenSuccesses trial successes)--> closed
    half_open --(any trial failure)--> open

Calls go through a :class:`Permit`: ``breaker.try_acquire()`` returns one, or None when the
breaker refuses the call (open, or half-open with every trial slot taken). A permit must be
settled exactly once — ``success()``, ``failure()`` or ``release()`` (no verdict, e.g. the
caller went away) — and using it as a context manager settles it for you::

    permit = breaker.try_acquire()
    if permit is None:
        raise CircuitOpen(retry_after=breaker.retry_after())   # or take the fallback
    with permit:                      # normal exit: success; an exception: failure;
        response = await call()       # CancelledError: released without a verdict
        if response.status >= 500:
            permit.failure()          # an explicit verdict wins over the exit rule

Half-open lets at most ``halfOpenSuccesses`` trial calls run at once; the slots are returned
when their permits settle. Verdicts from permits issued before the breaker last changed state
are ignored (a slow call started while closed cannot close a breaker that opened since), and
a trial that never settles is reclaimed as a failure after the call timeout, so a leaked
permit cannot wedge a breaker in half-open.

The state is evaluated lazily: open becomes half-open when someone asks (``state``,
``try_acquire``, ``retry_after``, ``snapshot``) after the recovery timeout. Transitions are
reported through ``on_transition(kind, name, old, new)`` (the egress layer makes metrics and
audit events of them). No I/O here, and the clock is injected; the breaker does not apply the
call timeout itself (``Breaker.call_timeout`` says what it is), because only the caller knows
what a call spans (a streamed answer, retries).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Final, Literal

from agentgov.api.toolpolicy import CircuitBreaker

log = logging.getLogger(__name__)

State = Literal["closed", "open", "half_open"]
STATES: Final[tuple[State, ...]] = ("closed", "open", "half_open")
Clock = Callable[[], float]
TransitionHook = Callable[[str, str, State, State], None]
Verdict = Literal["success", "failure", "released"]


class Permit:
    """Leave to make one call through a breaker. Settle it exactly once (or use ``with``)."""

    __slots__ = ("_breaker", "_epoch", "_token", "_trial", "_verdict")

    def __init__(self, breaker: Breaker, epoch: int, token: int, trial: bool) -> None:
        self._breaker = breaker
        self._epoch = epoch
        self._token = token
        self._trial = trial
        self._verdict: Verdict | None = None

    @property
    def trial(self) -> bool:
        """True for a half-open trial call (its outcome decides whether the breaker closes)."""
        return self._trial

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    def success(self) -> None:
        """The upstream answered (any answer that shows it is alive, a 4xx included)."""
        self._settle("success")

    def failure(self) -> None:
        """The upstream failed: connection error, timeout, 5xx, unusable answer."""
        self._settle("failure")

    def release(self) -> None:
        """No verdict: give the slot back without counting anything (the caller gave up)."""
        self._settle("released")

    def _settle(self, verdict: Verdict) -> None:
        if self._verdict is not None:
            return  # the first verdict stands; settling twice must not count twice
        self._verdict = verdict
        self._breaker._settle(self, verdict)  # noqa: SLF001 - the permit is the breaker's own

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._verdict is not None:
            return
        if exc_type is None:
            self.success()
        elif issubclass(exc_type, (asyncio.CancelledError, GeneratorExit)):
            self.release()
        else:
            self.failure()

    def __repr__(self) -> str:
        return f"Permit({self._breaker.kind}/{self._breaker.name}, trial={self._trial}, verdict={self._verdict})"


class Breaker:
    """One circuit breaker. Not thread-safe: one event loop owns it (the sidecar's)."""

    def __init__(self, name: str, settings: CircuitBreaker, clock: Clock = time.monotonic, *,
                 kind: str = "upstream", on_transition: TransitionHook | None = None) -> None:
        self.name = name
        self.kind = kind
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state: State = "closed"
        self._epoch = 0  # bumped on every transition; permits of older epochs have no say
        self._failures = 0  # consecutive failures while closed
        self._successes = 0  # trial successes while half-open
        self._opened_at = 0.0
        self._trials: dict[int, float] = {}  # trial permit token -> when it started (half-open)
        self._tokens = 0
        self.rejected = 0  # calls refused while open or half-open-and-full

    # -- reading ---------------------------------------------------------------------------

    @property
    def state(self) -> State:
        self._advance()
        return self._state

    @property
    def failures(self) -> int:
        """Consecutive failures counted towards opening (0 unless closed)."""
        return self._failures

    @property
    def call_timeout(self) -> float:
        """Seconds after which a call counts as failed (the caller applies it)."""
        return float(self.settings.call_timeout_seconds)

    def retry_after(self) -> float:
        """Seconds until a call may be let through: the rest of the recovery timeout while open,
        1 while half-open with every trial slot taken, 0 when a call would be allowed now."""
        state = self.state
        if state == "open":
            return max(0.0, self._opened_at + self.settings.recovery_timeout_seconds - self._clock())
        if state == "half_open" and self._slots_free() <= 0:
            return 1.0
        return 0.0

    def snapshot(self) -> dict[str, object]:
        """For /ready: ``{"kind", "name", "state", "failures", "retryAfter"}``."""
        return {"kind": self.kind, "name": self.name, "state": self.state,
                "failures": self._failures, "retryAfter": round(self.retry_after(), 3)}

    # -- calling ---------------------------------------------------------------------------

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None if the breaker refuses it now."""
        state = self.state
        self._tokens += 1
        if state == "closed":
            return Permit(self, self._epoch, self._tokens, trial=False)
        if state == "half_open" and self._slots_free() > 0:
            permit = Permit(self, self._epoch, self._tokens, trial=True)
            self._trials[self._tokens] = self._clock()
            return permit
        self.rejected += 1
        return None

    def _slots_free(self) -> int:
        self._reclaim_stale_trials()
        return self.settings.half_open_successes - len(self._trials)

    def _reclaim_stale_trials(self) -> None:
        """A trial that outlived the call timeout has failed, settled or not (a leaked permit)."""
        if self._state != "half_open" or not self._trials:
            return
        oldest = min(self._trials.values())
        if self._clock() - oldest >= self.settings.call_timeout_seconds:
            self._open()

    # -- state machine ---------------------------------------------------------------------

    def _settle(self, permit: Permit, verdict: Verdict) -> None:
        if permit._epoch != self._epoch:  # noqa: SLF001
            return  # issued before the last transition: its verdict is about a past state
        if permit.trial:
            self._trials.pop(permit._token, None)  # noqa: SLF001
        if verdict == "released":
            return
        if self._state == "closed":
            if verdict == "success":
                self._failures = 0
            else:
                self._failures += 1
                if self._failures >= self.settings.failure_threshold:
                    self._open()
        elif self._state == "half_open":
            if verdict == "failure":
                self._open()
            else:
                self._successes += 1
                if self._successes >= self.settings.half_open_successes:
                    self._transition("closed")

    def _advance(self) -> None:
        if self._state == "open" and self._clock() >= self._opened_at + self.settings.recovery_timeout_seconds:
            self._transition("half_open")
        elif self._state == "half_open":
            self._reclaim_stale_trials()

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._transition("open")

    def _transition(self, new: State) -> None:
        old = self._state
        self._state = new
        self._epoch += 1
        self._failures = 0
        self._successes = 0
        self._trials.clear()
        if old != new:
            self._notify(old, new)

    def _notify(self, old: State, new: State) -> None:
        if self._on_transition is None:
            return
        try:
            self._on_transition(self.kind, self.name, old, new)
        except Exception:  # a metrics or audit hook must never break a call
            log.exception("breaker transition hook failed for %s/%s", self.kind, self.name)

    def __repr__(self) -> str:
        return f"Breaker({self.kind}/{self.name}, {self._state}, failures={self._failures})"


BreakerKey = tuple[str, str]
# The kinds whose breakers come from the bundle (and go when it no longer names them).
BUNDLE_KINDS: Final[frozenset[str]] = frozenset({"model", "region", "tool"})


class Breakers:
    """The sidecar's breakers by ``(kind, name)``, e.g. ``("model", "gpt-4o")``,
    ``("region", "eu-west-1")``, ``("tool", "search")``.

    Settings come from the bundle and may change at reload: ``get`` with equal settings returns
    the same breaker (state kept); with different settings it builds a fresh, closed one (and
    reports the reset as a transition when the old one was not closed). ``configure`` (or
    ``retain``) forgets the breakers of routes that left the bundle; breakers of kinds the bundle
    does not describe (``("cache", "l2")``) are only ever added with ``get``.
    """

    def __init__(self, clock: Clock = time.monotonic, on_transition: TransitionHook | None = None) -> None:
        self._clock = clock
        self._on_transition = on_transition
        self._breakers: dict[BreakerKey, Breaker] = {}

    def get(self, kind: str, name: str, settings: CircuitBreaker) -> Breaker:
        key = (kind, name)
        current = self._breakers.get(key)
        if current is not None and current.settings == settings:
            return current
        fresh = Breaker(name, settings, self._clock, kind=kind, on_transition=self._on_transition)
        if current is not None:
            previous = current.state
            if previous != "closed":
                fresh._notify(previous, "closed")  # noqa: SLF001 - the gauge must not stay "open"
        self._breakers[key] = fresh
        return fresh

    def find(self, kind: str, name: str) -> Breaker | None:
        return self._breakers.get((kind, name))

    def retain(self, keys: Iterable[BreakerKey], kinds: Collection[str] = BUNDLE_KINDS) -> list[BreakerKey]:
        """Drop every breaker of the given kinds that is not in ``keys``; returns the dropped keys.
        Breakers of other kinds (the cache's own) are left alone."""
        wanted = set(keys)
        dropped = [key for key in self._breakers if key[0] in kinds and key not in wanted]
        for key in dropped:
            del self._breakers[key]
        return dropped

    def configure(self, wanted: Mapping[BreakerKey, CircuitBreaker],
                  kinds: Collection[str] = BUNDLE_KINDS) -> list[BreakerKey]:
        """Make the registry hold exactly ``wanted`` among ``kinds`` (at startup and each reload):
        breakers with unchanged settings keep their state, changed ones are rebuilt, absent ones
        dropped. Returns the dropped keys."""
        for (kind, name), settings in wanted.items():
            self.get(kind, name, settings)
        return self.retain(wanted, kinds)

    def unavailable(self, kind: str) -> set[str]:
        """Names of this kind whose breaker refuses calls now (for region selection)."""
        return {name for (k, name), breaker in self._breakers.items()
                if k == kind and breaker.state != "closed" and breaker.retry_after() > 0}

    def snapshot(self) -> list[dict[str, object]]:
        """Every breaker for /ready, sorted by kind and name."""
        return [self._breakers[key].snapshot() for key in sorted(self._breakers)]

    def __len__(self) -> int:
        return len(self._breakers)
