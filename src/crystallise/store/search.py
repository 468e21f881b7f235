"""Lexical search over items: SQLite FTS5 (bm25) and PostgreSQL tsvector (ts_rank).

A user's query is never passed to the search engine as syntax. It is cut into word
tokens (`\\w+`, so `"`, `*`, `(`, `:` and emoji fall away), each token is quoted, and
the tokens are OR-ed, so a query ranks items by how well they match any of its
words and can never raise a syntax error:

    'refund "policy" AND (EU)*'  ->  tokens ['refund', 'policy', 'and', 'eu']
    SQLite   items_fts MATCH '"refund" OR "policy" OR "and" OR "eu"'   ORDER BY bm25()
    Postgres tsv @@ to_tsquery('english', $$'refund' | 'policy' | 'and' | 'eu'$$)  ORDER BY ts_rank(.., 1) DESC

A query with no tokens at all matches nothing (the caller returns []). ts_rank's
normalisation 1 divides by log(document length), like bm25 prefers short matches.
Both sides stem English (porter / 'english'); PostgreSQL also drops stop words, so a
query made only of stop words ("the and") matches nothing there.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.sql import Select

from crystallise.store.schema import items

__all__ = ["MAX_TOKENS", "query_tokens", "ranked"]

TOKEN = re.compile(r"\w+")
# A query is a handful of words; longer texts (a whole prompt) are cut to keep the query cheap.
MAX_TOKENS = 64


def query_tokens(text: str) -> list[str]:
    """Distinct lower-cased word tokens of `text`, in order, at most MAX_TOKENS."""
    seen: dict[str, None] = {}
    for token in TOKEN.findall(text.lower()):
        seen.setdefault(token, None)
        if len(seen) >= MAX_TOKENS:
            break
    return list(seen)


def ranked(stmt: Select[tuple[object, ...]], dialect: str, tokens: list[str]) -> Select[tuple[object, ...]]:
    """`stmt` (a select over `items`) restricted to rows matching `tokens`, best match first."""
    if dialect == "postgresql":
        query = " | ".join(f"'{token}'" for token in tokens)
        tsquery = sa.func.to_tsquery(sa.literal_column("'english'::regconfig"), sa.bindparam("tsquery", query))
        tsv: sa.ColumnElement[object] = sa.literal_column("items.tsv")
        return stmt.where(tsv.op("@@")(tsquery)).order_by(
            sa.func.ts_rank(tsv, tsquery, 1).desc(), items.c.updated_at.desc(), items.c.rid.desc()
        )
    match = " OR ".join(f'"{token}"' for token in tokens)
    fts = sa.table("items_fts", sa.column("rowid"))
    return (
        stmt.join(fts, fts.c.rowid == items.c.rid)
        .where(sa.text("items_fts MATCH :fts_match").bindparams(fts_match=match))
        .order_by(sa.func.bm25(sa.literal_column("items_fts")), items.c.updated_at.desc(), items.c.rid.desc())
    )
