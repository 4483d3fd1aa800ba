-- The store's statements, each under a `-- name:` line (indexer/store/sql.py reads them).
-- Parameters are DuckDB's named `$parameters`. `{where}` is filled by the store with one of its
-- fixed predicates over position_changes (never with user input).

-- name: checkpoint
SELECT source, start_block, block_number, block_hash FROM checkpoints WHERE source = $source;

-- name: markets_of_source
SELECT market, index_token, long_token, short_token FROM markets
WHERE source = $source AND found_by = 'event'
ORDER BY block_number, log_index;
-- name: listed_markets
SELECT market, min(block_number) FROM markets WHERE source = $source GROUP BY market;
-- name: parameters_of_source
SELECT name, block_number, value_raw::VARCHAR FROM protocol_parameters
WHERE source = $source AND log_index = -1
ORDER BY block_number;

-- name: block_time
SELECT timestamp FROM blocks WHERE chain_id = $chain_id AND number = $number;

-- name: block_hash
SELECT hash FROM blocks WHERE chain_id = $chain_id AND number = $number;

-- name: open_interest_before
-- The protocol's own open interest per market (tokens, long side) last stored below $before.
SELECT market, arg_max(next_value_raw, block_number * 1000000000 + log_index)::VARCHAR
FROM protocol_open_interest
WHERE source = $source AND block_number < $before AND unit = 'tokens' AND is_long
GROUP BY market;

-- name: previous_from_positions
-- The state of each key after its latest change, from positions.
SELECT position_key, is_long, size_tokens_raw::VARCHAR, collateral_raw::VARCHAR,
       realized_pnl_usd, market, collateral_token, size_raw::VARCHAR,
       collateral_tokens_raw::VARCHAR, entry_price_raw::VARCHAR, updated_block
FROM positions WHERE source = $source AND position_key IN (SELECT unnest($keys));

-- name: previous_from_ledger
-- The same, after each key's last change below $before (a replay: positions are newer).
SELECT position_key, arg_max(is_long, o), arg_max(size_after_tokens_raw, o)::VARCHAR,
       arg_max(collateral_after_raw, o)::VARCHAR, arg_max(realized_pnl_usd, o),
       arg_max(market, o), arg_max(collateral_token, o), arg_max(size_after_raw, o)::VARCHAR,
       arg_max(collateral_after_tokens_raw, o)::VARCHAR, arg_max(entry_price_raw, o)::VARCHAR,
       max(block_number)
FROM (SELECT *, block_number * 1000000 + log_index AS o FROM position_changes
      WHERE source = $source AND block_number < $before
        AND position_key IN (SELECT unnest($keys)))
GROUP BY position_key;

-- name: open_key_histories
-- Every change below $before of each key still open after its last change below $before, in
-- chain order (for state an adapter carries beyond what positions keep).
WITH o AS (
    SELECT position_key, block_number, log_index, is_long, size_after_tokens_raw
    FROM position_changes WHERE source = $source AND block_number < $before
), open_keys AS (
    SELECT position_key FROM o GROUP BY position_key
    HAVING arg_max(size_after_tokens_raw, block_number * 1000000 + log_index)::VARCHAR <> '0'
)
SELECT position_key, is_long, size_after_tokens_raw::VARCHAR
FROM o SEMI JOIN open_keys USING (position_key)
ORDER BY position_key, block_number, log_index;

-- name: range_is_past_checkpoint
-- Every row of a source is at or below its checkpoint (rows are committed with it and a
-- rollback rewinds it), so a range past the checkpoint has nothing to replace.
SELECT coalesce(max(block_number) < $lo, true) FROM checkpoints WHERE source = $source;

-- name: delete_range_rows
-- {table} is one of the tables holding a source's rows by block (store.ledger.RANGE_TABLES).
DELETE FROM {table} WHERE source = $source AND block_number BETWEEN $lo AND $hi;

-- name: delete_rows_above
DELETE FROM {table} WHERE source = $source AND block_number > $block;

-- name: keys_in_range
SELECT DISTINCT position_key FROM position_changes
WHERE source = $source AND block_number BETWEEN $lo AND $hi;

-- name: rows_above
SELECT count(*) > 0 FROM position_changes WHERE source = $source AND block_number > $hi;

-- name: keys_before_batch
-- The keys a batch touches as they were before it: where their OI deltas start.
CREATE OR REPLACE TEMP TABLE prev AS
SELECT position_key, opened_block,
       CASE WHEN is_long THEN size_usd ELSE 0 END AS prev_l,
       CASE WHEN is_long THEN 0 ELSE size_usd END AS prev_s
FROM positions WHERE source = $source
  AND position_key IN (SELECT position_key FROM batch_changes);

