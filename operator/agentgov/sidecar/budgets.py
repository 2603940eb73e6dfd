"""Budget decisions: which budgets a call draws on, what it may cost, when alerts fire. Pure.

The egress handler asks, before a model call, *how much could this call cost at most* and
*which counters must have room for it*; after the call, *what did it cost* and *which alert
thresholds did it cross*. Everything here answers those questions from the bundle, the
caller's identity, the request body and the response's ``usage`` — no clock, no Redis, no
randomness (the hold id and the time are given). The I/O around it is ``spend.py``.

Decisions worth knowing:

- **Who is charged.** A budget applies through every subject it names that the call matches:
  the caller's user id (``users``), the agent (``agents``), the caller's team (``teams``);
  ``*`` matches every value of its kind (a caller without a team never matches a team). With
  scope ``Each`` the call is charged to each matching subject's own counter (a budget naming
  user *and* team charges both); with ``Shared`` to the one ``shared`` pool, once.
- **Prices.** A model is priced by the budget's ``pricing`` (shipped prices merged with the
  budget's); a dated snapshot name (``gpt-4o-2024-08-06``, ``claude-sonnet-4-20250514``) is
  priced as its base model. A model no price names is **charged at the highest input and
  the highest output price the budget knows**, and the hold says so (``unpriced``). Charging
  nothing would let spend escape every limit; refusing would turn a missing price-list entry
  into an outage. The over-charge is visible (metric, log) and fixed by adding the model to
  the AgentBudget's ``pricing``.
- **Worst case.** A reservation is the prompt estimate × input price plus the completion
  cap × output price: ``max_completion_tokens``, else ``max_tokens``, else
  ``default_output_tokens`` (4096), times ``n`` choices; a cap is clamped to
  ``MAX_OUTPUT_TOKENS``. The prompt estimate is conservative (UTF-8 bytes / 3, plus per-message
  overhead, a fixed allowance per image) and bounded whatever the body holds. A call without a
  cap may in the end cost more than it reserved; the actual cost is still committed (the spend
  happened), so only capped calls make "committed never exceeds the limit" exact.
- **Amounts** are integer micro-USD, rounded *up* per call (never under-charge).
- **Alerts** fire when committed spend reaches ``limit × pct / 100`` for each configured
  threshold and always 100; each once per subject, period and threshold (the store keeps an
  ``alerted`` field so replicas agree).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Final, Literal

from agentgov.api import spendstore
from agentgov.api.bundle import BundleBudget, PolicyBundle, Price
from agentgov.api.defaults import DEFAULT_PRICING_PER_1K
from agentgov.api.spendstore import PeriodKind
from agentgov.sidecar.auth import Identity
from agentgov.sidecar.errors import BudgetExceeded

# Completion tokens reserved when the request names no cap.
DEFAULT_OUTPUT_TOKENS: Final = 4096
# No model answers with more than this many tokens per choice; larger caps are clamped.
MAX_OUTPUT_TOKENS: Final = 128_000
MAX_CHOICES: Final = 128
# Prompt estimates stop growing here (a body this large is refused by the body limit first).
MAX_PROMPT_TOKENS: Final = 10_000_000
# Tokens that usage figures may claim per call; larger (or negative, or non-numeric) figures
# are not believed.
MAX_USAGE_TOKENS: Final = 100_000_000
# Heuristic: UTF-8 bytes per token (English averages ~4 characters per token; 3 over-estimates).
BYTES_PER_TOKEN: Final = 3
TOKENS_PER_MESSAGE: Final = 4
TOKENS_REPLY_PRIMING: Final = 3
# An image part is counted as the largest high-detail image of the OpenAI vision price list,
# never by the bytes of its (possibly inline base64) URL.
TOKENS_PER_IMAGE: Final = 1105
# Walking a hostile body stops after this many JSON nodes (the rest are estimated by count).
MAX_NODES: Final = 200_000
# Parts of a request body that reach the model as prompt tokens.
PROMPT_KEYS: Final = ("messages", "prompt", "input", "tools", "functions", "tool_choice", "response_format")
_SNAPSHOT_SUFFIX: Final = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")
ALWAYS_ALERT_AT: Final = 100


@dataclass(frozen=True)
class Charge:
    """One budget counter a call draws on: the budget and the subject it applies through."""

    budget: BundleBudget
    subject: str  # spendstore.subject(...): user:<id>, agent:<name>, team:<name> or shared


@dataclass(frozen=True)
class HoldLine:
    """What one budget reserves for one call: the unit the store acts on atomically."""

    namespace: str
    budget: str
    subjects: tuple[str, ...]
    amount_micros: int
    day_limit_micros: int
    month_limit_micros: int
    thresholds: tuple[int, ...]
    enforce: bool  # Hard: refuse when there is no room
    failure_policy: Literal["Closed", "Open"]
    price: Price
    unpriced: bool
    hold_id: str
    created_at: float  # epoch seconds: fixes the day and month the hold counts in
    deadline: float  # epoch seconds: after this the store releases the hold by itself

    def period_key(self, kind: PeriodKind) -> str:
        return spendstore.period_key(self.namespace, self.budget, kind, _utc(self.created_at))

    def limit_micros(self, kind: PeriodKind) -> int:
        return self.day_limit_micros if kind == "day" else self.month_limit_micros


@dataclass(frozen=True)
class Refusal:
    """Why a store refused a reservation: the first subject and period without room."""

    subject: str
    period: PeriodKind
    spent_micros: int
    reserved_micros: int


@dataclass(frozen=True)
class StoreAlert:
    """A threshold a settlement crossed, as the store reports it (first time in the period)."""

    subject: str
    period: PeriodKind
    percent: int
    spent_micros: int


@dataclass(frozen=True)
class BudgetAlert:
    """A threshold alert for metrics, the audit log and the webhook."""

    budget: str
    subject: str
    period: PeriodKind
    percent: int
    spent_usd: float
    limit_usd: float
    # Counted on this replica's local ledger while the store was unreachable.
    degraded: bool = False


@dataclass(frozen=True)
class Reservation:
    """The plan for one call before any I/O: the holds to place and the estimates behind them."""

    lines: tuple[HoldLine, ...]
    prompt_tokens: int
    output_tokens: int


def _utc(epoch: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc)


def _matches(names: Sequence[str], value: str | None) -> bool:
    return value is not None and bool(value) and ("*" in names or value in names)


def applicable_charges(bundle: PolicyBundle, identity: Identity, agent_name: str) -> list[Charge]:
    """Every (budget, subject) counter the call draws on, in bundle order."""
    charges: list[Charge] = []
    for budget in bundle.budgets:
        matched: list[str] = []
        if _matches(budget.users, identity.user):
            matched.append(spendstore.subject("user", identity.user))
        if _matches(budget.agents, agent_name):
            matched.append(spendstore.subject("agent", agent_name))
        if _matches(budget.teams, identity.team):
            matched.append(spendstore.subject("team", identity.team))
        if not matched:
            continue
        if budget.scope == "Shared":
            charges.append(Charge(budget, spendstore.subject("shared")))
        else:
            charges.extend(Charge(budget, s) for s in matched)
    return charges


def price_of(model: str, pricing: Mapping[str, Price]) -> Price | None:
    """The model's price: by exact name, then case-insensitively, then as its undated base."""
    if model in pricing:
        return pricing[model]
    lowered = {name.lower(): price for name, price in pricing.items()}
    name = model.lower()
    if name in lowered:
        return lowered[name]
    base = _SNAPSHOT_SUFFIX.sub("", name)
    if base != name and base in lowered:
        return lowered[base]
    return None


