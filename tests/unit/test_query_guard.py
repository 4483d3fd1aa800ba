"""Analysts' SQL: what the guard refuses and why, its limits, the service's answers and token,
and the `query` command on a database file (no daemon, no node)."""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from indexer.client import QueryError, connect
from indexer.errors import ConfigError
from indexer.results import write_rows
from indexer.service import Service, serve, service_token
from indexer.store import (
    Limits,
    QueryRefused,
    QueryTimeout,
    ResultTooLarge,
    Store,
    read_arrow_stream,
    write_arrow_stream,
)
from tests.helpers import run_cli

pytestmark = pytest.mark.unit

BIG = Decimal("12345678901234567890.123456789012345678")  # 38 digits: beyond a float's 17


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "db.duckdb")
    s.con.execute("CREATE TABLE t AS SELECT range AS a, ?::DECIMAL(38,18) AS d FROM range(10)",
                  [str(BIG)])
    yield s
    s.close()


@pytest.mark.parametrize("sql, reason", [
    ("INSERT INTO t VALUES (1, 1)", "this one is INSERT"),
    ("UPDATE t SET a = 1", "this one is UPDATE"),
    ("CREATE TABLE x (a INT)", "this one is CREATE"),
    ("SET threads = 1", "this one is SET"),
    ("PRAGMA enable_profiling", "this one is PRAGMA"),
    ("COPY t TO '/tmp/t.csv'", "this one is COPY"),
    ("EXPORT DATABASE '/tmp/x'", "this one is EXPORT"),
    ("ATTACH '/tmp/x.duckdb'", "this one is ATTACH"),
    ("INSTALL httpfs", "this one is"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM read_text('/etc/hostname')", "file system operations are disabled"),
    ("SELECT * FROM glob('/etc/*')", "file system operations are disabled"),
    ("SELECT 1; SELECT 2", "one statement per query: the text holds 2"),
    ("", "no SQL statement given"),
    ("SELEC 1", "does not parse"),
])
def test_the_guard_refuses_with_its_reason(store, sql, reason):
    queries = store.read_only_queries()
    with pytest.raises(QueryRefused, match=reason.replace("(", r"\(").replace("*", r"\*")):
        with queries.run(sql) as result:
            list(result.rows())
    queries.close()
    # the writer goes on writing after the lock-down
    store.con.execute("INSERT INTO t VALUES (99, 1)")


def test_reads_are_exact_and_limits_hold(store):
    queries = store.read_only_queries(Limits(timeout=0.5, max_rows=5))
    with queries.run("SELECT d FROM t WHERE a < 3") as result:
        assert list(result.rows()) == [(BIG,)] * 3
    with pytest.raises(ResultTooLarge, match="more than 5 rows"):
        with queries.run("SELECT * FROM t") as result:
            list(result.rows())
    with queries.run("SELECT * FROM t", max_rows=2) as result:  # lower, never higher
        assert result.max_rows == 2
    with queries.run("SELECT * FROM t", max_rows=100) as result:
        assert result.max_rows == 5
    with pytest.raises(QueryTimeout, match="longer than 0.5 s"):
        with queries.run("SELECT count(*) FROM range(100000000000)") as result:
            list(result.rows())
    # a streamed Arrow answer carries the limit; a reader of a longer stream is told
    with queries.run("SELECT * FROM t", stream=True) as result:
        buf = io.BytesIO()
        write_arrow_stream(result, buf.write)
    table = read_arrow_stream(buf.getvalue())
    assert table.num_rows == 10 and table.column("d").to_pylist()[0] == BIG
    with queries.run("SELECT * FROM t", max_rows=3, stream=True) as result:
        buf = io.BytesIO()
        write_arrow_stream(result, buf.write)
    with pytest.raises(ResultTooLarge, match="more than 3 rows"):
        read_arrow_stream(buf.getvalue())
    queries.close()


def test_exact_raw_integers_arrive_as_decimal_text(store):
    """BIGNUM columns (the ``*_raw`` integers, e.g. 1e30-scaled GMX amounts) reach readers as
    their decimal digits, not as DuckDB's opaque bytes."""
    queries = store.read_only_queries(Limits(timeout=5, max_rows=5))
    raw = "-" + "9" * 45
    with queries.run(f"SELECT '{raw}'::BIGNUM AS r, 5::BIGNUM AS five, 1 AS n",
                     stream=True) as result:
        buf = io.BytesIO()
        write_arrow_stream(result, buf.write)
    assert read_arrow_stream(buf.getvalue()).to_pylist() == [{"r": raw, "five": "5", "n": 1}]
    with queries.run("SELECT 1::BIGNUM AS x, 2::BIGNUM AS x") as result:  # a self-join's a.x, b.x
        assert list(result.rows()) == [("1", "2")]
    queries.close()


def test_text_formats_keep_exact_amounts():
    out = io.StringIO()
    write_rows(["a", "d"], [(2**60, BIG), (None, Decimal("1.500"))], "jsonl", out)
    lines = [json.loads(x) for x in out.getvalue().splitlines()]
    assert lines == [{"a": str(2**60), "d": str(BIG)}, {"a": None, "d": "1.5"}]
    out = io.StringIO()
    write_rows(["a", "d"], [(1, BIG)], "json", out)
    assert json.loads(out.getvalue()) == {"columns": ["a", "d"], "rows": [[1, str(BIG)]]}
    out = io.StringIO()
    write_rows(["a", "d"], [(1, BIG)], "csv", out)
    assert out.getvalue() == f"a,d\n1,{BIG}\n"
    # a table wider than the terminal becomes one block per row: nothing is cut
    out = io.StringIO()
    write_rows(["market", "long_oi_usd", "short_oi_usd"], [("0x" + "ab" * 20, BIG, BIG)],
               "table", out, width=80)
    assert f"long_oi_usd  | {BIG}" in out.getvalue() and "0x" + "ab" * 20 in out.getvalue()
    assert max(len(line) for line in out.getvalue().splitlines()) <= 80


def test_the_service_answers_and_asks_off_loopback_for_a_token(store, monkeypatch):
    monkeypatch.delenv("PERP_INDEXER_TOKEN", raising=False)
    assert service_token("c.yaml", "127.0.0.1") is None
    with pytest.raises(ConfigError, match="PERP_INDEXER_TOKEN"):
        service_token("c.yaml", "0.0.0.0")
    monkeypatch.setenv("PERP_INDEXER_TOKEN", "s3cret")
    assert service_token("c.yaml", "0.0.0.0") == "s3cret"

    queries = store.read_only_queries(Limits(max_rows=1000))
    server = serve(Service(queries, token="s3cret"), "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/query?sql=SELECT+1", timeout=5)
        assert denied.value.code == 401
        denied.value.close()
        db = connect(url, token="s3cret")
        assert db.sql("SELECT a, d FROM t WHERE a = 1").fetchall() == [(1, BIG)]
        got = json.loads(db.text("SELECT a, d FROM t WHERE a < 2", "json"))
        assert got["rows"] == [[0, str(BIG)], [1, str(BIG)]] and got["row_count"] == 2
        assert got["types"] == ["BIGINT", "DECIMAL(38,18)"]
        assert db.text("SELECT a FROM t WHERE a < 2", "csv") == b"a\n0\n1\n"
        with pytest.raises(QueryError) as refused:
            db.sql("DROP TABLE t")
        assert refused.value.kind == "refused" and refused.value.status == 400
        assert "DROP" in str(refused.value)
        with pytest.raises(QueryError) as bad_format:
            db.text("SELECT 1", "xml")
        assert "one of json, jsonl, csv, arrow" in str(bad_format.value)
    finally:
        server.shutdown()
        server.server_close()
        queries.close()


def test_query_reads_the_file_with_unset_rpc_variables(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("NO_SUCH_RPC_URL", raising=False)
    with Store(tmp_path / "db.duckdb") as s:
        s.con.execute("CREATE TABLE t AS SELECT 1 AS a, ?::DECIMAL(38,18) AS d", [str(BIG)])
    cfg = tmp_path / "c.yaml"
    cfg.write_text("""database: db.duckdb
metrics_port: 0
chains:
  arb: { chain_id: 42161, rpc_url: "${NO_SUCH_RPC_URL}" }
protocols:
  - name: gmx_v1_arbitrum
    adapter: gmx_v1
    chain: arb
    contracts: { vault: { address: "0x489ee077994B6658eAfA855C308275EAd8097C4A", start_block: 1 } }
""")
    capsys.readouterr()
    assert run_cli("query", "--config", str(cfg), "SELECT * FROM t", "--format", "csv") == 0
    assert capsys.readouterr().out == f"a,d\n1,{BIG}\n"
    assert run_cli("query", "--config", str(cfg), "SELECT 1; SELECT 2") == 1
    assert "one statement per query" in capsys.readouterr().err
    out = tmp_path / "t.parquet"
    assert run_cli("query", "--config", str(cfg), "SELECT * FROM t", "--format", "parquet",
                   "--out", str(out)) == 0
    with Store(tmp_path / "other.duckdb") as s:
        assert s.arrow("SELECT 1").num_rows == 1
    import pyarrow.parquet as pq

    assert pq.read_table(out).column("d").to_pylist() == [BIG]
    # the backfill still needs the node: its variable is named
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    assert "NO_SUCH_RPC_URL" in capsys.readouterr().err
