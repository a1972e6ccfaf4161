"""Full-text queries built from what a user typed, safe for both engines.

A search term is parsed here, never handed to the engine: SQLite FTS5 and
PostgreSQL's ``to_tsquery`` each have a query syntax, and a stray quote,
``*``, ``NEAR(`` or ``-`` in user input must not become a syntax error (a
500) or an operator the user did not mean. The parser understands a small,
web-search-like language — words (matched as prefixes), ``"quoted
phrases"``, ``-word`` to exclude, ``OR`` between two terms — and keeps only
letters and digits of every word, so what reaches the engine is built from
our own operators around plain alphanumeric words.

Indexed text goes through :func:`search_words` too, so the engine's parser
sees the same words on both sides (PostgreSQL's would otherwise read
``alice.smith`` as one host name and never match ``smith``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_WORD = re.compile(r"[^\W_]+")
# A quoted phrase, or a run of non-space characters (an optional leading "-").
_CHUNK = re.compile(r'(-?)"([^"]*)"?|(\S+)')


def search_words(text: str) -> list[str]:
    """The words of ``text``: runs of letters and digits, case-folded."""
    return _WORD.findall(text.casefold())


def index_text(text: str) -> str:
    """``text`` as the engines index it: its words, space-separated."""
    return " ".join(search_words(text))


@dataclass(frozen=True)
class Term:
    """One word (a prefix) or a phrase (its words in order, exact)."""

    words: tuple[str, ...]
    phrase: bool = False


@dataclass(frozen=True)
class Query:
    """All ``groups`` must match (each group: any of its terms), and none of ``excluded``."""

    groups: tuple[tuple[Term, ...], ...]
    excluded: tuple[Term, ...]

    @property
    def empty(self) -> bool:
        return not self.groups

    def highlight_words(self) -> list[str]:
        """The words a client should highlight in results."""
        seen: dict[str, None] = {}
        for group in self.groups:
            for term in group:
                for word in term.words:
                    seen.setdefault(word, None)
        return list(seen)

    def to_fts5(self) -> str:
        """An FTS5 MATCH expression (only valid when not :attr:`empty`)."""
        def term(t: Term) -> str:
            if t.phrase:
                return '"' + " ".join(t.words) + '"'
            # One "word" may be several (a chunk like foo*bar): all, as prefixes.
            return " AND ".join(f'"{w}"*' for w in t.words)

        def group(g: tuple[Term, ...]) -> str:
            return "(" + " OR ".join(f"({term(t)})" for t in g) + ")"

        out = " AND ".join(group(g) for g in self.groups)
        for t in self.excluded:
            out = f"({out}) NOT ({term(t)})"
        return out

    def to_tsquery(self) -> str:
        """A PostgreSQL ``to_tsquery`` text (only valid when not :attr:`empty`)."""
        def term(t: Term) -> str:
            if t.phrase:
                return "(" + " <-> ".join(t.words) + ")"
            return "(" + " & ".join(f"{w}:*" for w in t.words) + ")"

        parts = ["(" + " | ".join(term(t) for t in g) + ")" for g in self.groups]
        parts += [f"!{term(t)}" for t in self.excluded]
        return " & ".join(parts)


def parse_query(text: str) -> Query:
    """Parse a user's search term; never fails (unparseable parts are words)."""
    groups: list[list[Term]] = []
    excluded: list[Term] = []
    join_next = False
    for match in _CHUNK.finditer(text):
        negated, quoted, bare = match.group(1), match.group(2), match.group(3)
        if bare is not None:
            if bare == "OR":
                join_next = bool(groups)
                continue
            negated = "-" if bare.startswith("-") and len(bare) > 1 else ""
            words = tuple(search_words(bare))
            phrase = False
        else:
            words = tuple(search_words(quoted or ""))
            phrase = len(words) > 1
        if not words:
            continue
        term = Term(words, phrase)
        if negated:
            excluded.append(term)
            join_next = False
        elif join_next:
            groups[-1].append(term)
            join_next = False
        else:
            groups.append([term])
    return Query(tuple(tuple(g) for g in groups), tuple(excluded))
