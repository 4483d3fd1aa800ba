"""Exact amounts: raw protocol integers as DECIMAL(38,18), one value or a whole Arrow column."""

from __future__ import annotations

import pyarrow as pa

_DEC_LIMIT = 10**38  # DECIMAL(38, 18) holds |x| < 1e20 USD


def to_decimal18(raw: int, decimals: int) -> str | None:
    """``raw / 10**decimals`` as an exact decimal string with 18 decimals, truncated toward
    zero (the digits past 1e-18 USD are kept in the *_raw columns). None when it does not fit
    DECIMAL(38,18). The one-value reference of :func:`decimal18_array`, which the store uses;
    the tests hold the two equal and read stored amounts back with this one."""
    if decimals >= 18:
        q = abs(raw) // 10 ** (decimals - 18)
    else:
        q = abs(raw) * 10 ** (18 - decimals)
    if q >= _DEC_LIMIT:
        return None
    sign = "-" if raw < 0 and q else ""
    return f"{sign}{q // 10**18}.{q % 10**18:018d}"


#: Integer counts of 1e-18, and the same bits read as DECIMAL(38,18).
_SCALED18, _DECIMAL18 = pa.decimal128(38, 0), pa.decimal128(38, 18)


def decimal18_array(values: list[int | None], decimals: int | list[int | None]
                    ) -> tuple[pa.Array, list[int]]:
    """``values / 10**decimals`` as an Arrow DECIMAL(38,18) column, exactly as
    :func:`to_decimal18` (truncated toward zero), but in bulk: each value is scaled to an integer
    count of 1e-18 and the Arrow array of those integers is reinterpreted with scale 18 (no
    strings, no Decimal objects). ``decimals`` is one scale or one per value (None: unknown).

    Returns the column (NULL for None and for values that do not fit) and the indexes of the
    values that do not fit DECIMAL(38,18)."""
    q: list[int | None]
    if isinstance(decimals, list):
        q = [None if v is None or d is None else
             (v * 10 ** (18 - d) if d < 18 else v // 10 ** (d - 18) if v >= 0
              else -(-v // 10 ** (d - 18))) for v, d in zip(values, decimals, strict=True)]
    elif decimals >= 18:
        div = 10 ** (decimals - 18)
        q = [None if v is None else (v // div if v >= 0 else -(-v // div)) for v in values]
    else:
        mul = 10 ** (18 - decimals)
        q = [None if v is None else v * mul for v in values]
    bad = [i for i, v in enumerate(q) if v is not None and not -_DEC_LIMIT < v < _DEC_LIMIT]
    for i in bad:
        q[i] = None
    return pa.array(q, _SCALED18).view(_DECIMAL18), bad