@functools.cache
def shipped_pricing() -> Mapping[str, Price]:
    """The shipped price list as Price models, built once (every model call is priced)."""
    return MappingProxyType({m: Price(input_per_1k=i, output_per_1k=o) for m, (i, o) in DEFAULT_PRICING_PER_1K.items()})


def ceiling_price(pricing: Mapping[str, Price]) -> Price:
    """The highest input and output price known (the shipped list's when ``pricing`` is empty)."""
    prices = list(pricing.values()) or list(shipped_pricing().values())
    return Price(input_per_1k=max(p.input_per_1k for p in prices), output_per_1k=max(p.output_per_1k for p in prices))


def budget_price(model: str, budget: BundleBudget) -> tuple[Price, bool]:
    """``(price, unpriced)``: the budget's price for the model, or its ceiling price."""
    price = price_of(model, budget.pricing)
    return (price, False) if price is not None else (ceiling_price(budget.pricing), True)


def cost_micros(price: Price, input_tokens: int, output_tokens: int) -> int:
    """Exact cost in micro-USD, rounded up (prices are per 1,000 tokens: 1 USD/1K = 1,000 µUSD/token)."""
    exact = (Decimal(max(0, input_tokens)) * Decimal(str(price.input_per_1k))
             + Decimal(max(0, output_tokens)) * Decimal(str(price.output_per_1k))) * 1000
    return math.ceil(exact)


