"""The dydx_v4 adapter and the ABCI event decoding on hand-built block_results (the chain's own
event layout: x/clob/types/events.go, x/subaccounts/types/events.go, x/epochs/types/events.go).

Expected numbers are worked out by hand from the fills (quantums x 10^atomic_resolution, quote
quantums x 1e-6), never read back from the adapter."""

from __future__ import annotations

import base64
import json
from fractions import Fraction

from indexer.abci import block_records, decode_events, load_event_schema
from indexer.adapters import dydx_v4
from indexer.adapters.base import AdapterContext
from indexer.config import default_abi_dir
from indexer.types import LogMeta, PreviousState

SCHEMA = load_event_schema(default_abi_dir("dydx_v4"))
ALICE, BOB, CAROL = "dydx1alice", "dydx1bob", "dydx1carol"
BTC, ETH = 0, 1
#: perpetual -> base decimals (-atomic_resolution): BTC -10, ETH -9 at mainnet genesis
DECIMALS = {"0": 10, "1": 9}
MARKETS = {"0": ("BTC-USD", "", ""), "1": ("ETH-USD", "", "")}
USD = 10**18


def match(taker: tuple[str, int], maker: tuple[str, int], perp: int, taker_base: int,
          quote: int, taker_fee: int = 0, maker_fee: int = 0, liquidation: bool = False,
          deleverage: bool = False, insurance: int = 0) -> dict:
    """A match event as the chain writes it: the taker buys ``taker_base`` (negative: sells) for
    ``quote`` quote quantums; fees and the insurance payment come out of the quote deltas."""
    buy = taker_base > 0
    taker_quote = (-quote if buy else quote) - taker_fee - insurance
    maker_quote = (quote if buy else -quote) - maker_fee
    attrs = [
        ("taker_subaccount", taker[0]), ("taker_subaccount_number", str(taker[1])),
        ("maker_subaccount", maker[0]), ("maker_subaccount_number", str(maker[1])),
        ("taker_order_fee_quote_quantums", str(taker_fee)),
        ("maker_order_fee_quote_quantums", str(maker_fee)),
        ("taker_quote_balance_delta_quote_quantums", str(taker_quote)),
        ("maker_quote_balance_delta_quote_quantums", str(maker_quote)),
        ("taker_perpetual_quantums_delta_base_quantums", str(taker_base)),
        ("maker_perpetual_quantums_delta_base_quantums", str(-taker_base)),
        ("insurance_fund_delta_quote_quantums", str(insurance)),
        ("is_liquidation", "true" if liquidation else "false"),
        ("is_deleverage", "true" if deleverage else "false"), ("perpetual_id", str(perp)),
        ("taker_builder_address", ""), ("maker_builder_address", ""),
        ("taker_builder_fee_quantums", "0"), ("maker_builder_fee_quantums", "0"),
        ("taker_order_router_address", ""), ("maker_order_router_address", ""),
        ("taker_order_router_fee_quote_quantums", "0"),
        ("maker_order_router_fee_quote_quantums", "0")]
    return event("match", attrs)


def event(kind: str, attrs: list[tuple[str, str]], encode: bool = False) -> dict:
    def enc(text: str) -> str:
        return base64.b64encode(text.encode()).decode() if encode else text

    return {"type": kind, "attributes": [{"key": enc(k), "value": enc(v), "index": True}
                                         for k, v in attrs]}


def records(blocks: list[tuple[int, list[dict], list[dict]]]) -> list:
    """Event records of blocks given as (height, tx events, block events); one tx per block."""
    out = []
    for height, tx_events, block_events in blocks:
        tx = base64.b64encode(f"tx{height}".encode()).decode()
        results = {"height": str(height), "txs_results": [{"code": 0, "events": tx_events}],
                   "finalize_block_events": block_events}
        out += block_records(height, 1_700_000_000 + height, f"H{height}", [tx], results,
                             set(SCHEMA.names))
    return out


def adapt(recs, previous=None, chain_state=None, open_interest=None, open_interest_from=0,
          carried=None):
    meta = LogMeta.from_logs(recs)
    decoded = decode_events(recs, SCHEMA)
    ctx = AdapterContext(1, {}, {}, dict(MARKETS), dict(DECIMALS), previous or {},
                         chain_state=chain_state or {}, open_interest=open_interest or {},
                         open_interest_from=open_interest_from,
                         carried={} if carried is None else carried)
    return dydx_v4.to_changes(decoded, meta, ctx), decoded


