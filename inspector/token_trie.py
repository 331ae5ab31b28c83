"""The token sequences a constrained decode may write, as a trie over token ids.

A model trained by ``inspector train`` explains a defect in the recipe's form ("<class>:
<description>, <region>, <size>", ``inspector.explanation_text``). The class words follow from
the verdict's letter and are forced; the region and size are chosen among the phrases training
taught, each greedy step taking the best of the tokens that continue one of them (constrained
decoding, as structured-output engines do). The choice among those few tokens is what training
optimises (``inspector.training.objective``), and no decode can write a place that is not one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TokenTrie:
    """Every prefix of the allowed sequences -> the token ids that may follow it."""

    following: Mapping[tuple[int, ...], tuple[int, ...]]

    @classmethod
    def of(cls, sequences: Iterable[Sequence[int]]) -> TokenTrie:
        """The trie of ``sequences``; each should end in a stop id, so a decode ends with it."""
        following: dict[tuple[int, ...], set[int]] = {}
        for sequence in sequences:
            ids = tuple(int(token) for token in sequence)
            for k, token in enumerate(ids):
                following.setdefault(ids[:k], set()).add(token)
        if not following:
            raise ValueError("a token trie needs at least one non-empty sequence")
        return cls({prefix: tuple(sorted(ids)) for prefix, ids in following.items()})

    def allowed(self, prefix: Sequence[int]) -> tuple[int, ...]:
        """The ids that may follow ``prefix`` (empty: the prefix is not in the trie or is complete)."""
        return self.following.get(tuple(prefix), ())
