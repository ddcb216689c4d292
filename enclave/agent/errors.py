"""Errors the agent reports to people as one clear line."""

from __future__ import annotations


class AgentError(Exception):
    """Enrolment, renewal or state-directory failure."""


class PinMismatch(AgentError):
    """The platform presented a TLS key other than the one pinned in the token."""
