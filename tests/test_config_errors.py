"""Bad input gives a one-line clear error and the documented exit code."""

from __future__ import annotations

import json

import pytest

from indexer.config import load_config
from indexer.engine.source import build_source
from indexer.errors import ConfigError
from tests.helpers import ROOT, run_cli, write_config, write_dydx_config

pytestmark = pytest.mark.unit

VAULT = "0x1f61eA50e2B7dd00A11b55Fa91137033a345Ee15"


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    return " ".join(err.split())


def test_wrong_value_names_file_key_value_and_expectation(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0)
    cfg.write_text(cfg.read_text().replace("start_block: 0", "start_block: latest"))
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    msg = error_line(capsys)
    assert str(cfg) in msg and "protocols[0].contracts.vault.start_block" in msg
    assert "'latest'" in msg and "an integer >= 0" in msg


def test_unknown_key_lists_known_keys(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0, confirmatoins=3)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert "chains.dev.confirmatoins" in str(e.value) and "confirmations" in str(e.value)


def test_bad_address_and_missing_env_var(tmp_path, monkeypatch):
    cfg = write_config(tmp_path / "c.yaml", "${NO_SUCH_RPC_URL_VAR}", VAULT, 0)
    monkeypatch.delenv("NO_SUCH_RPC_URL_VAR", raising=False)
    with pytest.raises(ConfigError, match=r"chains.dev.rpc_url: got '\$\{NO_SUCH_RPC_URL_VAR\}'"):
        load_config(cfg)
    monkeypatch.setenv("NO_SUCH_RPC_URL_VAR", "http://127.0.0.1:9/key")
    assert load_config(cfg).chains["dev"].rpc_urls == ("http://127.0.0.1:9/key",)
    cfg2 = write_config(tmp_path / "d.yaml", "${UNSET_X:-http://127.0.0.1:7}", "0x12", 0)
    with pytest.raises(ConfigError, match="vault.address: got '0x12', expected a 0x-prefixed"):
        load_config(cfg2)


def test_env_default_expansion(tmp_path, monkeypatch):
    monkeypatch.delenv("UNSET_X", raising=False)
    cfg = write_config(tmp_path / "c.yaml", "${UNSET_X:-http://127.0.0.1:7}", VAULT, 0)
    c = load_config(cfg)
    assert c.chains["dev"].rpc_urls == ("http://127.0.0.1:7",)
    assert c.database == tmp_path / "db.duckdb"


def test_unknown_adapter(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0)
    cfg.write_text(cfg.read_text().replace("adapter: gmx_v1", "adapter: gmx_v9"))
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    msg = error_line(capsys)
    assert "protocols[0].adapter: got 'gmx_v9', expected one of the adapters dydx_v4, gmx_v1" in msg


def test_abi_lacking_a_handled_event(tmp_path, capsys):
    abi_dir = tmp_path / "abi"
    abi_dir.mkdir()
    abi = json.loads((ROOT / "indexer/abis/gmx_v1/Vault.json").read_text())
    (abi_dir / "Vault.json").write_text(json.dumps(
        [e for e in abi if e.get("name") != "ClosePosition"]))
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0)
    cfg.write_text(cfg.read_text() + "    abi_dir: abi\n")
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    msg = error_line(capsys)
    assert "ABI lacks event(s) ClosePosition handled by adapter gmx_v1" in msg


def test_unreachable_rpc_is_exit_1_with_redacted_url(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://user:secret@127.0.0.2:1/v2/SECRETKEY", VAULT,
                       0, max_attempts=2, request_timeout=2)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 1
    err = capsys.readouterr().err
    assert "cannot reach RPC http://127.0.0.2:1/***" in " ".join(err.split())
    assert "SECRETKEY" not in err and "secret" not in err


def test_wrong_chain_id_is_a_config_error(tmp_path, capsys, replay_factory):
    node = replay_factory()
    cfg = write_config(tmp_path / "c.yaml", node.url, VAULT, 0, chain_id=42161)
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    assert "serves chain id 31337, but chains.dev.chain_id is 42161" in error_line(capsys)


def test_missing_config_file(tmp_path, capsys):
    assert run_cli("status", "--config", str(tmp_path / "nope.yaml")) == 2
    assert "expected an existing YAML config file" in error_line(capsys)


def test_query_without_database(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0)
    assert run_cli("query", "--config", str(cfg), "select 1") == 1
    assert "no database yet" in error_line(capsys)


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_and_plan(path, monkeypatch):
    """Every config in configs/ parses, names a known adapter, roles and ABI, with real addresses."""
    for var in ("ARBITRUM_RPC_URL", "AVALANCHE_RPC_URL", "OPTIMISM_RPC_URL", "POLYGON_RPC_URL",
                "BASE_RPC_URL", "DYDX_RPC_URL", "DYDX_REST_URL"):
        monkeypatch.setenv(var, "https://rpc.example/key")
    cfg = load_config(path)
    for proto in cfg.protocols:
        source = build_source(cfg, proto)
        assert source.topics[0] and all(c.start_block > 0 or "demo" in path.name
                                      for c in proto.contracts)
        assert proto.start_block > 0


