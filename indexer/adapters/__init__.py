"""Adapter registry: ``load(name)`` imports ``indexer.adapters.<name>``; the YAML is the registry."""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from indexer.errors import AbiError, ConfigError

_REQUIRED = ("ROLES", "EVENTS", "USD_DECIMALS", "transactions_needed", "to_changes")


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def load(name: str, file: str, key: str) -> ModuleType:
    """Import an adapter by name; unknown names are a ConfigError listing the known ones."""
    if name not in available():
        raise ConfigError(file, key, name, "one of the adapters " + ", ".join(available()))
    module = importlib.import_module(f"{__name__}.{name}")
    missing = [a for a in _REQUIRED if not hasattr(module, a)]
    if missing:
        raise ConfigError(file, key, name, f"an adapter module defining {', '.join(missing)}")
    return module


def check_roles(module: ModuleType, roles: list[str], file: str, key: str) -> None:
    wanted = set(module.ROLES)
    if set(roles) != wanted:
        bad = sorted(set(roles) ^ wanted)
        raise ConfigError(file, f"{key}.{bad[0]}", bad[0],
                          f"exactly the contract roles {', '.join(sorted(wanted))} "
                          f"for adapter {module.__name__.rsplit('.', 1)[-1]}")


def check_events(module: ModuleType, abi_names: set[str], abi_folder: str) -> None:
    """Every event the adapter handles must be in the ABI (guards against a wrong ABI)."""
    missing = sorted(set(module.EVENTS) - abi_names)
    if missing:
        raise AbiError(f"{abi_folder}: ABI lacks event(s) {', '.join(missing)} handled by adapter "
                       f"{module.__name__.rsplit('.', 1)[-1]}; events in the ABI: "
                       f"{', '.join(sorted(abi_names)) or '(none)'}")
