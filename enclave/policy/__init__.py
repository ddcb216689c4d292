"""Mutual intent: signed intent statements, tag policies and the mutual-intent rule (sans-I/O)."""

from enclave.policy.intent import (
    INTENT_MAX_SKEW,
    IntentError,
    IntentStatement,
    decode_signed,
    encode_signed,
)
from enclave.policy.mutual import IntentRow, SystemView, mutual_pairs, selector_matches

__all__ = [
    "INTENT_MAX_SKEW",
    "IntentError",
    "IntentRow",
    "IntentStatement",
    "SystemView",
    "decode_signed",
    "encode_signed",
    "mutual_pairs",
    "selector_matches",
]
