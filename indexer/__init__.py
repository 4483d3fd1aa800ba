"""perp-indexer: exact wallet-level positions and open interest of perp protocols, in DuckDB."""

__version__ = "0.1.0"
