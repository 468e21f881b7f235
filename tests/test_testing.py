"""crystallise.testing: the helpers tests/ and bench/ share (servers, JSONL reader, throwaway PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crystallise.errors import ValidationError
from crystallise.testing import PostgresServer, postgres_unavailable, read_jsonl


def test_read_jsonl_splits_on_newline_only(tmp_path: Path) -> None:
    rows = [{"text": "a\u2028b"}, {"text": "c\rd\x85e\u2029f"}, {"text": "g"}]
    path = tmp_path / "d.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows[:2]) + "\n\n" + json.dumps(rows[2]),
                    encoding="utf-8")
    assert list(read_jsonl(path)) == [(1, rows[0]), (2, rows[1]), (4, rows[2])]


def test_read_jsonl_names_the_bad_line_and_the_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"a": 1}\n{not json}\n', encoding="utf-8")
    with pytest.raises(ValidationError, match=r"line 2: not valid JSON .* one task"):
        list(read_jsonl(path, what="task"))
    with pytest.raises(ValidationError, match=r"no such data file: .*nope\.jsonl \(use --x\)"):
        list(read_jsonl(tmp_path / "nope.jsonl", hint="use --x"))


@pytest.mark.postgres
@pytest.mark.parametrize("durable", [False, True])
def test_the_throwaway_postgres_is_durable_only_when_asked(durable: bool) -> None:
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    import psycopg

    server = PostgresServer.start(durable=durable)
    try:
        with psycopg.connect(server.url()) as conn:
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                        for name in ("fsync", "synchronous_commit", "full_page_writes")}
    finally:
        server.stop()
    assert settings == dict.fromkeys(settings, "on" if durable else "off")
