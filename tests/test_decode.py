"""Our batch decoder against the reference decoders, on real logs of the unmodified GMX v1 Vault."""

from __future__ import annotations

import random
from decimal import Decimal

import eth_abi
import pytest
from web3 import Web3

from indexer.abi import decode_logs, load_abi_dir, topic_of
from indexer.provider_errors import parse_range_error
from indexer.rpc import as_logs
from indexer.store import decimal18_array, to_decimal18
from tests.helpers import ROOT, logs_of

pytestmark = pytest.mark.unit

ABI = load_abi_dir(ROOT / "indexer" / "abis" / "gmx_v1")
#: topic0s as published in ../shared/protocols.md section 1.2
PUBLISHED = {
    "IncreasePosition": "0x2fe68525253654c21998f35787a8d0f361905ef647c854092430ab65f2f15022",
    "DecreasePosition": "0x93d75d64d1f84fc6f430a64fc578bdd4c1e090e90ea2d51773e626d19de56d30",
    "LiquidatePosition": "0x2e1f85a64a2f22cf2f0c42584e7c919ed4abe8d53675cff0f62bf1e95a1c676f",
    "UpdatePosition7": "0x25e8a331a7394a9f09862048843323b00bdbada258f524f5ce624a45bf00aabb",
    "UpdatePosition8": "0x20853733b590dce729d9f4628682ebd9a34d2354e72679e66f43a008fc03b773",
    "ClosePosition": "0x73af1d417d82c240fdb6d319b34ad884487c6bf2845d98980cc52ad9171cb455",
    "UpdateFundingRate": "0xa146fc154e1913322e9817d49f0d5c37466c24326e15de10e739a948be815eab",
}


def test_abi_topics_match_published_signatures():
    for name, topic in PUBLISHED.items():
        ev = ABI.by_topic[topic]
        assert ev.name == name.rstrip("78")
        assert topic_of(ev.signature) == topic
    assert len([e for e in ABI.by_topic.values() if e.name == "UpdatePosition"]) == 2


def test_batch_decoder_equals_web3_on_every_recorded_vault_log(gmx_v1_logs, gmx_v1_truth):
    vault = gmx_v1_truth["contracts"]["Vault"].lower()
    logs = [lg for lg in gmx_v1_logs if lg["address"] == vault and lg["topics"][0] in ABI.by_topic]
    assert len(logs) == 2047  # every Vault log decodes with the real ABI
    decoded = decode_logs(as_logs(logs), ABI)
    assert decoded.failures == []
    contract = Web3().eth.contract(abi=[e for e in __import__("json").loads(
        (ROOT / "indexer/abis/gmx_v1/Vault.json").read_text()) if e["type"] == "event"])
    checked = 0
    for name, groups in decoded.events.items():
        event = getattr(contract.events, name)()
        for cols in groups:
            for i, row in enumerate(cols.rows):
                ref = event.process_log({**logs[row], "topics": [bytes.fromhex(t[2:]) for t in
                                                                 logs[row]["topics"]],
                                         "data": bytes.fromhex(logs[row]["data"][2:]),
                                         "blockNumber": int(logs[row]["blockNumber"], 16),
                                         "logIndex": int(logs[row]["logIndex"], 16),
                                         "transactionIndex": 0, "blockHash": logs[row]["blockHash"],
                                         "transactionHash": logs[row]["transactionHash"],
                                         "address": Web3.to_checksum_address(logs[row]["address"])})
                for field, values in cols.fields.items():
                    want = ref["args"][field]
                    if isinstance(want, bytes):
                        want = "0x" + want.hex()
                    elif isinstance(want, str):
                        want = want.lower()
                    assert values[i] == want, (name, field)
                checked += 1
    assert checked == 2047


def test_arbitrum_seven_argument_update_position_decodes():
    values = [b"\x11" * 32, 5 * 10**35, 10**34, 3000 * 10**30, 7, 10**18, -(10**31)]
    types = ["bytes32", "uint256", "uint256", "uint256", "uint256", "uint256", "int256"]
    log = {"topics": [PUBLISHED["UpdatePosition7"]], "data": "0x" + eth_abi.encode(types, values).hex()}
    d = decode_logs(logs_of(log), ABI)
    cols = d.events["UpdatePosition"][0]
    assert cols.fields["realisedPnl"] == [-(10**31)] and "markPrice" not in cols.fields
    assert cols.fields["key"] == ["0x" + "11" * 32]


