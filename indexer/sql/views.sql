-- The analysts' SQL surface, derived from position_changes / positions. DOUBLE columns are
-- conveniences (ratios); every amount stays DECIMAL(38,18) USD.

-- Grouped by side and account, then by side, then one row per market: faster than filtered
-- distinct counts when accounts are few against positions (docs/benchmarks.md).
CREATE OR REPLACE VIEW open_interest AS
WITH a AS (
    SELECT chain_id, protocol, market, is_long, account, sum(size_usd) AS oi, count(*) AS n
    FROM positions WHERE status = 'open'
    GROUP BY chain_id, protocol, market, is_long, account
), g AS (
    SELECT chain_id, protocol, market, is_long, sum(oi) AS oi, sum(n) AS n, count(*) AS accounts
    FROM a GROUP BY chain_id, protocol, market, is_long
), s AS (
    SELECT chain_id, protocol, market,
           coalesce(sum(oi) FILTER (WHERE is_long), 0)::DECIMAL(38,18)         AS long_oi_usd,
           coalesce(sum(oi) FILTER (WHERE NOT is_long), 0)::DECIMAL(38,18)     AS short_oi_usd,
           coalesce(sum(n) FILTER (WHERE is_long), 0)::BIGINT                  AS long_positions,
           coalesce(sum(n) FILTER (WHERE NOT is_long), 0)::BIGINT              AS short_positions,
           coalesce(sum(accounts) FILTER (WHERE is_long), 0)::BIGINT           AS long_accounts,
           coalesce(sum(accounts) FILTER (WHERE NOT is_long), 0)::BIGINT       AS short_accounts
    FROM g GROUP BY chain_id, protocol, market
)
SELECT chain_id, protocol, market, long_oi_usd, short_oi_usd,
       (long_oi_usd + short_oi_usd)::DECIMAL(38,18) AS total_oi_usd,
       (long_oi_usd - short_oi_usd)::DECIMAL(38,18) AS net_oi_usd,
       CASE WHEN long_oi_usd + short_oi_usd > 0
            THEN ((long_oi_usd - short_oi_usd) / (long_oi_usd + short_oi_usd))::DOUBLE END AS skew,
       long_positions, short_positions, long_accounts, short_accounts
FROM s;

-- Open interest per market at the end of every hour in which it changed (UTC): the running sum
-- of the ledger's stored per-change OI deltas (long_oi_delta_usd, short_oi_delta_usd).
CREATE OR REPLACE VIEW oi_history AS
WITH h AS (
    SELECT chain_id, protocol, market, date_trunc('hour', block_time) AS hour,
           max(block_number) AS last_block,
           sum(long_oi_delta_usd) AS dl, sum(short_oi_delta_usd) AS ds
    FROM position_changes
    GROUP BY chain_id, protocol, market, hour
)
SELECT chain_id, protocol, market, hour, last_block,
       sum(dl) OVER w::DECIMAL(38,18) AS long_oi_usd,
       sum(ds) OVER w::DECIMAL(38,18) AS short_oi_usd,
       (sum(dl) OVER w + sum(ds) OVER w)::DECIMAL(38,18) AS total_oi_usd
FROM h
WINDOW w AS (PARTITION BY chain_id, protocol, market ORDER BY hour);

-- Open interest at any block: SELECT * FROM oi_at_block(12345) WHERE chain_id = 42161.
CREATE OR REPLACE MACRO oi_at_block(b) AS TABLE
SELECT chain_id, protocol, market,
       coalesce(sum(long_oi_delta_usd), 0)::DECIMAL(38,18)  AS long_oi_usd,
       coalesce(sum(short_oi_delta_usd), 0)::DECIMAL(38,18) AS short_oi_usd
FROM position_changes WHERE block_number <= b
GROUP BY chain_id, protocol, market;
