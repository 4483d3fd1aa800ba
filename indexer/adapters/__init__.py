"""Adapter registry: ``load(name)`` imports ``indexer.adapters.<name>`` and returns its
``ADAPTER``; the YAML config is the registry (no list to edit when adding a protocol)."""

from __future__ import annotations

import importlib
import pkgutil

from indexer.adapters.base import Adapter
from indexer.errors import AbiError, ConfigError


def available() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base")


def load(name: str, file: str = "", key: str = "adapter") -> Adapter:
    """The adapter of that name; unknown names are a ConfigError listing the known ones."""
    if name not in available():
        raise ConfigError(file, key, name, "one of the adapters " + ", ".join(available()))
    adapter = getattr(importlib.import_module(f"{__name__}.{name}"), "ADAPTER", None)
    if not isinstance(adapter, Adapter):
        raise ConfigError(file, key, name, "an adapter module defining ADAPTER = Adapter(...)")
    return adapter


def check_roles(name: str, adapter: Adapter, roles: list[str], file: str, key: str) -> None:
    wanted, optional = set(adapter.roles), set(adapter.optional_roles)
    bad = sorted((wanted - set(roles)) | (set(roles) - wanted - optional))
    if bad:
        also = f" (and optionally {', '.join(sorted(optional))})" if optional else ""
        raise ConfigError(file, f"{key}.{bad[0]}", bad[0],
                          f"the contract roles {', '.join(sorted(wanted))}{also} "
                          f"for adapter {name}")


def check_events(name: str, adapter: Adapter, abi_names: set[str], abi_folder: str) -> None:
    """Every event the adapter handles must be in the ABI (guards against a wrong ABI)."""
    missing = sorted(set(adapter.events) - abi_names)
    if missing:
        raise AbiError(f"{abi_folder}: ABI lacks event(s) {', '.join(missing)} handled by adapter "
                       f"{name}; events in the ABI: {', '.join(sorted(abi_names)) or '(none)'}")
