"""Near misses of a name: which known name a caller most likely meant. Pure.

Used wherever an unknown name would otherwise be lost or refused without a hint: an enqueue
body's fields over REST, a Python option, a setting in the TOML file.
"""

from __future__ import annotations

from collections.abc import Iterable


def near_miss(name: str, known: Iterable[str]) -> str | None:
    """The known name that ``name`` most likely misspells, or None: the same letters in another
    case or with ``_``/``-`` between words (``unique_id``, ``uniqueid`` for ``uniqueId``), or
    an edit distance of 1 (known names of up to 5 letters) or 2 (longer ones)."""
    folded = _fold(name)
    best: tuple[int, str] | None = None
    for candidate in sorted(known):
        if _fold(candidate) == folded:
            return candidate
        allowed = 1 if len(candidate) <= 5 else 2
        distance = _edit_distance(folded, _fold(candidate), allowed)
        if distance <= allowed and (best is None or distance < best[0]):
            best = (distance, candidate)
    return None if best is None else best[1]


def _fold(name: str) -> str:
    return name.replace("_", "").replace("-", "").lower()


def _edit_distance(a: str, b: str, limit: int) -> int:
    """Levenshtein distance of ``a`` and ``b``, or ``limit + 1`` once it is known to exceed
    ``limit``."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    previous = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i]
        for j, other in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char != other)))
        if min(current) > limit:
            return limit + 1
        previous = current
    return previous[-1]
