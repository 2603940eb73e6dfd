"""AgentBudget (``agb``): USD spending limits for users, agents and teams.

A budget names who it applies to, a monthly limit (and a daily one, defaulting to
monthly/30), alert thresholds, what happens over the limit (Hard: refuse; Soft: allow and
alert), what happens when the spend store is unreachable (Closed: refuse; Open: allow and
count locally) and model prices per 1K tokens on top of the shipped defaults. No I/O here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from agentgov.api import defaults as shipped
from agentgov.api.base import (
    HttpUrl,
    Model,
    ResourceStatus,
    Rule,
    SecretKeyRef,
    Usd,
    NAMED_LIST,
    unique_names_rule,
)

SubjectName = Annotated[str, Field(min_length=1, max_length=253)]


class BudgetSubjects(Model):
    """Who the budget applies to. Each subject is counted on its own unless scope is Shared."""

    users: list[SubjectName] = Field(
        default_factory=list,
        max_length=1000,
        description="User ids (the JWT `sub` claim); `*` means every user.",
    )
    agents: list[SubjectName] = Field(
        default_factory=list,
        max_length=1000,
        description="AgentDeployment names in this namespace; `*` means every agent.",
    )
    teams: list[SubjectName] = Field(
        default_factory=list,
        max_length=1000,
        description="Team names (the JWT `team` claim); `*` means every team.",
    )

    cel_rules = (
        Rule(
            cel="(has(self.users) && size(self.users) > 0) || (has(self.agents) && size(self.agents) > 0) "
            "|| (has(self.teams) && size(self.teams) > 0)",
            message="a budget must name at least one user, agent or team",
            check=lambda m: bool(m.users or m.agents or m.teams),
        ),
    )


class BudgetLimits(Model):
    """Limits in US dollars."""

    monthly_usd: Usd = Field(description="Spend allowed per calendar month (UTC), in USD.", gt=0)
    daily_usd: Usd | None = Field(
        None,
        gt=0,
        description="Spend allowed per day (UTC), in USD. Defaults to the monthly limit / 30.",
    )

    cel_rules = (
        Rule(
            cel="!has(self.dailyUsd) || self.dailyUsd <= self.monthlyUsd",
            message="the daily limit must not exceed the monthly limit",
            check=lambda m: m.daily_usd is None or m.daily_usd <= m.monthly_usd,
            field_path=".dailyUsd",
        ),
    )

    @property
    def effective_daily_usd(self) -> float:
        if self.daily_usd is not None:
            return self.daily_usd
        return self.monthly_usd / shipped.DAYS_PER_MONTH_FOR_DAILY_DEFAULT


class ModelPrice(Model):
    """Price of one model, USD per 1,000 tokens."""

    name: str = Field(min_length=1, max_length=253, description="Model name as requested by the agent, e.g. gpt-4o.")
    input_per_1k: Usd = Field(description="USD per 1,000 prompt (input) tokens.")
    output_per_1k: Usd = Field(description="USD per 1,000 completion (output) tokens.")


class AlertWebhook(Model):
    """Where threshold alerts are POSTed as JSON, in addition to metrics and audit events."""

    url: HttpUrl = Field(description="Webhook URL (https recommended).")
    secret_ref: SecretKeyRef | None = Field(
        None, description="Secret holding an HMAC key used to sign the webhook body."
    )


Threshold = Annotated[int, Field(ge=1, le=100)]


class AgentBudgetSpec(Model):
    """Desired state of an AgentBudget."""

    subjects: BudgetSubjects = Field(description="Who the budget applies to.")
    scope: Literal["Each", "Shared"] = Field(
        "Each",
        description="Each: every subject has its own limit. Shared: all subjects draw from one pool.",
    )
    limits: BudgetLimits = Field(description="Monthly and daily USD limits.")
    alert_thresholds: list[Threshold] = Field(
        default_factory=lambda: list(shipped.DEFAULT_ALERT_THRESHOLDS),
        min_length=1,
        max_length=10,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Percent of a limit at which an alert fires (once per period); ascending, 1..100.",
    )
    enforcement: Literal["Hard", "Soft"] = Field(
        "Hard", description="Hard: refuse calls over the limit (HTTP 429). Soft: allow them and alert."
    )
    failure_policy: Literal["Closed", "Open"] = Field(
        "Closed",
        description="When the spend store is unreachable. Closed: refuse calls (HTTP 503). "
        "Open: allow them, count locally and flag it in a metric.",
    )
    pricing: list[ModelPrice] = Field(
        default_factory=list,
        max_length=256,
        json_schema_extra=NAMED_LIST, description="Model prices that replace or add to the shipped defaults, by model name.",
    )
    webhook: AlertWebhook | None = Field(None, description="Optional webhook for threshold alerts.")

    cel_rules = (
        Rule(
            cel="self.alertThresholds.isSorted()",
            message="alert thresholds must be in ascending order",
            check=lambda m: all(a < b for a, b in zip(m.alert_thresholds, m.alert_thresholds[1:])),
            field_path=".alertThresholds",
        ),
        unique_names_rule("pricing", "pricing", "model price"),
    )

    def effective_pricing(self) -> dict[str, tuple[float, float]]:
        """Shipped prices overlaid with this budget's, as model -> (input, output) per 1K."""
        prices = dict(shipped.DEFAULT_PRICING_PER_1K)
        prices.update({p.name: (p.input_per_1k, p.output_per_1k) for p in self.pricing})
        return prices


