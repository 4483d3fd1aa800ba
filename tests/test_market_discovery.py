"""Markets found at run time (Synthetix's MarketAdded): a market announced inside a range is
fetched from its announcing block to the range end, in as many requests as provider caps demand,
and never before it was announced."""

from __future__ import annotations

import itertools

import eth_abi
import pytest

from indexer.abi import topic_of
from indexer.config import load_config
from indexer.engine.fetch import fetch_logs
from indexer.engine.source import build_source
from indexer.errors import RangeTooLarge
from indexer.rpc import as_logs
from tests.helpers import write_config

pytestmark = pytest.mark.unit

MANAGER = "0x" + "aa" * 20
MARKET = "0x" + "bb" * 20
ADDED = topic_of("MarketAdded(address,bytes32,bytes32)")
MODIFIED = topic_of("PositionModified(uint256,address,uint256,int256,int256,uint256,uint256,"
                    "uint256,int256)")


def _log(address: str, block: int, index: int, topics: list[str], data: bytes) -> dict:
    return {"address": address, "blockNumber": hex(block), "logIndex": hex(index),
            "blockHash": "0x" + f"{block:064x}", "transactionHash": "0x" + f"{block:063x}1",
            "topics": topics, "data": "0x" + data.hex()}


class CappedNode:
    """Serves fixed logs; refuses ranges over ``cap`` blocks when a market is asked for."""

    def __init__(self, logs: list[dict], cap: int) -> None:
        self.logs, self.cap, self.requests = logs, cap, []

    def fetch_logs(self, addresses, topics, lo, hi, max_bytes=None):
        self.requests.append((tuple(addresses), lo, hi))
        if MARKET in addresses and hi - lo + 1 > self.cap:
            raise RangeTooLarge("block range too large", self.cap)
        return as_logs([lg for lg in self.logs if lg["address"] in addresses
                        and lo <= int(lg["blockNumber"], 16) <= hi and lg["topics"][0] in topics[0]])


def test_new_market_fetched_from_its_announcement_under_a_range_cap(tmp_path):
    word = "0x" + "00" * 12
    added = _log(MANAGER, 3, 0, [ADDED, "0x" + b"sETH".ljust(32, b"\0").hex(),
                                 "0x" + b"sETHPERP".ljust(32, b"\0").hex()],
                 eth_abi.encode(["address"], [MARKET]))
    trades = [_log(MARKET, b, 1, [MODIFIED, "0x" + f"{b:064x}", word + "cc" * 20],
                   eth_abi.encode(["uint256", "int256", "int256", "uint256", "uint256", "uint256",
                                   "int256"], [10, 5, 5, 7, 1, 0, 5])) for b in (2, 3, 5, 9, 14)]
    node = CappedNode([added, *trades], cap=3)
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", MANAGER, 0,
                       adapter="synthetix_perps_v2")
    config = load_config(cfg)
    state = build_source(config, config.protocols[0]).new_state()
    state.sizer.size = state.sizer.max_size  # past the slow start: one request would cover 0..10
    hi, logs = fetch_logs(state, node, 0, 10)
    assert hi == 10
    assert [(lg.address, int(lg.block_number, 16)) for lg in logs] == [
        (MANAGER, 3), (MARKET, 3), (MARKET, 5), (MARKET, 9)]  # not block 2, not past 10
    spans = [(lo, h) for addrs, lo, h in node.requests if MARKET in addrs and h - lo < 3]
    assert spans[0][0] == 3 and spans[-1][1] == 10
    assert all(b[0] == a[1] + 1 for a, b in itertools.pairwise(spans))