def test_token_and_market_entries_are_checked(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0, adapter="gmx_v2",
                       protocol_extra='    tokens:\n      "0x' + "ab" * 20 + '": { decimals: 99 }\n')
    assert run_cli("backfill", "--config", str(cfg)) == 2
    line = error_line(capsys)
    assert "protocols[0].tokens.0x" in line and "decimals" in line and "99" in line
    cfg = write_config(tmp_path / "d.yaml", "http://127.0.0.1:1", VAULT, 0, adapter="gmx_v2",
                       protocol_extra='    markets:\n      "0x' + "ab" * 20 + '": { index_token: "0x1", '
                       'long_token: "0x' + "cd" * 20 + '", short_token: "0x' + "ef" * 20 + '" }\n')
    assert run_cli("backfill", "--config", str(cfg)) == 2
    line = error_line(capsys)
    assert "index_token" in line and "0x1" in line and "20-byte hex address" in line


def test_a_role_listing_several_contracts_is_checked(tmp_path, capsys):
    base = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0,
                        adapter="synthetix_perps_v2").read_text()
    line = base.splitlines()[-1]
    for value, expected in (("[]", "a non-empty list"),
                            ('[{ address: "0x' + "ab" * 20 + '", start_block: 1 }, '
                             '{ address: "0xnope", start_block: 1 }]', "[1].address")):
        head = line.split(":")[0]
        (tmp_path / "d.yaml").write_text(base.replace(line, f"{head}: {value}"))
        assert run_cli("backfill", "--config", str(tmp_path / "d.yaml")) == 2
        assert expected in error_line(capsys)
    good = ('[{ address: "0x' + "ab" * 20 + '", start_block: 1 }, '
            '{ address: "0x' + "cd" * 20 + '", start_block: 5 }]')
    (tmp_path / "e.yaml").write_text(base.replace(line, f"{line.split(':')[0]}: {good}"))
    proto = load_config(tmp_path / "e.yaml").protocols[0]
    assert [(c.role, c.address, c.start_block) for c in proto.contracts] == [
        ("futures_market_manager", "0x" + "ab" * 20, 1),
        ("futures_market_manager", "0x" + "cd" * 20, 5)]


def test_token_ids_must_be_integers_and_unique(tmp_path):
    tokens = ('    tokens:\n      "0x' + "11" * 20 + '": { decimals: 18, id: 1 }\n'
              '      "0x' + "22" * 20 + '": { decimals: 6, id: ONE }\n')
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0, adapter="gtrade",
                       protocol_extra=tokens)
    with pytest.raises(ConfigError, match=r"tokens.0x2{40}.id: got 'ONE', expected an integer"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("id: ONE", "id: 1"))
    with pytest.raises(ConfigError, match=r"0x2{40}.id: got 1, expected a token id not used"):
        load_config(cfg)
    cfg.write_text(cfg.read_text().replace("decimals: 6, id: 1", "decimals: 6, id: 3"))
    assert {t.id for t in load_config(cfg).protocols[0].tokens.values()} == {1, 3}


@pytest.mark.parametrize(("change", "key", "expected"), [
    (("kind: cometbft", "kind: cosmos"), "chains.dydx.kind", "evm or cometbft"),
    (("    network: dydx-mainnet-1\n", ""), "chains.dydx.network", "a value (required key)"),
    (("    rest_url:", "    confirmations: 3\n    rest_url:"), "chains.dydx.confirmations",
     "no such key on a CometBFT chain"),
    (("kind: cometbft", "kind: cometbft\n    chain_id: 42161"), "chains.dydx.chain_id",
     "leave chain_id out"),
    (("start_block: 5", "start_block: first"), "protocols[0].start_block", "an integer >= 1"),
    (("adapter: dydx_v4", "adapter: gmx_v1"), "protocols[0].chain",
     "an EVM chain: adapter gmx_v1 reads EVM logs"),
])
def test_cometbft_config_errors(tmp_path, capsys, change, key, expected):
    cfg = write_dydx_config(tmp_path / "c.yaml", "http://127.0.0.1:1", 5)
    cfg.write_text(cfg.read_text().replace(*change))
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    msg = error_line(capsys)
    assert str(cfg) in msg and key in msg and expected in msg, msg


def test_dydx_adapter_on_an_evm_chain_is_refused(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.yaml", "http://127.0.0.1:1", VAULT, 0)
    cfg.write_text(cfg.read_text().replace("adapter: gmx_v1", "adapter: dydx_v4"))
    assert run_cli("backfill", "--config", str(cfg), "--no-progress") == 2
    msg = error_line(capsys)
    assert "protocols[0].chain" in msg and "a CometBFT chain (kind: cometbft)" in msg, msg
