"""Errors meant for people: one sentence naming the thing and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem with the user's input; the CLI prints its message without a traceback and exits non-zero."""

    exit_code = 2


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """Return up to ``n`` candidates that look most like ``name`` (for "did you mean" hints)."""
    scored = []
    for cand in dict.fromkeys(candidates):
        whole = difflib.SequenceMatcher(None, name, cand).ratio()
        prefix = difflib.SequenceMatcher(None, name, cand[: len(name) + 1]).ratio()
        score = max(whole, prefix - 0.05)
        if score >= 0.6:
            scored.append((score, cand))
    scored.sort(key=lambda item: -item[0])
    return [cand for _, cand in scored[:n]]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return a " (did you mean ...?)" suffix for an unknown name, or an empty string."""
    hits = closest(name, candidates)
    if not hits:
        return ""
    return " (did you mean " + ", ".join(repr(h) for h in hits) + "?)"