def rows(out) -> list[dict]:
    c = out.changes
    return [{"key": c.position_key[i], "kind": c.kind[i], "is_long": c.is_long[i],
             "size_delta": c.size_delta[i], "size_after": c.size_after[i],
             "tokens_after": c.size_after_tokens[i], "entry": c.entry_price[i],
             "price": c.price[i], "fee": c.fee[i]} for i in range(len(c.row))]


def test_open_add_reduce_flip_close_follow_the_fills():
    # 0.5 BTC at $60,000, then 0.25 BTC at $66,000, then Alice sells 0.5 BTC at $70,000,
    # then sells 0.75 BTC at $50,000 (a flip to 0.5 BTC short), then buys it back at $40,000.
    half, quarter = 5 * 10**9, 25 * 10**8
    recs = records([
        (10, [match((ALICE, 0), (BOB, 0), BTC, half, 30_000 * 10**6, taker_fee=15 * 10**6,
                    maker_fee=-3 * 10**6)], []),
        (11, [match((ALICE, 0), (BOB, 0), BTC, quarter, 16_500 * 10**6)], []),
        (12, [match((ALICE, 0), (CAROL, 1), BTC, -half, 35_000 * 10**6)], []),
        (13, [match((ALICE, 0), (CAROL, 1), BTC, -3 * quarter, 37_500 * 10**6)], []),
        (14, [match((ALICE, 0), (BOB, 0), BTC, half, 20_000 * 10**6)], []),
    ])
    out, _ = adapt(recs)
    assert out.rejected == []
    alice = [r for r in rows(out) if r["key"] == f"{ALICE}/0/0"]
    assert [r["kind"] for r in alice] == ["increase", "increase", "decrease", "increase", "close"]
    assert [r["is_long"] for r in alice] == [True, True, True, False, False]
    assert [r["tokens_after"] for r in alice] == [half, 3 * quarter, quarter, half, 0]
    # entry: 60,000; (0.5 x 60,000 + 0.25 x 66,000) / 0.75 = 62,000; kept; the flip's 50,000
    assert [r["entry"] for r in alice] == [60_000 * USD, 62_000 * USD, 62_000 * USD,
                                           50_000 * USD, 0]
    assert [r["price"] for r in alice] == [p * USD for p in (60_000, 66_000, 70_000, 50_000,
                                                              40_000)]
    # USD sizes at each fill's price: 30,000; 0.75 x 66,000; 0.25 x 70,000; 0.5 x 50,000; 0
    assert [r["size_after"] for r in alice] == [30_000 * USD, 49_500 * USD, 17_500 * USD,
                                                25_000 * USD, 0]
    assert alice[0]["size_delta"] == 30_000 * USD and alice[2]["size_delta"] == -35_000 * USD
    assert alice[3]["size_delta"] == 25_000 * USD  # a flip: the new side's whole size
    assert alice[0]["fee"] == 15 * USD
    bob = [r for r in rows(out) if r["key"] == f"{BOB}/0/0"]
    assert bob[0]["fee"] == -3 * USD and bob[0]["is_long"] is False  # a maker rebate
    assert [r["tokens_after"] for r in bob] == [half, 3 * quarter, 5 * quarter]  # short


def test_prior_state_continues_across_batches():
    key = f"{ALICE}/0/1"
    prev = {key: PreviousState(True, 2 * 10**9, None, None, "1", None, 0, None, 3_000 * USD)}
    fill = records([(20, [match((ALICE, 0), (BOB, 0), ETH, 10**9, 3_300 * 10**6)], [])])
    # Alice holds 2 ETH at $3,000 (opened in one fill) and buys 1 more at $3,300: entry 3,100
    carried = {key: 2 * 10**9}
    out, _ = adapt(fill, previous=prev, carried=carried)
    alice = rows(out)[0]
    assert alice["tokens_after"] == 3 * 10**9 and alice["entry"] == 3_100 * USD
    assert carried == {key: 3 * 10**9, f"{BOB}/0/1": 10**9}
    # had she opened 4 ETH and sold 2 since, the Indexer weighs by all 4 opened (sumOpen):
    # (4 x 3,000 + 1 x 3,300) / 5 = 3,060
    out, _ = adapt(fill, previous=prev, carried={key: 4 * 10**9})
    assert rows(out)[0]["entry"] == 3_060 * USD