@pytest.mark.parametrize("data, reason", [
    ("0x" + "00" * 31, "data is 31 bytes"),
    ("0x" + "ff" * 32 * 9, "address word has non-zero high bytes"),
])
def test_undecodable_logs_are_reported_not_dropped(data, reason):
    good = {"topics": [PUBLISHED["UpdateFundingRate"]], "data": "0x" + "00" * 64}
    bad = {"topics": [PUBLISHED["IncreasePosition"]], "data": data}
    unknown = {"topics": ["0x" + "ab" * 32], "data": "0x"}
    d = decode_logs(logs_of(good, bad, unknown), ABI)
    assert [r for r, _ in d.failures] == [1, 2]
    assert reason in d.failures[0][1] and "unknown topic0" in d.failures[1][1]
    assert d.events["UpdateFundingRate"][0].rows == [0]


@pytest.mark.parametrize("message, data, suggested", [
    ("block range too large: requested 500 blocks, max is 50", None, 50),
    ("query returned more than 10000 results", {"from": "0x10", "to": "0x1f"}, 16),
    (("Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range "
      "and no limit on the response size, or you can request any block range with a cap of 10K "
      "logs in the response. Based on your parameters, this block range should work: "
      "[0x1, 0x3e8]"), None, 1000),
    ("eth_getLogs is limited to a 1000 range", None, 1000),
    ("query returned more than 20 results", None, None),
])
def test_provider_range_errors_are_recognised(message, data, suggested):
    err = parse_range_error(-32005, message, data)
    assert err is not None and err.suggested == suggested


def test_other_errors_are_not_range_errors():
    assert parse_range_error(-32000, "header not found", None) is None


@pytest.mark.parametrize("raw, decimals, text", [
    (10**30, 30, "1.000000000000000000"),
    (-(123456789 * 10**24), 30, "-123.456789000000000000"),
    (1, 30, "0.000000000000000000"),
    (-1, 30, "0.000000000000000000"),
    (2**256 - 1, 30, None),  # does not fit DECIMAL(38,18): quarantined, never wrapped
    (5, 6, "0.000005000000000000"),
])
def test_exact_usd_normalisation(raw, decimals, text):
    assert to_decimal18(raw, decimals) == text


def test_the_stores_bulk_decimal_conversion_equals_the_python_one():
    """The ledger's DECIMAL(38,18) columns are built in bulk (scaled integers reinterpreted as
    Arrow decimals); they must equal :func:`to_decimal18` digit for digit, truncation, sign,
    unknown decimals and overflow included."""
    rng = random.Random(7)
    cases = [(10**30, 30), (-(123456789 * 10**24), 30), (1, 30), (-1, 30), (0, 30), (0, 6),
             (2**256 - 1, 30), (-(2**255), 30), (10**50 - 1, 30), (10**50, 30), (5, 6),
             (-5, 0), (10**20 - 1, 0), (10**20, 0), (10**19, 18), (123, 18), (-(10**12), 30)]
    for _ in range(3000):
        d = rng.choice([0, 6, 8, 18, 30, 36])
        raw = rng.randint(0, 10 ** rng.randint(0, 60))
        cases.append((raw if rng.random() < 0.5 else -raw, d))
    values = [r for r, _ in cases] + [None, 5]
    scales = [d for _, d in cases] + [30, None]
    per_row, bad = decimal18_array(values, scales)
    want = [to_decimal18(r, d) for r, d in cases] + [None, None]
    assert bad == [i for i, w in enumerate(want[:-2]) if w is None]
    assert per_row.to_pylist() == [None if w is None else Decimal(w) for w in want]
    for d in (30, 6, 18):  # one scale for the whole column
        got, bad = decimal18_array([r for r, _ in cases], d)
        want = [to_decimal18(r, d) for r, _ in cases]
        assert bad == [i for i, w in enumerate(want) if w is None]
        assert got.to_pylist() == [None if w is None else Decimal(w) for w in want]
