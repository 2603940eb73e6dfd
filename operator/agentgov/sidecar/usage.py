"""Usage reports (``agentgov usage``): what one user's calls cost over the last N days.

The sidecars count every model call in a per-user, per-UTC-day hash (``spendstore.usage_key``:
cost in micro-USD, input and output tokens, calls, cache hits, per agent and model). This
module turns those hashes into the playbook's report — total cost, tokens, calls, average cost
per call, cache hits, and a breakdown per model and per agent — as a table or JSON.

``aggregate``, ``report_json`` and ``report_table`` are pure; ``read_usage`` is the thin Redis
reader and ``usage_command`` the command's body (``cli.py`` only parses arguments). Errors are
one ``error: ...`` line: an unreachable Redis is named by host and port, never by its URL
(which may carry a password). Fields this version does not understand, and garbled values, are
skipped, never fatal.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, TextIO
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentgov.api import spendstore

MAX_DAYS: Final = spendstore.USAGE_KEY_TTL_SECONDS // 86_400
REDIS_URL_ENV: Final = "AGENTGOV_REDIS_URL"
TIMEOUT_ENV: Final = "AGENTGOV_REDIS_TIMEOUT_SECONDS"
DEFAULT_TIMEOUT_SECONDS: Final = 5.0
Output = Literal["table", "json"]


@dataclass
class UsageTotals:
    cost_micros: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    calls: int = 0
    cache_hits: int = 0

    def add(self, metric: str, value: int) -> None:
        setattr(self, metric, getattr(self, metric) + value)

    @property
    def cost_usd(self) -> float:
        return spendstore.micros_to_usd(self.cost_micros)

    @property
    def average_cost_usd(self) -> float:
        return self.cost_usd / self.calls if self.calls else 0.0

    @property
    def cache_hit_rate(self) -> float:
        return self.cache_hits / self.calls if self.calls else 0.0

    def as_json(self) -> dict[str, object]:
        return {
            "costUsd": round(self.cost_usd, 6),
            "inputTokens": self.input_tokens,
            "outputTokens": self.output_tokens,
            "calls": self.calls,
            "averageCostPerCallUsd": round(self.average_cost_usd, 6),
            "cacheHits": self.cache_hits,
            "cacheHitRate": round(self.cache_hit_rate, 4),
        }


@dataclass
class UsageReport:
    user: str
    start: dt.date
    end: dt.date  # inclusive
    total: UsageTotals = field(default_factory=UsageTotals)
    by_model: dict[str, UsageTotals] = field(default_factory=dict)
    by_agent: dict[str, UsageTotals] = field(default_factory=dict)
    by_day: dict[dt.date, UsageTotals] = field(default_factory=dict)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1


def day_range(today: dt.date, days: int) -> list[dt.date]:
    """The ``days`` UTC days ending with ``today``, oldest first."""
    return [today - dt.timedelta(days=offset) for offset in range(days - 1, -1, -1)]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def aggregate(user: str, hashes: Mapping[dt.date, Mapping[str, str] | Mapping[bytes, bytes]],
              start: dt.date, end: dt.date) -> UsageReport:
    """Sum the day hashes into totals and per-model, per-agent and per-day breakdowns."""
    report = UsageReport(user, start, end)
    for day in sorted(hashes):
        for raw_name, raw_value in hashes[day].items():
            parsed = spendstore.parse_usage_field(_text(raw_name))
            if parsed is None:
                continue
            namespace, agent, model, metric = parsed
            try:
                value = int(_text(raw_value))
            except ValueError:
                continue
            if value < 0:
                continue
            for totals in (report.total, report.by_model.setdefault(model, UsageTotals()),
                           report.by_agent.setdefault(f"{namespace}/{agent}", UsageTotals()),
                           report.by_day.setdefault(day, UsageTotals())):
                totals.add(metric, value)
    return report


def report_json(report: UsageReport) -> dict[str, object]:
    return {
        "user": report.user,
        "from": report.start.isoformat(),
        "to": report.end.isoformat(),
        "days": report.days,
        "total": report.total.as_json(),
        "byModel": {name: totals.as_json() for name, totals in sorted(report.by_model.items())},
        "byAgent": {name: totals.as_json() for name, totals in sorted(report.by_agent.items())},
        "byDay": {day.isoformat(): totals.as_json() for day, totals in sorted(report.by_day.items())},
    }


def _table(title: str, rows: Sequence[tuple[str, UsageTotals]]) -> list[str]:
    header = (title, "CALLS", "CACHE HITS", "TOKENS IN", "TOKENS OUT", "COST USD", "AVG/CALL USD")
    cells = [header] + [
        (name, f"{t.calls:,}", f"{t.cache_hits:,}", f"{t.input_tokens:,}", f"{t.output_tokens:,}",
         f"{t.cost_usd:.4f}", f"{t.average_cost_usd:.6f}")
        for name, t in sorted(rows, key=lambda row: (-row[1].cost_micros, row[0]))
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
            for row in cells]


def report_table(report: UsageReport) -> str:
    t = report.total
    lines = [
        f"Usage of {report.user} from {report.start.isoformat()} to {report.end.isoformat()} "
        f"({report.days} day{'s' if report.days != 1 else ''}, UTC)",
        "",
        f"  total cost          ${t.cost_usd:,.4f}",
        f"  calls               {t.calls:,}",
        f"  average per call    ${t.average_cost_usd:,.6f}",
        f"  tokens              {t.input_tokens:,} in, {t.output_tokens:,} out",
        f"  cache hits          {t.cache_hits:,} ({t.cache_hit_rate:.1%} of calls)",
    ]
    if not t.calls:
        lines += ["", "No recorded calls in this period."]
        return "\n".join(lines) + "\n"
    lines += ["", *_table("MODEL", list(report.by_model.items())), "",
              *_table("AGENT", list(report.by_agent.items()))]
    return "\n".join(lines) + "\n"


# --- I/O --------------------------------------------------------------------------------------


def redis_location(url: str) -> str:
    """``host:port`` (or the socket path) of a Redis URL, without user or password."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path or "(unix socket)"
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or 'localhost'}:{port}"


