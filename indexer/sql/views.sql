-- The analysts' SQL surface, derived from position_changes / positions. DOUBLE columns are
-- conveniences (ratios); every amount stays DECIMAL(38,18) USD.

CREATE OR REPLACE VIEW open_interest AS
WITH s AS (
    SELECT chain_id, protocol, market,
           coalesce(sum(size_usd) FILTER (WHERE is_long), 0)::DECIMAL(38,18)     AS long_oi_usd,
           coalesce(sum(size_usd) FILTER (WHERE NOT is_long), 0)::DECIMAL(38,18) AS short_oi_usd,
           count(*) FILTER (WHERE is_long)                      AS long_positions,
           count(*) FILTER (WHERE NOT is_long)                  AS short_positions,
           count(DISTINCT account) FILTER (WHERE is_long)       AS long_accounts,
           count(DISTINCT account) FILTER (WHERE NOT is_long)   AS short_accounts
    FROM positions WHERE status = 'open'
    GROUP BY chain_id, protocol, market
)
SELECT chain_id, protocol, market, long_oi_usd, short_oi_usd,
       (long_oi_usd + short_oi_usd)::DECIMAL(38,18) AS total_oi_usd,
       (long_oi_usd - short_oi_usd)::DECIMAL(38,18) AS net_oi_usd,
       CASE WHEN long_oi_usd + short_oi_usd > 0
            THEN ((long_oi_usd - short_oi_usd) / (long_oi_usd + short_oi_usd))::DOUBLE END AS skew,
       long_positions, short_positions, long_accounts, short_accounts
FROM s;

-- One row per (chain_id, protocol) with market NULL, and one per (chain_id, protocol, market).
-- top10_share and hhi are in [0, 1]; gini in [0, 1); whales hold >= 1,000,000 USD open.
CREATE OR REPLACE VIEW whale_concentration AS
WITH acct AS (
    SELECT chain_id, protocol, market, account, sum(size_usd) AS size
    FROM positions WHERE status = 'open'
    GROUP BY GROUPING SETS ((chain_id, protocol, account), (chain_id, protocol, market, account))
), ranked AS (
    SELECT *,
           row_number() OVER (PARTITION BY chain_id, protocol, market ORDER BY size DESC, account) AS rank_desc,
           row_number() OVER (PARTITION BY chain_id, protocol, market ORDER BY size ASC, account)  AS rank_asc,
           count(*) OVER (PARTITION BY chain_id, protocol, market)                               AS n,
           sum(size) OVER (PARTITION BY chain_id, protocol, market)                              AS total
    FROM acct
)
SELECT chain_id, protocol, market,
       count(*)                                                            AS accounts,
       any_value(total)::DECIMAL(38,18)                                    AS open_interest_usd,
       (sum(size) FILTER (WHERE rank_desc <= 10) / any_value(total))::DOUBLE AS top10_share,
       sum(power(size::DOUBLE / total::DOUBLE, 2))                         AS hhi,
       sum((2 * rank_asc - n - 1) * size::DOUBLE) / (any_value(n) * any_value(total)::DOUBLE) AS gini,
       count(*) FILTER (WHERE size >= 1000000)                             AS whales
FROM ranked WHERE total > 0
GROUP BY chain_id, protocol, market;

-- Open interest per market at the end of every hour in which it changed (UTC). Each change
-- contributes, per side, its size after minus the key's size after on that side before it, so a
-- position that flips from long to short in one trade leaves one side and enters the other.
CREATE OR REPLACE VIEW oi_history AS
WITH c AS (
    SELECT chain_id, protocol, source, position_key, market, block_number, log_index,
           date_trunc('hour', block_time) AS hour,
           CASE WHEN is_long THEN size_after_usd ELSE 0 END AS l,
           CASE WHEN is_long THEN 0 ELSE size_after_usd END AS s
    FROM position_changes
), d AS (
    SELECT chain_id, protocol, market, hour, block_number,
           l - coalesce(lag(l) OVER k, 0) AS dl,
           s - coalesce(lag(s) OVER k, 0) AS ds
    FROM c
    -- a key stays in one market, so partitioning by the market too changes nothing but lets
    -- a filter on chain_id/protocol/market reach the ledger scan instead of running after it
    WINDOW k AS (PARTITION BY chain_id, protocol, market, source, position_key
                 ORDER BY block_number, log_index)
), h AS (
    SELECT chain_id, protocol, market, hour, max(block_number) AS last_block,
           sum(dl) AS dl, sum(ds) AS ds
    FROM d GROUP BY chain_id, protocol, market, hour
)
SELECT chain_id, protocol, market, hour, last_block,
       sum(dl) OVER w::DECIMAL(38,18) AS long_oi_usd,
       sum(ds) OVER w::DECIMAL(38,18) AS short_oi_usd,
       (sum(dl) OVER w + sum(ds) OVER w)::DECIMAL(38,18) AS total_oi_usd
FROM h
WINDOW w AS (PARTITION BY chain_id, protocol, market ORDER BY hour);

-- Open interest at any block: SELECT * FROM oi_at_block(12345) WHERE chain_id = 42161.
CREATE OR REPLACE MACRO oi_at_block(b) AS TABLE
WITH last AS (
    SELECT chain_id, protocol, arg_max(market, o) AS market, arg_max(is_long, o) AS is_long,
           arg_max(size_after_usd, o) AS size
    FROM (SELECT *, block_number * 1000000 + log_index AS o FROM position_changes
          WHERE block_number <= b)
    GROUP BY chain_id, protocol, source, position_key
)
SELECT chain_id, protocol, market,
       coalesce(sum(size) FILTER (WHERE is_long), 0)::DECIMAL(38,18)     AS long_oi_usd,
       coalesce(sum(size) FILTER (WHERE NOT is_long), 0)::DECIMAL(38,18) AS short_oi_usd
FROM last GROUP BY chain_id, protocol, market;