def test_sum_open_is_rebuilt_from_a_positions_history():
    long, short = True, False
    history = {
        "a": [(long, 4), (long, 2), (long, 3)],       # opened 4, sold 2, bought 1: 5
        "b": [(long, 4), (short, 3), (short, 5)],     # flipped by a fill of 7, then 2 more: 9
        "c": [(long, 4), (long, 0), (short, 1)],      # closed, then a new short of 1: 1
    }
    assert dydx_v4.carried_from_history(history) == {"a": 5, "b": 9, "c": 1}


def test_liquidation_and_deleverage_mark_the_liquidated_side():
    recs = records([
        (30, [match((ALICE, 0), (BOB, 0), ETH, 2 * 10**9, 6_000 * 10**6)], []),
        # Alice is liquidated: sells 1 ETH to Bob at $2,500, paying $10 to the insurance fund
        (31, [match((ALICE, 0), (BOB, 0), ETH, -(10**9), 2_500 * 10**6, liquidation=True,
                    insurance=10 * 10**6)], []),
        # then deleveraged against Carol for the rest
        (32, [match((ALICE, 0), (CAROL, 0), ETH, -(10**9), 2_400 * 10**6, deleverage=True)],
         []),
    ])
    out, _ = adapt(recs, chain_state={("clob_pairs", 32): [
        {"id": 1, "perpetual_clob_metadata": {"perpetual_id": 1}, "status": "STATUS_ACTIVE"}]})
    r = rows(out)
    alice = [x for x in r if x["key"] == f"{ALICE}/0/1"]
    assert [x["kind"] for x in alice] == ["increase", "liquidation", "liquidation"]
    assert [x["tokens_after"] for x in alice] == [2 * 10**9, 10**9, 0]
    assert alice[1]["fee"] == 10 * USD and alice[1]["price"] == 2_500 * USD
    assert [x["kind"] for x in r if x["key"] != f"{ALICE}/0/1"][-2:] == ["decrease", "increase"]


def test_final_settlement_closes_without_liquidating():
    recs = records([
        (40, [match((ALICE, 0), (BOB, 0), ETH, 10**9, 3_000 * 10**6)], []),
        (41, [match((ALICE, 0), (BOB, 0), ETH, -(10**9), 2_000 * 10**6, deleverage=True)], []),
    ])
    settling = {("clob_pairs", 41): [{"id": 1, "perpetual_clob_metadata": {"perpetual_id": 1},
                                      "status": "STATUS_FINAL_SETTLEMENT"}]}
    out, _ = adapt(recs, chain_state=settling)
    assert [x["kind"] for x in rows(out)][2:] == ["close", "close"]


def test_settled_funding_both_key_forms():
    old = event("settled_funding", [("subaccount", ALICE), ("subaccount", "3"),
                                    ("perpetual_id", "0"),
                                    ("funding_paid_quote_quantums", "-1250000")])
    new = event("settled_funding", [("subaccount", BOB), ("subaccount_number", "0"),
                                    ("perpetual_id", "1"),
                                    ("funding_paid_quote_quantums", "7")])
    out, _ = adapt(records([(50, [old, new], [])]))
    assert out.rejected == []
    assert [(p.position_key, p.amount) for p in out.payments] == [
        (f"{ALICE}/3/0", -1_250_000 * 10**12), (f"{BOB}/0/1", 7 * 10**12)]


