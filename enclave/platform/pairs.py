"""A set of pairs of system names, indexed by name (the control hub's introduced and dormant
pairs): ``of(name)`` is the pairs one system is in, without a scan of every pair."""

from __future__ import annotations

from collections.abc import Iterator

Pair = frozenset[str]


class PairSet:
    def __init__(self) -> None:
        self.pairs: set[Pair] = set()
        self._by_name: dict[str, set[Pair]] = {}

    def add(self, pair: Pair) -> None:
        if pair in self.pairs:
            return
        self.pairs.add(pair)
        for name in pair:
            self._by_name.setdefault(name, set()).add(pair)

    def discard(self, pair: Pair) -> None:
        if pair not in self.pairs:
            return
        self.pairs.discard(pair)
        for name in pair:
            mine = self._by_name.get(name)
            if mine is not None:
                mine.discard(pair)
                if not mine:
                    del self._by_name[name]

    def of(self, name: str) -> set[Pair]:
        """The pairs ``name`` is in (a copy)."""
        return set(self._by_name.get(name, ()))

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs

    def __iter__(self) -> Iterator[Pair]:
        return iter(list(self.pairs))

    def __len__(self) -> int:
        return len(self.pairs)