-- name: insert_changes
-- The batch's changes with their OI deltas: each change's size after on its side minus the
-- key's size after on that side before it (a flip leaves one side and enters the other).
INSERT INTO position_changes BY NAME
SELECT $chain_id AS chain_id, $protocol AS protocol, $source AS source, block_number,
       CASE WHEN block_time >= 0 THEN make_timestamp(block_time * 1000000) END AS block_time,
       tx_hash, log_index, position_key, account, market, collateral_token, is_long, kind,
       size_delta_usd, collateral_delta_usd, size_after_usd, collateral_after_usd, price_usd,
       fee_usd, realized_pnl_usd, entry_price_usd,
       CAST(size_delta_raw AS BIGNUM) AS size_delta_raw,
       CAST(size_after_raw AS BIGNUM) AS size_after_raw,
       CAST(collateral_after_raw AS BIGNUM) AS collateral_after_raw,
       CAST(entry_price_raw AS BIGNUM) AS entry_price_raw,
       CAST(size_delta_tokens_raw AS BIGNUM) AS size_delta_tokens_raw,
       CAST(size_after_tokens_raw AS BIGNUM) AS size_after_tokens_raw,
       CAST(collateral_delta_tokens_raw AS BIGNUM) AS collateral_delta_tokens_raw,
       CAST(collateral_after_tokens_raw AS BIGNUM) AS collateral_after_tokens_raw,
       $usd_decimals AS usd_decimals, index_token,
       CAST(index_decimals AS TINYINT) AS index_decimals,
       CAST(collateral_decimals AS TINYINT) AS collateral_decimals,
       size_after_tokens, collateral_after_tokens,
       funding_entry, liquidation_price_usd,
       l - coalesce(lag(l) OVER k, prev_l, 0) AS long_oi_delta_usd,
       s - coalesce(lag(s) OVER k, prev_s, 0) AS short_oi_delta_usd
FROM (SELECT *, CASE WHEN is_long THEN size_after_usd ELSE 0 END AS l,
             CASE WHEN is_long THEN 0 ELSE size_after_usd END AS s
      FROM batch_changes)
LEFT JOIN prev USING (position_key)
WINDOW k AS (PARTITION BY position_key ORDER BY block_number, log_index)
ORDER BY block_number, log_index;

-- name: redo_oi_deltas
-- The changes matching {where} (whole key histories) with their OI deltas (re)computed, kept in
-- a temp table: the replay deletes and inserts them back rather than UPDATE them, for an UPDATE
-- by rowid over rows this transaction deleted and inserted crashed DuckDB 2.0.0 now and then.
CREATE OR REPLACE TEMP TABLE redo_changes AS
SELECT * REPLACE (
    l - coalesce(lag(l) OVER k, 0) AS long_oi_delta_usd,
    s - coalesce(lag(s) OVER k, 0) AS short_oi_delta_usd)
FROM (SELECT *, CASE WHEN is_long THEN size_after_usd ELSE 0 END AS l,
                CASE WHEN is_long THEN 0 ELSE size_after_usd END AS s
      FROM position_changes WHERE {where})
WINDOW k AS (PARTITION BY source, position_key ORDER BY block_number, log_index);

-- name: insert_funding
INSERT INTO funding_updates
SELECT $chain_id, $protocol, $source, block_number,
       CASE WHEN block_time >= 0 THEN make_timestamp(block_time * 1000000) END, log_index,
       market, CAST(rate AS BIGNUM), funding_index, CAST(current_rate AS BIGNUM)
FROM batch_funding;
-- name: insert_payments
INSERT INTO funding_payments BY NAME
SELECT $chain_id AS chain_id, $protocol AS protocol, $source AS source, block_number,
       CASE WHEN block_time >= 0 THEN make_timestamp(block_time * 1000000) END AS block_time,
       tx_hash, log_index, account, position_key, market,
       CAST(amount AS BIGNUM) AS amount_raw, amount_usd
FROM batch_payments;

-- name: insert_parameter
INSERT INTO protocol_parameters VALUES (?, ?, ?, ?, ?, ?, ?, CAST(? AS BIGNUM));

-- name: insert_markets
INSERT INTO markets BY NAME
SELECT $chain_id AS chain_id, $protocol AS protocol, $source AS source, * FROM batch_markets;

-- name: insert_open_interest
INSERT INTO protocol_open_interest BY NAME
SELECT $chain_id AS chain_id, $protocol AS protocol, $source AS source, block_number,
       CASE WHEN block_time >= 0 THEN make_timestamp(block_time * 1000000) END AS block_time,
       log_index, market, collateral_token, is_long, unit, CAST(delta AS BIGNUM) AS delta_raw,
       CAST(next_value AS BIGNUM) AS next_value_raw,
       CAST(next_value_usd AS DECIMAL(38,18)) AS next_value_usd
