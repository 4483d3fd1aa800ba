"""Undoing a reorg: everything a chain's sources stored above the common ancestor goes, in one
transaction."""

from __future__ import annotations

import duckdb

from indexer.store.ledger import RANGE_TABLES, LedgerWriter
from indexer.store.sql import statement


class Rollback(LedgerWriter):
    """The writer's rollback (mixed into :class:`indexer.store.Store`)."""

    @property
    def con(self) -> duckdb.DuckDBPyConnection:
        raise NotImplementedError  # the Store's: a connection per thread
    #: Rollbacks done through this connection: state cached from the store (markets) is stale
    #: when it moves.
    rollbacks: int = 0

    def rollback_chain(self, chain_id: int, block: int, block_hash: str) -> tuple[int, int]:
        """Undo a reorg on ``chain_id``: delete what every source of the chain stored above
        ``block`` (ledger rows, funding, markets, OI, quarantine, block hashes), recompute the
        positions they touched, rewind their checkpoints to ``block`` and record the reorg,
        all in one transaction. Returns (old tip, position changes removed)."""
        con = self.con
        chain = {"chain_id": chain_id, "block": block}
        with self.transaction():
            sources = [s for (s,) in con.execute(statement("sources_above"), chain).fetchall()]
            (old_tip,) = con.execute(statement("chain_tip"), chain).fetchone() or (block,)
            deleted = 0
            for source in sources:
                mine = {"source": source, "block": block}
                keys = {k for (k,) in con.execute(statement("keys_above"), mine).fetchall()}
                deleted += (con.execute(statement("changes_above"), mine).fetchone() or (0,))[0]
                for table in RANGE_TABLES:
                    con.execute(statement("delete_rows_above", table=table), mine)
                self._refresh_keys(source, keys)
            con.execute(statement("delete_blocks_above"), chain)
            con.execute(statement("rewind_checkpoints"), {**chain, "hash": block_hash})
            con.execute(statement("record_reorg"), {**chain, "old_tip": old_tip,
                                                    "deleted": deleted})
        self.rollbacks += 1
        return int(old_tip), int(deleted)
