"""A plain (non-editable) install works on its own: the package is installed with ``pip install``
into a fresh venv outside the repo and run from a directory outside the repo. The demo runs and
leaves a database holding all five protocols, queried with ``perp-indexer query``; every
shipped config in configs/ loads and plans (the ABIs and the demo config come from package data,
not from the checkout); and the runtime does without web3.

pip builds a local folder in place, and setuptools leaves ``build/`` and ``*.egg-info`` there, so
the install is made from a copy of the checkout's files (``git ls-files``: tracked and untracked,
minus what .gitignore ignores), which keeps the checkout clean. anvil and solc-js come from the
checkout's npm install through ``PERP_INDEXER_NODE_MODULES``; the compile cache goes to a temporary
``XDG_CACHE_HOME``, so solc-js runs from the installed package too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.slow, pytest.mark.anvil]

PROTOCOLS = ("gmx_v1", "gmx_v2", "perp_v2", "synthetix_perps_v2", "gtrade")
RPC_VARS = ("ARBITRUM_RPC_URL", "AVALANCHE_RPC_URL", "OPTIMISM_RPC_URL", "POLYGON_RPC_URL",
            "BASE_RPC_URL", "DYDX_RPC_URL", "DYDX_REST_URL")

#: Run inside the fresh venv: where things come from, and every shipped config loaded and planned.
_PROBE = """
import importlib.util, json, sys
from pathlib import Path
import indexer
from indexer.config import default_abi_dir, load_config
from indexer.devnet import chain
from indexer.devnet.demo import DEMO_CONFIG
from indexer.engine.source import build_source
loaded = {}
for path in sys.argv[1:] + [str(DEMO_CONFIG)]:
    cfg = load_config(path)
    loaded[Path(path).name] = [[p.name, str(p.abi_dir), len(build_source(cfg, p).topics[0])]
                               for p in cfg.protocols]
print(json.dumps({"indexer": indexer.__file__, "demo_config": str(DEMO_CONFIG),
                  "abis": str(default_abi_dir("gmx_v1")), "contracts": str(chain.CONTRACTS),
                  "checkout": chain.CHECKOUT and str(chain.CHECKOUT), "cache": str(chain.CACHE),
                  "anvil": chain.anvil_binary(), "solcjs": chain.solcjs_binary(),
                  "web3": importlib.util.find_spec("web3") is not None, "configs": loaded}))
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    print(f"{time.monotonic() - started:6.1f}s  "
          + " ".join(a if "\n" not in a else "<script>" for a in cmd)[:200])
    assert proc.returncode == 0, (f"{cmd} exited {proc.returncode}\nstdout:\n{proc.stdout[-3000:]}"
                                  f"\nstderr:\n{proc.stderr[-5000:]}")
    return proc.stdout


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():  # (a tracked file deleted in the working tree is left out)
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)


def test_a_plain_install_runs_the_demo_and_loads_every_config_outside_the_repo(tmp_path):
    assert not tmp_path.resolve().is_relative_to(ROOT)
    src, venv, work, cache = (tmp_path / d for d in ("src", "venv", "work", "cache"))
    work.mkdir()
    copy_checkout(src)
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "DEMO_DATABASE", "DEMO_RPC_URL")}
    env.update({"PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "PERP_INDEXER_NODE_MODULES": str(ROOT / "node_modules"),
                "XDG_CACHE_HOME": str(cache), **{v: "https://rpc.example/key" for v in RPC_VARS}})
    run([sys.executable, "-m", "venv", str(venv)], work, env, 120)
    python, cli = str(venv / "bin" / "python"), str(venv / "bin" / "perp-indexer")
    run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)], work,
        env, 600)
    shutil.rmtree(src)  # nothing may come from the copy either

    configs = sorted(str(p) for p in (ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 9
    db = work / "data" / "demo.duckdb"  # the demo's default: data/demo.duckdb under its cwd
    with_db = {**env, "DEMO_DATABASE": str(db)}  # demo.yaml needs it; the demo sets it itself
    probe = json.loads(run([python, "-c", _PROBE, *configs], work, with_db, 120))
    site = venv.resolve()
    for key in ("indexer", "demo_config", "abis", "contracts"):
        assert Path(probe[key]).resolve().is_relative_to(site), (key, probe[key])
    assert probe["checkout"] is None and Path(probe["cache"]) == cache / "perp-indexer" / "solc"
    for tool in ("anvil", "solcjs"):
        assert Path(probe[tool]).is_relative_to(ROOT / "node_modules"), (tool, probe[tool])
    assert not probe["web3"], "web3 got installed as a runtime dependency"
    assert set(probe["configs"]) == {Path(c).name for c in configs} | {"demo.yaml"}
    for name, protocols in probe["configs"].items():
        assert protocols, name
        for proto, abi_dir, topics in protocols:
            assert Path(abi_dir).resolve().is_relative_to(site), (name, proto, abi_dir)
            assert topics > 0, (name, proto)

    run([cli, "demo", "--duration", "10", "--no-ui", "--traders", "12"], work, env, 300)
    assert db.is_file()
    out = run([cli, "query", "--config", probe["demo_config"], "--format", "jsonl",
               "SELECT protocol, count(*) AS n FROM position_changes GROUP BY ALL"], work,
              with_db, 120)
    counts = {r["protocol"]: r["n"] for r in map(json.loads, out.splitlines())}
    for protocol in PROTOCOLS:
        assert counts.get(protocol, 0) > 0, (protocol, counts)
    assert sorted(os.listdir(cache / "perp-indexer" / "solc"))  # solc-js ran from the install
