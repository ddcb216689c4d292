"""Errors the platform turns into clear HTTP/CLI responses."""

from __future__ import annotations


class StoreError(Exception):
    """The database cannot be opened, is corrupt, or has an unknown schema version."""


class ApiError(Exception):
    """A request the platform refuses; ``status`` is the HTTP status to return."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class InitError(Exception):
    """A platform setting given on the command line is unusable (init, urls)."""
