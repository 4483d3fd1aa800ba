"""Pure helpers: ``signed_change``, ``at_price``, the exact DECIMAL(38,18) conversions and the
eth_getLogs range sizer."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest

from indexer.adapters.base import at_price, signed_change
from indexer.errors import AnswerTooLarge, RangeTooLarge
from indexer.scanner import RangeSizer
from indexer.store.amounts import decimal18_array, to_decimal18


@pytest.mark.parametrize("before, after, want", [
    (0, 5, ("increase", True, 5)),        # open long
    (0, -5, ("increase", False, 5)),      # open short
    (5, 8, ("increase", True, 3)),
    (-5, -8, ("increase", False, 3)),
    (8, 5, ("decrease", True, -3)),
    (-8, -5, ("decrease", False, -3)),
    (5, 0, ("close", True, -5)),          # close keeps the old side
    (-5, 0, ("close", False, -5)),
    (5, -3, ("increase", False, 3)),      # flip: one increase of the new side, full size
    (-3, 4, ("increase", True, 4)),
    (5, 5, ("increase", True, 0)),        # margin-only change
])
def test_signed_change(before, after, want):
    assert signed_change(before, after) == want


@pytest.mark.parametrize("tokens, price, decimals, want", [
    (2 * 10**18, 1500 * 10**18, 18, 3000 * 10**18),
    (-2 * 10**18, 1500 * 10**18, 18, -3000 * 10**18),
    (15, 1, 1, 1),       # 1.5 -> 1
    (-15, 1, 1, -1),     # -1.5 -> -1 (toward zero, not -2)
    (-7, 1, 1, 0),
    (10**7, 60_000 * 10**30, 8, 6_000 * 10**30),  # 0.1 BTC (8 decimals) at $60,000
])
def test_at_price_truncates_toward_zero(tokens, price, decimals, want):
    assert at_price(tokens, price, decimals) == want


@pytest.mark.parametrize("raw, decimals, want", [
    (1234, 2, "12.340000000000000000"),
    (10**30, 30, "1.000000000000000000"),
    (-25 * 10**29, 30, "-2.500000000000000000"),
    (1, 30, "0.000000000000000000"),             # below 1e-18: truncated to 0
    (-1, 30, "0.000000000000000000"),            # toward zero, and no "-0"
    (-15 * 10**11, 30, "-0.000000000000000001"),  # -1.5e-18 -> -1e-18
    (19 * 10**11, 30, "0.000000000000000001"),
    (10**38 - 1, 18, "99999999999999999999.999999999999999999"),
    (-(10**38 - 1), 18, "-99999999999999999999.999999999999999999"),
    (10**38, 18, None),                           # does not fit DECIMAL(38,18)
    (10**20, 0, None),
    (10**20 - 1, 0, "99999999999999999999.000000000000000000"),
])
def test_to_decimal18(raw, decimals, want):
    assert to_decimal18(raw, decimals) == want


def test_decimal18_array_one_scale():
    values = [10**30, -15 * 10**11, 19 * 10**11, None, 10**50, -(10**50), 0]
    arr, bad = decimal18_array(values, 30)
    assert arr.type == pa.decimal128(38, 18)
    assert arr.to_pylist() == [Decimal("1"), Decimal("-1E-18"), Decimal("1E-18"), None, None,
                               None, Decimal("0")]
    assert bad == [4, 5]


def test_decimal18_array_per_value_scales():
    values = [123, 5 * 10**5, -15, 10**40, 7]
    arr, bad = decimal18_array(values, [0, 6, 19, 2, None])
    assert arr.to_pylist() == [Decimal("123"), Decimal("0.5"), Decimal("-1E-18"), None, None]
    assert bad == [3]


def test_range_sizer_starts_small_and_halves_on_a_cap():
    s = RangeSizer(max_size=2000)
    assert s.size == 10 and s.end_for(100, 10_000) == 109 and s.end_for(100, 104) == 104
    assert RangeSizer(max_size=4).size == 4
    s.size = 1000
    s.shrink(RangeTooLarge("too many blocks"), tried=1000)
    assert s.size == 500
    s.shrink(RangeTooLarge("limit is 120 blocks", suggested=120), tried=500)
    assert s.size == 120  # the provider's suggestion
    s.shrink(RangeTooLarge("odd", suggested=900), tried=120)
    assert s.size == 60  # a suggestion not below what failed is ignored: halve
    with pytest.raises(RangeTooLarge):
        s.shrink(RangeTooLarge("even one block"), tried=1)


def test_range_sizer_grows_back_after_a_streak():
    s = RangeSizer(max_size=100, grow_after=3)
    s.size = 30
    s.succeeded(30, 10)
    s.succeeded(30, 10)
    assert s.size == 30
    s.succeeded(30, 10)
    assert s.size == 60
    s.shrink(RangeTooLarge("cap"), tried=60)  # resets the streak
    assert s.size == 30
    for _ in range(2):
        s.succeeded(30, 10)
    assert s.size == 30
    for _ in range(4):
        s.succeeded(30, 10)
    assert s.size == 100  # 30 -> 60 -> capped at max_size


def test_range_sizer_by_bytes():
    s = RangeSizer(max_size=10_000, max_bytes=1_000)
    s.size = 100
    # an answer of 4,000 bytes over 100 blocks: aim at 70 % of 1,000 -> 100 * 700 / 4000
    s.succeeded(100, 4_000)
    assert s.size == 17
    # a heavy answer (over half the budget) never grows the range
    for _ in range(5):
        s.succeeded(17, 600)
    assert s.size == 17
    # an answer dropped as too large: shrink to fit what it measured
    s.shrink(AnswerTooLarge(size=2_000, limit=1_000, complete=True), tried=17)
    assert s.size == 17 * 700 // 2_000
