"""The mutual-intent rule and tag-policy expansion (pure).

Two systems A and B are introduced exactly when

    A holds a valid intent for B  and  B holds a valid intent for A
    and both are active (not pending / disabled / revoked) with an unexpired, unrevoked
    certificate.

An intent row is valid until its ``exp``. A tag policy (from tag:web to tag:db) makes the CA offer
each web system an intent for each db system and vice versa (connections are symmetric at L2, so
a policy grants both directions); each agent counter-signs the offer, which makes the rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class IntentRow:
    from_name: str
    to_name: str
    exp: int | None = None
    policy: str | None = None


@dataclass(frozen=True)
class SystemView:
    name: str
    tags: tuple[str, ...]
    usable: bool  # active and holds a current, unrevoked certificate


def selector_matches(selector: str, system: SystemView) -> bool:
    """``tag:NAME`` matches systems with that tag, ``name:X`` (or a bare name) one system,
    ``*`` every system."""
    if selector == "*":
        return True
    if selector.startswith("tag:"):
        return selector[4:] in system.tags
    if selector.startswith("name:"):
        return selector[5:] == system.name
    return selector == system.name


def mutual_pairs(
    intents: Iterable[IntentRow], systems: Iterable[SystemView], now: int
) -> set[frozenset[str]]:
    usable = {s.name for s in systems if s.usable}
    wants = {
        (r.from_name, r.to_name)
        for r in intents
        if (r.exp is None or now < r.exp) and r.from_name in usable and r.to_name in usable
    }
    return {frozenset((a, b)) for a, b in wants if a != b and (b, a) in wants}


def policy_offers(
    from_selector: str, to_selector: str, systems: Iterable[SystemView]
) -> set[tuple[str, str]]:
    """(subject, peer) pairs a policy offers: both directions between the two selections."""
    views = [s for s in systems if s.usable]
    left = [s.name for s in views if selector_matches(from_selector, s)]
    right = [s.name for s in views if selector_matches(to_selector, s)]
    out: set[tuple[str, str]] = set()
    for a in left:
        for b in right:
            if a != b:
                out.add((a, b))
                out.add((b, a))
    return out