def usage_tokens(value: object) -> int | None:
    """A token count from a response's ``usage``, or None when it cannot be believed."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= MAX_USAGE_TOKENS:
        return value
    return None


def _positive_int(value: object, ceiling: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        return None
    number = int(value)
    return min(number, ceiling) if number >= 1 else None


def _text_tokens(nbytes: int) -> int:
    return -(-nbytes // BYTES_PER_TOKEN)


def _walk_tokens(root: object) -> int:
    """Tokens of every string and token array under ``root``, iteratively (no recursion limit)."""
    tokens = 0
    nodes = 0
    stack: list[object] = [root]
    while stack:
        node = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            # Whatever is left counts one token per node still queued: bounded work, never zero.
            return tokens + len(stack) + 1
        if isinstance(node, str):
            if len(node) >= MAX_PROMPT_TOKENS * BYTES_PER_TOKEN:  # at least that many bytes: no need to encode
                return MAX_PROMPT_TOKENS
            tokens += _text_tokens(len(node.encode("utf-8", "replace")))
        elif isinstance(node, bool) or node is None:
            tokens += 1
        elif isinstance(node, int | float):
            tokens += 1  # a token id of a pre-tokenized prompt, or a number in a schema
        elif isinstance(node, Mapping):
            if node.get("type") in ("image_url", "input_image", "image"):
                tokens += TOKENS_PER_IMAGE
                continue
            for key, value in node.items():
                if isinstance(key, str):
                    tokens += _text_tokens(len(key.encode("utf-8", "replace")))
                stack.append(value)
        elif isinstance(node, list | tuple):
            stack.extend(node)
        if tokens >= MAX_PROMPT_TOKENS:
            return MAX_PROMPT_TOKENS
    return tokens


def estimate_prompt_tokens(body: Mapping[str, object]) -> int:
    """A conservative estimate of the prompt tokens of a chat, completion or embeddings body."""
    tokens = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        tokens += TOKENS_PER_MESSAGE * min(len(messages), MAX_PROMPT_TOKENS) + TOKENS_REPLY_PRIMING
    for key in PROMPT_KEYS:
        if key in body:
            tokens += _walk_tokens(body[key])
        if tokens >= MAX_PROMPT_TOKENS:
            return MAX_PROMPT_TOKENS
    return max(tokens, 1)


def is_embeddings(body: Mapping[str, object]) -> bool:
    return "input" in body and "messages" not in body and "prompt" not in body


def estimate_output_tokens(body: Mapping[str, object], default_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> int:
    """The most completion tokens the call can produce (0 for embeddings)."""
    if is_embeddings(body):
        return 0
    cap = (_positive_int(body.get("max_completion_tokens"), MAX_OUTPUT_TOKENS)
           or _positive_int(body.get("max_tokens"), MAX_OUTPUT_TOKENS)
           or min(max(1, default_output_tokens), MAX_OUTPUT_TOKENS))
    choices = _positive_int(body.get("n"), MAX_CHOICES) or 1
    return cap * choices


def plan_reservation(bundle: PolicyBundle, identity: Identity, model: str, body: Mapping[str, object], *,
                     hold_id: str, now: float, hold_seconds: float,
                     default_output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> Reservation:
    """One hold line per applicable budget, each with the call's worst-case cost at its prices."""
    prompt = estimate_prompt_tokens(body)
    output = estimate_output_tokens(body, default_output_tokens)
    by_budget: dict[str, list[str]] = {}
    budgets: dict[str, BundleBudget] = {}
    for charge in applicable_charges(bundle, identity, bundle.agent.name):
        by_budget.setdefault(charge.budget.name, []).append(charge.subject)
        budgets[charge.budget.name] = charge.budget
    lines = []
    for name, subjects in by_budget.items():
        budget = budgets[name]
        price, unpriced = budget_price(model, budget)
        lines.append(HoldLine(
            namespace=bundle.agent.namespace, budget=name, subjects=tuple(subjects),
            amount_micros=cost_micros(price, prompt, output),
            day_limit_micros=spendstore.usd_to_micros(budget.daily_usd),
            month_limit_micros=spendstore.usd_to_micros(budget.monthly_usd),
            thresholds=alert_levels(budget.alert_thresholds), enforce=budget.enforcement == "Hard",
            failure_policy=budget.failure_policy, price=price, unpriced=unpriced,
            hold_id=hold_id, created_at=now, deadline=now + hold_seconds,
        ))
    return Reservation(tuple(lines), prompt, output)


def priced_model(bundle: PolicyBundle, requested: str, upstream: str) -> str:
    """The model name a call is priced (and reported) by: the name the agent asked for when a
    budget or the shipped list prices it (AgentBudget prices are keyed by requested names, so a
    route alias like ``fast`` can carry its own price), else the upstream model's name."""
    if requested == upstream:
        return requested
    lists = [budget.pricing for budget in bundle.budgets] + [shipped_pricing()]
    return requested if any(price_of(requested, pricing) is not None for pricing in lists) else upstream


def usage_price(bundle: PolicyBundle | None, model: str) -> Price | None:
    """The price usage reports use: the first budget's that names the model, else the shipped one."""
    for budget in bundle.budgets if bundle else ():
        price = price_of(model, budget.pricing)
        if price is not None:
            return price
    return price_of(model, shipped_pricing())


