"""Redaction: what must never reach an audit record, a log line or an error body.

Two nets, applied to any JSON-like value at any depth:

- by key name: a mapping member whose name says it holds a credential (``password``,
  ``api_key``, ``token``, ``secret``, ``authorization``, ``cookie``, ``private_key`` ...) has
  its value replaced whatever it is. Names are compared as words (``apiKey``, ``X-Api-Key``
  and ``api_key`` are the same name), so counters such as ``max_tokens`` stay readable;
- by value: inside every string, JWTs, bearer and basic credentials, OpenAI-style ``sk-``
  keys, AWS access key ids (``AKIA``...), Vault tokens (``hvs.``...), PEM blocks, and the exact
  values of the secrets the sidecar loaded from files, wherever they appear (exception
  messages included).

Pure: a :class:`Redactor` is an immutable value built from the known secret values. It lives in
``agentgov.audit`` (below the sidecar and the operator) because both redact what they record.
"""

from __future__ import annotations

import logging
import re
import traceback
from collections.abc import Iterable, Mapping
from typing import Final

REDACTED: Final = "[REDACTED]"
# Secrets shorter than this are not searched for by value (they would match everywhere).
MIN_KNOWN_SECRET_CHARS: Final = 8

# Whole words of a key name that mark a credential.
_SENSITIVE_WORDS: Final = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "secrets", "token", "authorization",
    "auth", "cookie", "cookies", "credential", "credentials", "apikey", "jwt", "bearer",
    "signature", "sig", "otp", "pin", "session", "sessionid", "privatekey", "ssn",
})
# Adjacent word pairs that mark a credential even though each word alone does not.
_SENSITIVE_PAIRS: Final = frozenset({
    ("api", "key"), ("private", "key"), ("access", "key"), ("secret", "key"), ("client", "secret"),
    ("signing", "key"), ("set", "cookie"), ("x", "api"),
})

_CAMEL: Final = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SPLIT: Final = re.compile(r"[^a-zA-Z0-9]+")

_PATTERNS: Final = (
    # PEM blocks (keys, certificates) first: they may contain anything else.
    re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?(?:-----END [A-Z0-9 ]+-----|\Z)", re.DOTALL),
    # JWTs and other JWS/JWE compact tokens: base64url JSON header starting with {" (eyJ).
    re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){0,3}"),
    # Authorization header values.
    re.compile(r"(?i)\b(bearer|basic|token)\s+[A-Za-z0-9._~+/=-]{8,}"),
    # OpenAI / Anthropic style keys: sk-..., sk-proj-..., sk-ant-...
    re.compile(r"\bsk-[A-Za-z0-9_-]{16,}"),
    # AWS access key ids (long-term and temporary).
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    # HashiCorp Vault tokens (service, batch, recovery) and legacy s. tokens.
    re.compile(r"\bhv[sbr]\.[A-Za-z0-9_-]{20,}"),
    # GitHub and Slack tokens, common in tool credentials.
    re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}"),
    re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
)
# Secrets passed in query strings, form bodies or messages: ?api_key=..., token: ...; the name
# must *end* with the credential word (``max_tokens: 100`` and ``auth.leewaySeconds: ...`` stay).
_ASSIGNMENT: Final = re.compile(
    r"(?i)\b([a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|signature"
    r"|authorization|cookie|credentials?))(?![a-z0-9])(\s*[=:]\s*)(\"[^\"]*\"|'[^']*'|[^\s&,;\"']+)"
)


def key_words(name: str) -> list[str]:
    """``X-Api-Key`` -> ["x", "api", "key"]; ``clientSecret`` -> ["client", "secret"]."""
    return [w.lower() for w in _SPLIT.split(_CAMEL.sub("_", name)) if w]


def is_sensitive_key(name: str) -> bool:
    words = key_words(name)
    if any(w in _SENSITIVE_WORDS for w in words):
        return True
    if any(pair in _SENSITIVE_PAIRS for pair in zip(words, words[1:])):
        return True
    joined = "".join(words)
    return any(marker in joined for marker in ("apikey", "privatekey", "accesskey", "clientsecret"))


class Redactor:
    """Replaces credentials by ``[REDACTED]``; the known secret values are searched for literally."""

    __slots__ = ("_known",)

    def __init__(self, known_secrets: Iterable[str] = ()) -> None:
        values = {s for s in known_secrets if len(s) >= MIN_KNOWN_SECRET_CHARS}
        # Longest first, so a secret containing another is replaced whole.
        self._known: tuple[str, ...] = tuple(sorted(values, key=len, reverse=True))

    def __repr__(self) -> str:
        return f"Redactor({len(self._known)} known secrets)"

    def text(self, value: str) -> str:
        for secret in self._known:
            if secret in value:
                value = value.replace(secret, REDACTED)
        for pattern in _PATTERNS:
            value = pattern.sub(REDACTED, value)
        return _ASSIGNMENT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", value)

    def value(self, value: object, _depth: int = 0) -> object:
        """A copy of a JSON-like value with credentials replaced, at any depth."""
        if _depth > 32:
            return REDACTED  # deeper than any record we build: refuse rather than recurse forever
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {
                str(k): REDACTED if is_sensitive_key(str(k)) else self.value(v, _depth + 1)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple | set | frozenset):
            return [self.value(v, _depth + 1) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.text(str(value))


class RedactingFilter(logging.Filter):
    """A logging filter for handlers: formats each record, redacts it, drops the raw arguments.

    Installed on the command line's handler, so aiohttp's and the libraries' records pass
    through it too; the sidecar's own log calls redact what they log in the first place.
    """

    def __init__(self, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.redactor = redactor or Redactor()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            record.exc_info = None
            record.exc_text = None
        record.msg = self.redactor.text(message)
        record.args = None
        return True