FROM batch_open_interest;

-- name: insert_quarantine
INSERT INTO quarantine VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, now()::TIMESTAMP);

-- name: insert_block
INSERT OR REPLACE INTO blocks VALUES (?, ?, ?, ?, ?);

-- name: move_checkpoint
-- A replay of an older range never moves the checkpoint back.
INSERT INTO checkpoints VALUES ($chain_id, $source, $protocol, $start_block, $block, $hash,
                                now()::TIMESTAMP, NULL)
ON CONFLICT (source) DO UPDATE SET
    updated_at = excluded.updated_at, last_error = NULL,
    start_block = least(checkpoints.start_block, excluded.start_block),
    block_hash = CASE WHEN excluded.block_number >= checkpoints.block_number
                      THEN excluded.block_hash ELSE checkpoints.block_hash END,
    block_number = greatest(checkpoints.block_number, excluded.block_number);

-- name: positions
-- The positions of the keys whose changes match {where}: each key's last change carries its
-- full state, so one small aggregate finds that row (by rowid) and a join reads it whole (an
-- arg_max per column would hold ~20 strings and BIGNUMs per key).
WITH last AS (
    SELECT arg_max(rowid, block_number * 1000000 + log_index) AS r,
           max(block_number) FILTER (WHERE kind = 'increase' AND size_after_raw = size_delta_raw)
               AS opened_block,
           max(block_number) AS updated_block
    FROM position_changes WHERE {where}
    GROUP BY source, position_key
)
SELECT chain_id, protocol, source, position_key, account, market, collateral_token, is_long,
       size_after_usd AS size_usd, collateral_after_usd AS collateral_usd, entry_price_usd,
       CASE WHEN size_after_raw <> 0 THEN 'open'  -- (partial liquidations)
            WHEN kind = 'liquidation' THEN 'liquidated' ELSE 'closed' END AS status,
       opened_block, updated_block, realized_pnl_usd,
       size_after_raw AS size_raw, collateral_after_raw AS collateral_raw, entry_price_raw,
       index_token, size_after_tokens AS size_tokens, collateral_after_tokens AS collateral_tokens,
       size_after_tokens_raw AS size_tokens_raw, collateral_after_tokens_raw AS collateral_tokens_raw,
       funding_entry, liquidation_price_usd, price_usd AS last_price_usd
FROM position_changes JOIN last ON rowid = last.r
WHERE {where};  -- (lets the scan skip what the aggregate skipped)

-- name: keep_opened_block
UPDATE new_positions n SET opened_block = p.opened_block FROM prev p
WHERE n.opened_block IS NULL AND p.position_key = n.position_key;

-- name: delete_replaced_positions
DELETE FROM positions p USING new_positions n
WHERE p.source = n.source AND p.position_key = n.position_key;

-- name: insert_new_positions
INSERT INTO positions BY NAME SELECT * FROM new_positions;

-- name: sources_above
SELECT source FROM checkpoints WHERE chain_id = $chain_id AND block_number > $block ORDER BY source;

-- name: chain_tip
SELECT coalesce(max(block_number), $block) FROM checkpoints WHERE chain_id = $chain_id;

-- name: keys_above
SELECT DISTINCT position_key FROM position_changes WHERE source = $source AND block_number > $block;

-- name: changes_above
SELECT count(*) FROM position_changes WHERE source = $source AND block_number > $block;

-- name: delete_blocks_above
DELETE FROM blocks WHERE chain_id = $chain_id AND number > $block;

-- name: rewind_checkpoints
UPDATE checkpoints SET block_number = $block, block_hash = $hash, updated_at = now()::TIMESTAMP
WHERE chain_id = $chain_id AND block_number > $block;

-- name: record_reorg
INSERT INTO reorgs VALUES ($chain_id, now()::TIMESTAMP, $old_tip, $block, $old_tip - $block,
                           $deleted);

-- name: record_error
UPDATE checkpoints SET last_error = $message WHERE source = $source;

-- name: prune_blocks
DELETE FROM blocks WHERE chain_id = $chain_id AND number < $keep_above;

-- name: forget_staged
DELETE FROM staged_partitions WHERE source = $source AND file = $file;

-- name: record_staged
INSERT INTO staged_partitions VALUES ($source, $file, $lo, $hi, $logs, now()::TIMESTAMP);

-- name: merged_files
SELECT file FROM staged_partitions WHERE source = $source;

-- name: tables
-- The tables holding data (the layout version stays).
SELECT table_name FROM information_schema.tables
WHERE table_type = 'BASE TABLE' AND table_schema = 'main' AND table_name <> 'schema_version';
