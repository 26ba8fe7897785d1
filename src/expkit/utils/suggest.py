"""Did-you-mean: the option closest to a misspelled word, by edit distance with swapped
neighbours counting as one edit (`val_mea` is `val_mae`, not `val_mse`) and case ignored
(`GRU` is `gru`)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def edits(a: str, b: str) -> int:
    """The optimal-string-alignment distance: insertions, deletions, substitutions and swaps
    of two neighbouring characters, one edit each."""
    rows = [list(range(len(b) + 1))]
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = 0 if a[i - 1] == b[j - 1] else 1
            row[j] = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], rows[-2][j - 2] + 1)
        rows.append(row)
    return rows[-1][-1]


def closest(word: str, options: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The option a misspelled `word` most likely meant (None when none is close): the same
    word in another case first, then the fewest edits (case aside) among the options within a
    third of the word's length, or difflib's similarity of at least `cutoff`; ties go to
    difflib's similarity."""
    choices = list(dict.fromkeys(options))
    lower = word.lower()
    for option in choices:
        if option.lower() == lower:
            return option

    def score(option: str) -> tuple[int, float]:
        return (edits(lower, option.lower()),
                -difflib.SequenceMatcher(None, lower, option.lower()).ratio())

    near = [o for o in choices if edits(lower, o.lower()) <= max(1, len(word) // 3)
            or difflib.SequenceMatcher(None, lower, o.lower()).ratio() >= cutoff]
    return min(near, key=score) if near else None