class AnnouncedAlerts(Model):
    """Alert thresholds already announced (Event and `Warning` condition) in the current day and
    month. Kept in status so each threshold alerts once per period, across operator restarts."""

    day: str | None = Field(None, max_length=10, description="The UTC day (YYYY-MM-DD) `daily` belongs to.")
    daily: list[Threshold] = Field(
        default_factory=list,
        max_length=11,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Percents of the daily limit announced that day; 100 is the `Exceeded` announcement.",
    )
    month: str | None = Field(None, max_length=7, description="The UTC month (YYYY-MM) `monthly` belongs to.")
    monthly: list[Threshold] = Field(
        default_factory=list,
        max_length=11,
        json_schema_extra={"x-kubernetes-list-type": "set"},
        description="Percents of the monthly limit announced that month; 100 is the `Exceeded` announcement.",
    )


class AgentBudgetStatus(ResourceStatus):
    """Observed spend, written by the operator from the spend store (the Redis the sidecars write).

    With scope Each every subject has its own limits; the figures are those of the subject
    closest to a limit (the highest percent used, daily or monthly), named in `topSubject`.
    The operator re-reads the store periodically and writes status only when a figure changes.
    """

    spent_today_usd: float | None = Field(
        None, ge=0, description="Spend so far today (UTC), in USD (scope Each: of `topSubject`)."
    )
    spent_this_month_usd: float | None = Field(
        None, ge=0, description="Spend so far this month (UTC), in USD (scope Each: of `topSubject`)."
    )
    remaining_today_usd: float | None = Field(
        None, ge=0, description="What is left of the daily limit today, in USD (0 once exceeded; scope Each: of `topSubject`)."
    )
    remaining_this_month_usd: float | None = Field(
        None, ge=0, description="What is left of the monthly limit this month, in USD (0 once exceeded; scope Each: of `topSubject`)."
    )
    percent_used: int | None = Field(
        None, ge=0, description="The higher of daily and monthly spend as a percent of its limit (rounded down)."
    )
    percent_used_today: int | None = Field(
        None, ge=0, description="Spend today as a percent of the daily limit (rounded down; scope Each: of `topSubject`)."
    )
    percent_used_this_month: int | None = Field(
        None, ge=0, description="Spend this month as a percent of the monthly limit (rounded down; scope Each: of `topSubject`)."
    )
    top_subject: str | None = Field(
        None,
        max_length=512,
        description="The subject the figures are for: `user:<id>`, `agent:<name>` or `team:<name>` closest to "
        "its limit (scope Each), or `shared` (scope Shared). Unset while nothing was spent.",
    )
    subjects: int | None = Field(
        None, ge=0, description="How many subjects have spent or reserved anything this month (scope Shared: 0 or 1)."
    )
    alerts: AnnouncedAlerts | None = Field(
        None, description="Thresholds already announced this day and month (each alerts once per period)."
    )
    last_updated: str | None = Field(
        None,
        description="When the spend figures last changed, as read from the spend store (RFC 3339).",
        json_schema_extra={"format": "date-time"},
    )
