"""What providers' error texts mean: a getLogs range or result cap (with the range they
suggest), or a rate limit. The catalogue of texts, with their sources, is in
tests/test_rpc_faults.py."""

from __future__ import annotations

import re
from typing import Any

from indexer.errors import RangeTooLarge

#: Messages by which providers say a getLogs range or its result count is too large.
_RANGE_PATTERNS = re.compile(
    r"block range|range too large|range is too large|too many blocks|exceed(?:s|ed)? (?:the )?"
    r"(?:max(?:imum)?|limit|server limit)|query returned more than|more than \d+ results|"
    r"response size|limited to a [\d,]+|too many (?:logs|results)|returns too many logs|"
    r"result window|query timeout|log response size|exceeds limit of|blocks distance|"
    r"bigger than (?:the )?range limit",
    re.IGNORECASE,
)
_HEX_RANGE = re.compile(r"\[\s*(0x[0-9a-fA-F]+)\s*,\s*(0x[0-9a-fA-F]+)\s*\]")
#: "retry with the range 25766988-25775072" (reth)
_DEC_RANGE = re.compile(r"range (\d+)\s*-\s*(\d+)")
_MAX_NUMBER = re.compile(
    r"(?:max(?:imum)?(?: block)?(?: range)?(?: is| of|:| =)?|limited to a|up to a|limit of|"
    r"narrow your filter:|blocks distance:|range limit)\s*(\d[\d,]*)\s*(k?)",
    re.IGNORECASE,
)
#: JSON-RPC errors by which providers say "slow down" (retried with backoff, never fatal).
_RATE_LIMITED = re.compile(
    r"rate limit|request rate|too many requests|exceeded its compute units|credits limited|"
    r"capacity exceeded|daily request count|throughput",
    re.IGNORECASE,
)
_RATE_LIMIT_CODES = {429, -32012, -32090}


def parse_range_error(code: int | None, message: str, data: Any) -> RangeTooLarge | None:
    """Recognise a provider's range/result-cap error; return it with a suggested block count.

    Some providers put the reason in ``data`` under a generic message (Tenderly: "invalid
    params" with ``data.payload``); that text is read too."""
    message = message or ""
    if not _RANGE_PATTERNS.search(message):
        detail = data.get("payload") or data.get("message") if isinstance(data, dict) else data
        if not isinstance(detail, str) or not _RANGE_PATTERNS.search(detail):
            return None
        message = f"{message}: {detail}"
    suggested: int | None = None
    m = _HEX_RANGE.search(message) or _DEC_RANGE.search(message)
    if m:
        suggested = int(m.group(2), 0) - int(m.group(1), 0) + 1
    elif isinstance(data, dict) and "from" in data and "to" in data:
        try:
            suggested = int(str(data["to"]), 0) - int(str(data["from"]), 0) + 1
        except ValueError:
            suggested = None
    elif not re.search(r"\bresults?\b|\blogs\b", message, re.IGNORECASE):  # a log count
        n = _MAX_NUMBER.search(message)
        if n:
            suggested = int(n.group(1).replace(",", "")) * (1000 if n.group(2).lower() == "k"
                                                             else 1)
    return RangeTooLarge(f"provider refused the range: {message}",
                         suggested if suggested and suggested > 0 else None)


def is_rate_limit(code: Any, message: str) -> bool:
    """A JSON-RPC error that means "too many requests" (Alchemy 429, QuickNode -32012,
    Infura -32005 "request rate" ...), as opposed to a request that cannot succeed."""
    if parse_range_error(code, message, None) is not None:
        return False
    return code in _RATE_LIMIT_CODES or bool(_RATE_LIMITED.search(message or ""))


def rate_limit_reply(reply: Any) -> str | None:
    """The message if a reply (or every answer of a batch reply) is a rate-limit error."""
    replies = reply if isinstance(reply, list) else [reply]
    messages = []
    for r in replies:
        err = r.get("error") if isinstance(r, dict) else None
        if not isinstance(err, dict) or not is_rate_limit(err.get("code"),
                                                           str(err.get("message", ""))):
            return None
        messages.append(str(err.get("message", "")))
    return messages[0] if messages else None
