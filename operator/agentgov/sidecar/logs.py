"""The sidecar's log lines: one JSON object per line, carrying the request and execution ids.

Log collectors (Fluent Bit, Vector, Cloud Logging) parse a JSON line into fields, so a line
can be found by the execution id the audit log and the agent's own logs carry. Handlers bind
the ids for the duration of a request (:func:`request_scope` in the middleware, :func:`annotate`
in the handlers; a context variable, so concurrent requests never see each other's ids); every line logged meanwhile carries them. ``AGENTGOV_LOG_FORMAT=text``
gives the classic human format instead.

Messages pass through the redacting filter before they are formatted (see ``commands``), and
a traceback is rendered into the ``exception`` field of the same line, never over several.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Final, Literal

LogFormat = Literal["json", "text"]
LOG_FORMATS: Final[tuple[LogFormat, ...]] = ("json", "text")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The current request's fields; None outside a request. A fresh dict per request (set by the
# middleware), filled in by the handlers as they learn the ids.
_CONTEXT: ContextVar[dict[str, str] | None] = ContextVar("agentgov_log_context", default=None)


@contextmanager
def request_scope() -> Iterator[None]:
    """Every line logged inside the block (this task only) carries what :func:`annotate` adds."""
    token = _CONTEXT.set({})
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def annotate(**fields: str | None) -> None:
    """Add ids to the current request's log lines (nothing happens outside a request)."""
    current = _CONTEXT.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def context() -> Mapping[str, str]:
    return dict(_CONTEXT.get() or {})


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", <bound ids>, "exception"?}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **(_CONTEXT.get() or {}),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def formatter(kind: LogFormat) -> logging.Formatter:
    return JsonFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)