def test_funding_tick_reads_index_and_open_interest():
    tick = event("new_epoch", [("epoch_info_name", "funding-tick"), ("epoch_number", "9"),
                               ("epoch_start_tick_time", "0"), ("epoch_start_block_time", "0"),
                               ("epoch_start_block", "60"), ("mode", "BeginBlock")])
    sample = event("new_epoch", [("epoch_info_name", "funding-sample"), ("epoch_number", "90"),
                                 ("epoch_start_tick_time", "0"), ("epoch_start_block_time", "0"),
                                 ("epoch_start_block", "60")])
    perps = [{"params": {"id": 0, "ticker": "BTC-USD", "atomic_resolution": -10},
              "funding_index": "-12", "open_interest": "700"},
             {"params": {"id": 1, "ticker": "ETH-USD", "atomic_resolution": -9},
              "funding_index": "5", "open_interest": "0"}]
    out, decoded = adapt(records([(60, [], [tick, sample])]),
                         chain_state={("perpetuals", 60): perps}, open_interest={"0": 500},
                         open_interest_from=60)
    assert list(zip(out.funding.market, out.funding.rate, strict=True)) == [("0", -12), ("1", 5)]
    oi = out.open_interest
    assert list(zip(oi.market, oi.delta, oi.next_value, strict=True)) == [("0", 200, 700),
                                                                           ("1", 0, 0)]
    # below open_interest_from the chain's figure is not read
    out, _ = adapt(records([(60, [], [tick])]), chain_state={("perpetuals", 60): perps},
                   open_interest_from=61)
    assert out.open_interest.market == [] and len(out.funding.market) == 2
    assert dydx_v4.state_needed(decoded, LogMeta.from_logs(records([(60, [], [tick])])),
                                AdapterContext(1, {}, markets=dict(MARKETS),
                                               decimals=dict(DECIMALS)), 99) == [
        ("perpetuals", 60)]


def test_malformed_events_are_rejected_with_reasons():
    bad_amount = match((ALICE, 0), (BOB, 0), BTC, 10**9, 6_000 * 10**6)
    bad_amount["attributes"][8]["value"] = "12x"
    no_perp = match((ALICE, 0), (BOB, 0), BTC, 10**9, 6_000 * 10**6)
    del no_perp["attributes"][13]
    lopsided = match((ALICE, 0), (BOB, 0), BTC, 10**9, 6_000 * 10**6)
    lopsided["attributes"][9]["value"] = "-5"
    unknown = match((ALICE, 0), (BOB, 0), 7, 10**9, 6_000 * 10**6)
    out, _ = adapt(records([(70, [bad_amount, no_perp, lopsided, unknown], [])]))
    reasons = [r for _, r in sorted(out.rejected)]
    assert reasons == [
        "match event taker_perpetual_quantums_delta_base_quantums is '12x', not an integer",
        "match event lacks perpetual_id",
        "match event taker delta 1000000000 and maker delta -5 do not offset",
        "match event names perpetual 7, which the chain does not list"]
    assert len(out.changes) == 0


def test_base64_attributes_and_failed_transactions():
    plain = match((ALICE, 0), (BOB, 0), BTC, 10**9, 6_000 * 10**6)
    encoded = event("match", [(a["key"], a["value"]) for a in plain["attributes"]], encode=True)
    tx = base64.b64encode(b"tx").decode()
    results = {"height": "80", "txs_results": [
        {"code": 5, "events": [plain]},  # failed: changed nothing
        {"code": 0, "events": [{"type": "message", "attributes": []}, encoded]}]}
    recs = block_records(80, 1, "H80", [tx, tx], results, set(SCHEMA.names))
    assert len(recs) == 1 and int(recs[0].log_index, 16) == 2  # the block's third event
    assert json.loads(recs[0].data) == [[a["key"], a["value"]] for a in plain["attributes"]]
    out, _ = adapt(recs)
    assert rows(out)[0]["entry"] == 60_000 * USD


def test_position_key_and_prices_for_a_positive_atomic_resolution():
    # a market quoted in whole units of 10 tokens (atomic_resolution +1: base decimals -1)
    decimals = dict(DECIMALS, **{"2": -1})
    recs = records([(90, [match((ALICE, 128), (BOB, 0), 2, 3, 15 * 10**6)], [])])
    meta, decoded = LogMeta.from_logs(recs), decode_events(recs, SCHEMA)
    ctx = AdapterContext(1, {}, {}, dict(MARKETS, **{"2": ("PEPE-USD", "", "")}), decimals, {})
    out = dydx_v4.to_changes(decoded, meta, ctx)
    r = rows(out)[0]
    # 3 quantums = 30 tokens for $15: $0.5 a token
    assert r["key"] == f"{ALICE}/128/2" and r["price"] == USD // 2 and r["size_after"] == 15 * USD
    assert Fraction(r["entry"], USD) == Fraction(1, 2)