def alert_levels(thresholds: Iterable[int]) -> tuple[int, ...]:
    """The configured percents within 1..100, plus 100, ascending and unique."""
    return tuple(sorted({t for t in thresholds if 1 <= t <= 100} | {ALWAYS_ALERT_AT}))


def reached(spent_micros: int, limit_micros: int, percent: int) -> bool:
    """Whether spend has reached ``percent`` of the limit (integer arithmetic, no rounding)."""
    return spent_micros * 100 >= limit_micros * percent


def crossed_thresholds(before_micros: int, after_micros: int, limit_micros: int,
                       thresholds: Iterable[int]) -> list[int]:
    """Percents (configured, and 100) that spend reached going from ``before`` to ``after``."""
    return [p for p in alert_levels(thresholds)
            if not reached(before_micros, limit_micros, p) and reached(after_micros, limit_micros, p)]


def thresholds_to_alert(spent_micros: int, limit_micros: int, thresholds: Iterable[int],
                        already_alerted: Iterable[int]) -> list[int]:
    """Percents reached and not yet alerted in this period: what the stores record and report."""
    done = set(already_alerted)
    return [p for p in alert_levels(thresholds) if p not in done and reached(spent_micros, limit_micros, p)]


_ADJECTIVE: Final[dict[str, str]] = {"day": "daily", "month": "monthly"}


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def budget_exceeded(line: HoldLine, refusal: Refusal, now: float) -> BudgetExceeded:
    """The 429 for a refusal: which budget and subject, the period, limit, spend and reset time.

    When committed spend alone leaves room and in-flight reservations do not, the message says
    so and Retry-After is short; otherwise Retry-After is the time to the reset.
    """
    limit = line.limit_micros(refusal.period)
    resets = spendstore.period_end(refusal.period, _utc(now))
    usd = spendstore.micros_to_usd
    details: dict[str, object] = {
        "budget": line.budget,
        "subject": refusal.subject,
        "period": refusal.period,
        "limitUsd": usd(limit),
        "spentUsd": usd(refusal.spent_micros),
        "reservedUsd": usd(refusal.reserved_micros),
        "requestedUsd": usd(line.amount_micros),
        "resetsAt": rfc3339(resets),
    }
    where = f"budget {line.budget!r} ({_ADJECTIVE[refusal.period]} limit ${usd(limit):.2f}) for {refusal.subject}"
    if line.amount_micros > limit:
        message = (f"this call could cost up to ${usd(line.amount_micros):.4f}, more than the whole {where}; "
                   "lower max_tokens (or max_completion_tokens)")
        return BudgetExceeded(message, details=details)
    if refusal.spent_micros + line.amount_micros <= limit and refusal.spent_micros < limit:
        message = (f"{where}: ${usd(refusal.spent_micros):.4f} spent and ${usd(refusal.reserved_micros):.4f} "
                   f"reserved by calls in flight leave no room for this call (up to ${usd(line.amount_micros):.4f})")
        return BudgetExceeded(message, retry_after=1.0, details=details)
    message = (f"{where} is exhausted: ${usd(refusal.spent_micros):.4f} spent; "
               f"it resets at {details['resetsAt']}")
    retry_after = max(1.0, math.ceil((resets - _utc(now)).total_seconds()))
    return BudgetExceeded(message, retry_after=retry_after, details=details)


def budget_alert(line: HoldLine, alert: StoreAlert, degraded: bool = False) -> BudgetAlert:
    return BudgetAlert(
        budget=line.budget, subject=alert.subject, period=alert.period, percent=alert.percent,
        spent_usd=spendstore.micros_to_usd(alert.spent_micros),
        limit_usd=spendstore.micros_to_usd(line.limit_micros(alert.period)), degraded=degraded,
    )


# --- hold members: how a hold is written into the holds ZSET --------------------------------

def hold_member(line: HoldLine) -> str:
    """``<id> <day> <month> <amount> <subject,subject>``: everything needed to release the hold
    when it expires, so a crashed sidecar's reservation is given back by whichever replica's
    script runs next. Subjects are percent-encoded (no spaces or commas)."""
    created = _utc(line.created_at)
    return " ".join((line.hold_id, spendstore.day_label(created), spendstore.month_label(created),
                     str(line.amount_micros), ",".join(line.subjects)))


@dataclass(frozen=True)
class ParsedMember:
    hold_id: str
    day: str
    month: str
    amount_micros: int
    subjects: tuple[str, ...]


def parse_hold_member(member: str) -> ParsedMember | None:
    parts = member.split(" ")
    if len(parts) != 5:
        return None
    try:
        amount = int(parts[3])
    except ValueError:
        return None
    return ParsedMember(parts[0], parts[1], parts[2], amount, tuple(s for s in parts[4].split(",") if s))
