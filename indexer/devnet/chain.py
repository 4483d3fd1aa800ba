"""Start anvil and compile/deploy our Solidity test contracts.

anvil and solc-js come from npm (package.json pins them). They are looked up in the folder
``$PERP_INDEXER_NODE_MODULES`` names if it is set (a ``node_modules`` folder, e.g. the checkout's
after ``scripts/setup``; nothing else is searched then), else in the source checkout's
``node_modules`` when running from one (an editable install), else on ``PATH``. Compiled
contracts are cached in the checkout's ``.cache/solc``, or for an installed package in
``$XDG_CACHE_HOME/perp-indexer/solc`` (default ``~/.cache/perp-indexer/solc``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexer.abi import encode_call
from indexer.errors import FatalError, IndexerError
from indexer.rpc import Rpc

#: Names a node_modules folder holding anvil and solc-js (see the module docstring).
NODE_MODULES_ENV = "PERP_INDEXER_NODE_MODULES"
_ABOVE = Path(__file__).resolve().parents[2]
#: The source checkout this package runs from (an editable install), or None when installed.
CHECKOUT: Path | None = (_ABOVE if (_ABOVE / "pyproject.toml").is_file()
                         and (_ABOVE / "package.json").is_file() else None)
#: Our Solidity test contracts (package data).
CONTRACTS = Path(__file__).resolve().parent / "contracts"
CACHE = (CHECKOUT / ".cache" / "solc" if CHECKOUT else
         Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "perp-indexer" / "solc")


class ToolMissing(FatalError):
    """anvil or solc-js is not installed."""


def _tool(name: str, in_node_modules: Callable[[Path], list[Path]]) -> str:
    named = os.environ.get(NODE_MODULES_ENV)
    if named:
        for c in in_node_modules(Path(named).expanduser()):
            if c.exists():
                return str(c)
        raise ToolMissing(f"{name} not found in {NODE_MODULES_ENV}={named}: run `npm ci` in the "
                          "folder above it (package.json pins anvil and solc-js)")
    for c in in_node_modules(CHECKOUT / "node_modules") if CHECKOUT else []:
        if c.exists():
            return str(c)
    found = shutil.which(name)
    if found:
        return found
    where = f"run scripts/setup (or `npm ci`) in {CHECKOUT}" if CHECKOUT else (
        f"set {NODE_MODULES_ENV} to a node_modules folder holding them (`npm ci` in a perp-indexer "
        "checkout: package.json pins anvil and solc-js)")
    raise ToolMissing(f"{name} not found: {where}, or put {name} on PATH")


def anvil_binary() -> str:
    # the real binary, not the node wrapper in node_modules/.bin (signals reach it directly)
    return _tool("anvil", lambda nm: sorted(nm.glob("@foundry-rs/anvil-*/bin/anvil")))


def solcjs_binary() -> str:
    return _tool("solcjs", lambda nm: [nm / ".bin" / "solcjs"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Anvil:
    """An anvil process on a free local port, with ``accounts`` unlocked dev accounts."""

    def __init__(self, accounts: int = 50, port: int | None = None, block_time: float | None = None,
                 extra: list[str] | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [anvil_binary(), "--port", str(self.port), "--accounts", str(accounts),
               "--balance", "1000000", "--timestamp", "1712000000", "--silent"]
        if block_time:
            cmd += ["--block-time", str(block_time)]
        self.proc = subprocess.Popen(cmd + (extra or []), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        self.rpc = Rpc([self.url], timeout=30, max_attempts=2)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.rpc.fetch_chain_id()
                break
            except (OSError, IndexerError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    raise FatalError(f"anvil did not start: {out[-500:]}") from None
                time.sleep(0.05)
        self.accounts: list[str] = [a.lower() for a in self.rpc.call("eth_accounts")]

    def stop(self) -> None:
        self.rpc.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()


@dataclass(frozen=True, slots=True)
class Compiled:
    abi: list[dict[str, Any]]
    bytecode: str


def compile_contract(source: Path, name: str) -> Compiled:
    """Compile contract ``name`` of the Solidity file ``source`` (any path) with solc-js
    (offline), cached by source hash."""
    text = source.read_bytes()
    digest = hashlib.sha256(text + name.encode()).hexdigest()[:16]
    cached = CACHE / f"{name}-{digest}.json"
    if cached.exists():
        doc = json.loads(cached.read_text())
        return Compiled(doc["abi"], doc["bytecode"])
    request = {
        "language": "Solidity",
        "sources": {source.name: {"content": text.decode()}},
        "settings": {"optimizer": {"enabled": True, "runs": 200}, "viaIR": True,
                     "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object"]}}},
    }
    proc = subprocess.run([solcjs_binary(), "--standard-json"], input=json.dumps(request),
                          capture_output=True, text=True, timeout=600, check=False)
    try:
        out = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        raise FatalError(f"solcjs failed on {source.name}: {proc.stderr[-2000:]}") from None
    errors = [e["formattedMessage"] for e in out.get("errors", []) if e["severity"] == "error"]
    contract = out.get("contracts", {}).get(source.name, {}).get(name)
    if errors or not contract:
        raise FatalError(f"solcjs failed on {source.name}: {' '.join(errors)[-2000:]}")
    abi = contract["abi"]
    bytecode = "0x" + contract["evm"]["bytecode"]["object"]
    CACHE.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps({"abi": abi, "bytecode": bytecode}))
    return Compiled(abi, bytecode)


def send(rpc: Rpc, sender: str, to: str | None, data: str, gas: int = 3_000_000) -> dict[str, Any]:
    """Send a transaction from an unlocked account and return its receipt (automine)."""
    tx: dict[str, Any] = {"from": sender, "data": data, "gas": hex(gas)}
    if to:
        tx["to"] = to
    return wait_receipt(rpc, rpc.call("eth_sendTransaction", [tx]))


def wait_receipt(rpc: Rpc, tx_hash: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        receipt = rpc.call("eth_getTransactionReceipt", [tx_hash])
        if receipt is not None:
            return receipt  # type: ignore[no-any-return]
        if time.monotonic() > deadline:
            raise FatalError(f"no receipt for {tx_hash} after {timeout:g}s")
        time.sleep(0.002)


def deploy(rpc: Rpc, sender: str, compiled: Compiled, ctor_args: bytes = b"") -> str:
    """Deploy ``compiled`` with its ABI-encoded constructor arguments; the new address."""
    receipt = send(rpc, sender, None, compiled.bytecode + ctor_args.hex(), gas=10_000_000)
    if receipt["status"] != "0x1":
        raise FatalError("contract deployment reverted")
    return str(receipt["contractAddress"]).lower()


def call(rpc: Rpc, to: str, signature: str, args: list[Any], block: str = "latest") -> str:
    return str(rpc.call("eth_call", [{"to": to, "data": encode_call(signature, args)}, block]))
