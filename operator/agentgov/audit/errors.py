"""The audit package's errors: a setting or key it cannot use, and a log it cannot write.

Messages name the variable, file or field at fault; they never carry a key, a record's content
or a credential. The sidecar translates ``AuditUnavailable`` into its HTTP 503
``audit_unavailable`` at its error boundary. No I/O here.
"""

from __future__ import annotations


class AuditError(Exception):
    """Base of the audit package's errors."""


class AuditConfigError(AuditError):
    """A setting, key file or option the audit log cannot use; the message names it.

    ``variable`` is the environment variable at fault, when one is (``problem`` is then the
    message without it), so each program can report it in its own form.
    """

    def __init__(self, message: str, *, variable: str | None = None) -> None:
        self.variable = variable
        self.problem = message
        super().__init__(f"{variable}: {message}" if variable else message)


class AuditUnavailable(AuditError):
    """The log cannot be written (durably, in time): privileged operations must not proceed."""

    def __init__(self, message: str = "the audit log cannot be written") -> None:
        super().__init__(message)