async def read_usage(client: aioredis.Redis, user: str, days: Sequence[dt.date]) -> dict[dt.date, dict[str, str]]:
    """``HGETALL`` of the user's usage hash of each day, in one pipeline."""
    async with client.pipeline(transaction=False) as pipe:
        for day in days:
            pipe.hgetall(spendstore.usage_key(user, day))
        replies = await pipe.execute()
    return {day: {_text(k): _text(v) for k, v in reply.items()} for day, reply in zip(days, replies) if reply}


async def _fetch(url: str, user: str, days: Sequence[dt.date], timeout: float) -> dict[dt.date, dict[str, str]]:
    from agentgov.sidecar.spend import redis_client

    client = redis_client(url, timeout)
    try:
        async with asyncio.timeout(timeout * 2):
            return await read_usage(client, user, days)
    finally:
        await client.aclose()


def usage_command(*, user: str, days: int, redis_url: str | None, output: Output,
                  environ: Mapping[str, str] = os.environ, today: dt.date | None = None,
                  timeout: float | None = None, stdout: TextIO | None = None,
                  stderr: TextIO | None = None) -> int:
    """Print the report; 0 on success, 1 when Redis cannot be read, 2 for bad arguments.

    ``timeout`` None: AGENTGOV_REDIS_TIMEOUT_SECONDS, else 5 seconds (a report may read a
    remote Redis; the sidecar's 0.25 s default is for the request path)."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    if not user.strip():
        print("error: --user must name a user id (the token's sub)", file=err)
        return 2
    if not 1 <= days <= MAX_DAYS:
        print(f"error: --days must be between 1 and {MAX_DAYS} (usage is kept {MAX_DAYS} days); got {days}",
              file=err)
        return 2
    url = redis_url or environ.get(REDIS_URL_ENV, "").strip()
    if not url:
        print(f"error: no Redis to read: pass --redis-url or set {REDIS_URL_ENV}", file=err)
        return 2
    if not url.startswith(("redis://", "rediss://", "unix://")):
        # Never echo the value: it may carry a password.
        print("error: the Redis URL is not a redis://, rediss:// or unix:// URL", file=err)
        return 2
    if timeout is None:
        try:
            timeout = float(environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_SECONDS))
        except ValueError:
            timeout = -1.0
        if not (0 < timeout < 3600):
            print(f"error: {TIMEOUT_ENV} is not a positive number of seconds", file=err)
            return 2
    end = today or dt.datetime.now(dt.timezone.utc).date()
    span = day_range(end, days)
    try:
        hashes = asyncio.run(_fetch(url, user, span, timeout))
    except TimeoutError:
        print(f"error: cannot read usage from Redis at {redis_location(url)}: no answer within {timeout * 2:g}s",
              file=err)
        return 1
    except (RedisError, OSError, ValueError) as e:
        reason = f"{type(e).__name__}: {e}".strip().rstrip(":")
        password = urlsplit(url).password
        if password:
            reason = reason.replace(password, "***")
        print(f"error: cannot read usage from Redis at {redis_location(url)}: {reason}", file=err)
        return 1
    report = aggregate(user, hashes, span[0], span[-1])
    if output == "json":
        print(json.dumps(report_json(report), indent=2), file=out)
    else:
        print(report_table(report), end="", file=out)
    return 0
