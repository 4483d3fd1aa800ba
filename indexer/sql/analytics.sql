-- The analysts' questions: assets across venues, liquidation risk, volume, prices, regimes,
-- imbalance, funding, ratios and wallets (docs/sql.md documents every column, unit and rule).
-- Amounts stay DECIMAL(38,18) USD; ratios, rates and computed prices are DOUBLE or DECIMAL
-- from DOUBLE (liquidation prices: relative error below 1e-12). Hours are UTC starts of hours.
-- Views over "now" and macros "as of" a block share one definition: a macro given NULL reads
-- the current positions table, given a block it rebuilds positions from the ledger.

-- Each market's asset and symbol (its first listing in `markets` that names one).
CREATE OR REPLACE VIEW market_assets AS
SELECT chain_id, protocol, market,
       arg_min(asset, block_number) FILTER (WHERE asset IS NOT NULL) AS asset,
       arg_min(symbol, block_number) FILTER (WHERE symbol IS NOT NULL) AS symbol
FROM markets GROUP BY chain_id, protocol, market;

-- Open positions as of block b (NULL: now), with what the risk views need.
CREATE OR REPLACE MACRO open_positions_at(b) AS TABLE
SELECT chain_id, protocol, source, position_key, account, market, collateral_token, is_long,
       size_usd, collateral_usd, entry_price_usd, realized_pnl_usd, size_tokens,
       funding_entry, liquidation_price_usd, last_price_usd, updated_block
FROM positions WHERE b IS NULL AND status = 'open'
UNION ALL
SELECT chain_id, protocol, source, position_key, account, market, collateral_token, is_long,
       size_after_usd, collateral_after_usd, entry_price_usd, realized_pnl_usd,
       size_after_tokens, funding_entry, liquidation_price_usd, price_usd, block_number
FROM position_changes
WHERE b IS NOT NULL AND size_after_raw <> 0 AND rowid IN (
    SELECT arg_max(rowid, block_number * 1000000 + log_index) FROM position_changes
    WHERE block_number <= b GROUP BY source, position_key);

-- The latest price each market's events carried, as of block b (NULL: now).
CREATE OR REPLACE MACRO mark_prices_at(b) AS TABLE
SELECT chain_id, protocol, market,
       arg_max(price_usd, block_number * 1000000 + log_index) AS mark_price_usd,
       max(block_number) AS price_block
FROM position_changes WHERE price_usd > 0 AND (b IS NULL OR block_number <= b)
GROUP BY chain_id, protocol, market;

-- 2. Open interest per asset and venue, each venue's share of the asset's OI over every
-- indexed venue, and OI at the mark price where sizes in tokens are known.
CREATE OR REPLACE VIEW asset_open_interest AS
WITH per_market AS (
    SELECT chain_id, protocol, market,
           sum(size_usd) FILTER (WHERE is_long) AS l, sum(size_usd) FILTER (WHERE NOT is_long) AS s,
           -- gTrade's size_tokens are collateral tokens: its size in the pair's units is the
           -- USD size at the opening price
           sum(CASE WHEN protocol = 'gtrade' THEN size_usd::DOUBLE / nullif(entry_price_usd, 0)
                    ELSE size_tokens::DOUBLE END) AS tokens,
           count(*) FILTER (WHERE CASE WHEN protocol = 'gtrade' THEN nullif(entry_price_usd, 0)
                                       ELSE size_tokens END IS NULL) AS untokened
    FROM positions WHERE status = 'open' GROUP BY ALL
), v AS (
    SELECT p.chain_id, p.protocol, a.asset,
           coalesce(sum(l), 0)::DECIMAL(38,18) AS long_oi_usd,
           coalesce(sum(s), 0)::DECIMAL(38,18) AS short_oi_usd,
           sum(tokens * m.mark_price_usd::DOUBLE) AS mark_value,
           sum(untokened) + count(*) FILTER (WHERE m.mark_price_usd IS NULL) AS unmarked
    FROM per_market p
    JOIN market_assets a USING (chain_id, protocol, market)
    LEFT JOIN mark_prices_at(NULL) m USING (chain_id, protocol, market)
    WHERE a.asset IS NOT NULL
    GROUP BY p.chain_id, p.protocol, a.asset
)
SELECT asset, chain_id, protocol, long_oi_usd, short_oi_usd,
       (long_oi_usd + short_oi_usd)::DECIMAL(38,18) AS total_oi_usd,
       ((long_oi_usd + short_oi_usd) / nullif(sum(long_oi_usd + short_oi_usd) OVER a, 0))::DOUBLE
           AS venue_share,
       coalesce((long_oi_usd + short_oi_usd) / nullif(sum(long_oi_usd + short_oi_usd) OVER a, 0)
                > (SELECT max(dominance_threshold) FROM analytics_settings), false) AS dominant,
       CASE WHEN unmarked = 0 THEN mark_value::DECIMAL(38,18) END AS total_oi_mark_usd
FROM v WINDOW a AS (PARTITION BY asset);

-- 3. One row per open position with its liquidation price, as of block b (NULL: now).
-- GMX v1 'exact': the price at which VaultUtils.validateLiquidation stops returning 0, from the
-- position (UpdatePosition), the Vault's stored cumulative funding rate of the collateral
-- token (UpdateFundingRate) and its marginFeeBasisPoints, liquidationFeeUsd and maxLeverage
-- (protocol_parameters): below it (longs; above it for shorts) the remaining collateral is
-- under max(funding fee + position fee + liquidation fee, size / max leverage).
-- Synthetix 'exact': the price at which PerpsV2MarketBase._canLiquidate turns true: margin +
-- size x (price - last price) + size x funding since the position's funding index (the
-- market's recorded funding sequence) - the liquidation premium (size^2 / skewScale x price x
-- multiplier) reaches the liquidation margin (size x price x liquidationBufferRatio + the
-- keeper fee, size x price x liquidationFeeRatio clamped to [minKeeperFee, maxKeeperFee], +
-- keeperLiquidationFee), solved in each of the fee's three pieces.
-- gTrade 'exact': the liqPrice of the position's last execution event. Other protocols: NULL,
-- with the reason in liquidation_price_note.
CREATE OR REPLACE MACRO position_risk_at(b) AS TABLE
WITH params AS (
    SELECT source, market, name,
           arg_max(value_raw, block_number * 1000000 + log_index)::DOUBLE AS v
    FROM protocol_parameters WHERE b IS NULL OR block_number <= b GROUP BY ALL
), protocol_wide AS (
    SELECT source,
           max(v) FILTER (WHERE name = 'marginFeeBasisPoints') AS fee_bps,
           max(v) FILTER (WHERE name = 'liquidationFeeUsd') / 1e30 AS liq_fee_usd,
           max(v) FILTER (WHERE name = 'maxLeverage') AS max_leverage,
           max(v) FILTER (WHERE name = 'minKeeperFee') / 1e18 AS min_keeper_fee,
           max(v) FILTER (WHERE name = 'maxKeeperFee') / 1e18 AS max_keeper_fee,
           max(v) FILTER (WHERE name = 'liquidationFeeRatio') / 1e18 AS liq_fee_ratio,
           max(v) FILTER (WHERE name = 'keeperLiquidationFee') / 1e18 AS keeper_liq_fee
    FROM params WHERE market IS NULL GROUP BY source
), per_market AS (
    SELECT source, market AS market_key,
           max(v) FILTER (WHERE name = 'skewScale') / 1e18 AS skew_scale,
           max(v) FILTER (WHERE name = 'liquidationPremiumMultiplier') / 1e18 AS premium_mult,
           max(v) FILTER (WHERE name = 'liquidationBufferRatio') / 1e18 AS buffer_ratio
    FROM params WHERE market IS NOT NULL GROUP BY ALL
), gmx_funding AS (
    SELECT source, market AS collateral_token,
           arg_max(rate_raw, block_number * 1000000 + log_index)::DOUBLE AS cum
    FROM funding_updates
    WHERE protocol = 'gmx_v1' AND (b IS NULL OR block_number <= b) GROUP BY ALL
), sequence AS (
    SELECT source, market, funding_index, rate_raw::DOUBLE / 1e18 AS entry
    FROM funding_updates
    WHERE protocol = 'synthetix_perps_v2' AND (b IS NULL OR block_number <= b)
), latest AS (
    SELECT source, market, arg_max(entry, funding_index) AS latest FROM sequence GROUP BY ALL
), context AS (
    -- what positions share (per source, market and collateral token), joined once: a few
    -- rows (from every key ever seen: the open ones as of any block are among them)
    SELECT o.chain_id, o.protocol, o.source, o.market, coalesce(o.collateral_token, '')
               AS collateral, a.asset,
           m.mark_price_usd, f.cum, l.latest, k.fee_bps, k.liq_fee_usd, k.max_leverage,
           k.min_keeper_fee, k.max_keeper_fee, k.liq_fee_ratio, k.keeper_liq_fee, x.skew_scale,
           x.premium_mult, x.buffer_ratio
    FROM (SELECT DISTINCT chain_id, protocol, source, market, collateral_token FROM positions) o
    LEFT JOIN market_assets a USING (chain_id, protocol, market)
    LEFT JOIN mark_prices_at(b) m USING (chain_id, protocol, market)
    LEFT JOIN gmx_funding f ON f.source = o.source AND f.collateral_token = o.collateral_token
    LEFT JOIN protocol_wide k ON k.source = o.source
    LEFT JOIN per_market x ON x.source = o.source AND x.market_key = a.symbol
    LEFT JOIN latest l ON l.source = o.source AND l.market = o.market
), p AS (
    SELECT p.*, t.asset, t.mark_price_usd, size_usd::DOUBLE AS s,
           collateral_usd::DOUBLE AS c, entry_price_usd::DOUBLE AS e,
           -- GMX v1: what the collateral left must cover (USD)
           CASE WHEN p.protocol = 'gmx_v1' THEN greatest(
               size_usd::DOUBLE * (coalesce(t.cum, CASE WHEN funding_entry = 0 THEN 0 END)
                                   - funding_entry::DOUBLE) / 1e6
               + size_usd::DOUBLE * t.fee_bps / 1e4 + t.liq_fee_usd,
               size_usd::DOUBLE * 1e4 / t.max_leverage) END AS need,
           -- Synthetix: signed size (base units), the rule's terms (see above)
           CASE WHEN is_long THEN 1 ELSE -1 END * size_tokens::DOUBLE AS q,
           CASE WHEN funding_entry = 0 THEN 0.0 ELSE t.latest - sq.entry END AS funding,
           t.skew_scale, t.premium_mult, t.buffer_ratio, t.min_keeper_fee, t.max_keeper_fee,
           t.liq_fee_ratio, t.keeper_liq_fee
    FROM open_positions_at(b) p
    JOIN context t ON t.source = p.source AND t.market = p.market
                  AND t.collateral = coalesce(p.collateral_token, '')
    LEFT JOIN sequence sq ON p.protocol = 'synthetix_perps_v2' AND sq.source = p.source
                         AND sq.market = p.market AND sq.funding_index = p.funding_entry
), sx AS (
    SELECT *,
           q - q * q * premium_mult / skew_scale - abs(q) * buffer_ratio AS slope,
           c - q * last_price_usd::DOUBLE + q * funding - keeper_liq_fee AS base
    FROM p
), l AS (
    SELECT *,
           CASE WHEN protocol = 'gmx_v1' AND need IS NOT NULL AND c >= need AND s > 0
                THEN e * (1 + (CASE WHEN is_long THEN -1 ELSE 1 END) * (c - need) / s)
                WHEN protocol = 'synthetix_perps_v2' THEN coalesce(
                    -- keeper fee at its minimum, proportional, at its maximum
                    CASE WHEN (min_keeper_fee - base) / slope > 0 AND abs(q) * liq_fee_ratio
                              * (min_keeper_fee - base) / slope <= min_keeper_fee
                         THEN (min_keeper_fee - base) / slope END,
                    CASE WHEN -base / (slope - abs(q) * liq_fee_ratio) > 0
                              AND abs(q) * liq_fee_ratio * -base / (slope - abs(q) * liq_fee_ratio)
                                  BETWEEN min_keeper_fee AND max_keeper_fee
                         THEN -base / (slope - abs(q) * liq_fee_ratio) END,
                    CASE WHEN (max_keeper_fee - base) / slope > 0 AND abs(q) * liq_fee_ratio
                              * (max_keeper_fee - base) / slope >= max_keeper_fee
                         THEN (max_keeper_fee - base) / slope END)
                WHEN protocol = 'gtrade' THEN liquidation_price_usd::DOUBLE END AS liq,
           protocol = 'gmx_v1' AND need IS NOT NULL AND c < need AS beyond
    FROM sx
)
SELECT chain_id, protocol, source, position_key, account, market, asset, is_long, size_usd,
       collateral_usd, (s / nullif(c, 0))::DOUBLE AS leverage, entry_price_usd, mark_price_usd,
       liq::DECIMAL(38,18) AS liquidation_price_usd,
       CASE WHEN liq IS NOT NULL OR beyond THEN 'exact' END AS liquidation_price_method,
       CASE WHEN beyond THEN 'liquidatable at any price: collateral is below the fees and the '
                             || 'max-leverage margin'
            WHEN liq IS NOT NULL AND protocol = 'gtrade'
                THEN 'at the last execution; holding fees accrued since are not applied'
            WHEN liq IS NOT NULL THEN NULL
            WHEN protocol = 'gmx_v1'
                THEN 'Vault parameters or the cumulative funding rate unknown at this block'
            WHEN protocol = 'synthetix_perps_v2' AND (skew_scale IS NULL OR liq_fee_ratio IS NULL
                                                     OR keeper_liq_fee IS NULL)
                THEN 'settings unknown: add the PerpsV2MarketSettings contract as '
                     || 'contracts.market_settings'
            WHEN protocol = 'synthetix_perps_v2' AND funding IS NULL
                THEN 'the funding entry of the position is not in the indexed range'
            WHEN protocol = 'synthetix_perps_v2'
                THEN 'none: the margin covers a fall of the price to 0'
            WHEN protocol = 'gtrade' THEN 'changed since its last execution event (not read)'
            WHEN protocol = 'perp_v2'
                THEN 'cross margin: the price depends on the whole account (not indexed)'
            WHEN protocol = 'dydx_v4'
                THEN 'cross margin: the subaccount''s USDC and other positions are not indexed'
            ELSE 'not computed for this protocol yet (docs/sql.md)' END AS liquidation_price_note,
       beyond OR (liq IS NOT NULL AND mark_price_usd IS NOT NULL
                  AND (CASE WHEN is_long THEN mark_price_usd::DOUBLE <= liq
                            ELSE mark_price_usd::DOUBLE >= liq END)) AS liquidatable,
       CASE WHEN beyond THEN -1.0
            WHEN liq IS NOT NULL AND mark_price_usd > 0
            THEN (CASE WHEN is_long THEN mark_price_usd::DOUBLE - liq
                       ELSE liq - mark_price_usd::DOUBLE END) / mark_price_usd::DOUBLE
       END AS distance_to_liquidation,
       updated_block
FROM l;

CREATE OR REPLACE VIEW position_risk AS SELECT * FROM position_risk_at(NULL);

-- 4. The cascade map: per market and per asset, the long OI liquidated by a fall of 1..50%
-- from each market's mark price, and the short OI liquidated by a rise of as much
-- (cumulative; positions liquidatable already count from 1%). unpriced_oi_usd: open OI whose
-- liquidation price is unknown (left out of the map).
CREATE OR REPLACE MACRO liquidation_map_at(b) AS TABLE
WITH r AS (
    -- each position's step: the smallest whole % move from the mark that liquidates it
    -- (rounded to 1e-9 % first, so a price exactly on a step is liquidated by it)
    SELECT chain_id, protocol, market, asset, is_long, size_usd,
           CASE WHEN liquidatable THEN 1
                WHEN liquidation_price_usd IS NOT NULL THEN greatest(1, ceil(round(100 * CASE
                    WHEN is_long THEN 1 - liquidation_price_usd::DOUBLE / mark_price_usd::DOUBLE
                    ELSE liquidation_price_usd::DOUBLE / mark_price_usd::DOUBLE - 1 END, 9)))
           END AS step
    FROM position_risk_at(b) WHERE mark_price_usd > 0
), by_market AS (
    SELECT chain_id, protocol, market, asset, step,
           coalesce(sum(size_usd) FILTER (WHERE is_long), 0) AS l,
           coalesce(sum(size_usd) FILTER (WHERE NOT is_long), 0) AS s
    FROM r GROUP BY ALL
), steps AS (
    SELECT 'market' AS scope, * FROM by_market
    UNION ALL
    SELECT 'asset', NULL, NULL, NULL, asset, step, sum(l), sum(s)
    FROM by_market WHERE asset IS NOT NULL GROUP BY asset, step
), scopes AS (
    SELECT scope, chain_id, protocol, market, asset,
           coalesce(sum(l + s) FILTER (WHERE step IS NULL), 0) AS unpriced
    FROM steps GROUP BY ALL
)
SELECT c.scope, c.chain_id, c.protocol, c.market, c.asset, g.move_pct,
       coalesce(sum(t.l) OVER w, 0)::DECIMAL(38,18) AS long_liquidated_usd,
       coalesce(sum(t.s) OVER w, 0)::DECIMAL(38,18) AS short_liquidated_usd,
       c.unpriced::DECIMAL(38,18) AS unpriced_oi_usd
FROM scopes c CROSS JOIN (SELECT unnest(range(1, 51))::INTEGER AS move_pct) g
LEFT JOIN steps t ON t.scope = c.scope AND t.step = g.move_pct
     AND t.chain_id IS NOT DISTINCT FROM c.chain_id AND t.protocol IS NOT DISTINCT FROM c.protocol
     AND t.market IS NOT DISTINCT FROM c.market AND t.asset IS NOT DISTINCT FROM c.asset
WINDOW w AS (PARTITION BY c.scope, c.chain_id, c.protocol, c.market, c.asset
             ORDER BY g.move_pct);

CREATE OR REPLACE VIEW liquidation_map AS SELECT * FROM liquidation_map_at(NULL);

-- 5. Liquidations per hour: ledger rows of kind liquidation, the size they closed and the
-- collateral they took (as the protocol reports it; NULL where it reports none).
CREATE OR REPLACE VIEW liquidations_hourly AS
SELECT c.chain_id, c.protocol, c.market, a.asset, c.is_long,
       date_trunc('hour', c.block_time) AS hour,
       count(*) AS liquidations,
       sum(-c.size_delta_usd)::DECIMAL(38,18) AS size_usd,
       sum(-c.collateral_delta_usd)::DECIMAL(38,18) AS collateral_usd
FROM position_changes c LEFT JOIN market_assets a USING (chain_id, protocol, market)
WHERE c.kind = 'liquidation'
GROUP BY c.chain_id, c.protocol, c.market, a.asset, c.is_long, hour;

-- 6. Volume per hour: the sum of |size change| over every change (a liquidation counts the size
-- it closed); trades: changes whose size changed; traders: their accounts.
CREATE OR REPLACE VIEW volume_hourly AS
SELECT c.chain_id, c.protocol, c.market, a.asset, date_trunc('hour', c.block_time) AS hour,
       sum(abs(c.size_delta_usd))::DECIMAL(38,18) AS volume_usd,
       count(*) FILTER (WHERE c.size_delta_usd <> 0) AS trades,
       count(DISTINCT c.account) FILTER (WHERE c.size_delta_usd <> 0) AS traders,
       sum(c.long_oi_delta_usd + c.short_oi_delta_usd)::DECIMAL(38,18) AS oi_change_usd,
       coalesce(sum(-c.size_delta_usd) FILTER (WHERE c.kind = 'liquidation'),
                0)::DECIMAL(38,18) AS liquidation_volume_usd
FROM position_changes c LEFT JOIN market_assets a USING (chain_id, protocol, market)
GROUP BY c.chain_id, c.protocol, c.market, a.asset, hour;

-- Every market's every hour from its first change to the chain's latest hour in the ledger:
-- open interest (carried), prices (carried over gaps), activity.
CREATE OR REPLACE VIEW market_hourly AS
WITH h AS (
    SELECT chain_id, protocol, market, date_trunc('hour', block_time) AS hour,
           sum(long_oi_delta_usd) AS dl, sum(short_oi_delta_usd) AS ds,
           arg_min(price_usd, o) FILTER (WHERE price_usd > 0) AS open,
           max(price_usd) FILTER (WHERE price_usd > 0)         AS high,
           min(price_usd) FILTER (WHERE price_usd > 0)         AS low,
           arg_max(price_usd, o) FILTER (WHERE price_usd > 0) AS close,
           count(*) FILTER (WHERE price_usd > 0)               AS observations
    FROM (SELECT *, block_number * 1000000 + log_index AS o FROM position_changes
          WHERE block_time IS NOT NULL)
    GROUP BY chain_id, protocol, market, hour
), grid AS (
    SELECT chain_id, protocol, market,
           unnest(generate_series(min(hour), any_value(last_hour), INTERVAL 1 HOUR)) AS hour
    FROM h JOIN (SELECT chain_id, max(hour) AS last_hour FROM h GROUP BY chain_id) USING (chain_id)
    GROUP BY chain_id, protocol, market
), filled AS (
    SELECT g.chain_id, g.protocol, g.market, g.hour, h.open, h.high, h.low, h.close,
           coalesce(h.observations, 0) AS observations,
           sum(coalesce(h.dl, 0)) OVER w AS long_oi_usd,
           sum(coalesce(h.ds, 0)) OVER w AS short_oi_usd,
           last_value(h.close IGNORE NULLS) OVER w AS last_close
    FROM grid g LEFT JOIN h USING (chain_id, protocol, market, hour)
    WINDOW w AS (PARTITION BY g.chain_id, g.protocol, g.market ORDER BY g.hour)
)
SELECT f.chain_id, f.protocol, f.market, a.asset, f.hour,
       long_oi_usd::DECIMAL(38,18) AS long_oi_usd, short_oi_usd::DECIMAL(38,18) AS short_oi_usd,
       (long_oi_usd + short_oi_usd)::DECIMAL(38,18) AS total_oi_usd,
       CASE WHEN long_oi_usd + short_oi_usd > 0
            THEN ((long_oi_usd - short_oi_usd) / (long_oi_usd + short_oi_usd))::DOUBLE END AS skew,
       coalesce(open, last_close) AS open, coalesce(high, last_close) AS high,
       coalesce(low, last_close) AS low, last_close AS close, observations,
       observations = 0 AND last_close IS NOT NULL AS carried
FROM filled f LEFT JOIN market_assets a USING (chain_id, protocol, market);

-- 7. Hourly OHLC of the prices the protocol's own events carry (execution, mark or oracle
-- prices per protocol: docs/sql.md); an hour without one carries the last close (carried).
CREATE OR REPLACE VIEW prices_hourly AS
SELECT chain_id, protocol, market, asset, hour, open, high, low, close, observations, carried
FROM market_hourly WHERE close IS NOT NULL;

-- 8. OI change against price change per hour, per market and per asset (the asset's OI over
-- its venues; its price change the OI-weighted mean of its markets'). Regime flat when
-- |OI change| < 0.5% or |price change| < 0.1% of the hour before.
CREATE OR REPLACE VIEW oi_regimes_hourly AS
WITH m AS (
    SELECT chain_id, protocol, market, asset, hour, total_oi_usd::DOUBLE AS oi,
           lag(total_oi_usd::DOUBLE) OVER w AS oi_before,
           close::DOUBLE / nullif(lag(close::DOUBLE) OVER w, 0) - 1 AS price_change
    FROM market_hourly
    WINDOW w AS (PARTITION BY chain_id, protocol, market ORDER BY hour)
), scoped AS (
    SELECT 'market' AS scope, chain_id, protocol, market, asset, hour, oi - oi_before AS d,
           oi_before, price_change
    FROM m
    UNION ALL
    SELECT 'asset', NULL, NULL, NULL, asset, hour, sum(oi - oi_before), sum(oi_before),
           sum(price_change * oi_before) / nullif(sum(oi_before)
                                                  FILTER (WHERE price_change IS NOT NULL), 0)
    FROM m WHERE asset IS NOT NULL GROUP BY asset, hour
)
SELECT scope, chain_id, protocol, market, asset, hour, d AS oi_change_usd,
       d / nullif(oi_before, 0) AS oi_change, price_change,
       CASE WHEN d IS NULL OR price_change IS NULL OR oi_before IS NULL OR oi_before = 0
                 OR abs(d / oi_before) < 0.005 OR abs(price_change) < 0.001 THEN 'flat'
            WHEN d > 0 AND price_change > 0 THEN 'new_longs'
            WHEN d > 0 THEN 'new_shorts'
            WHEN price_change > 0 THEN 'short_covering'
            ELSE 'long_unwinding' END AS regime
FROM scoped;

-- 9. Imbalance episodes: runs of hours with |skew| at or above analytics_settings'
-- imbalance_threshold on one side, per market and per asset (the asset's skew over its
-- venues). end_hour: the first hour after the run (NULL while it lasts).
CREATE OR REPLACE VIEW imbalance_episodes AS
WITH s AS (
    SELECT 'market' AS scope, chain_id, protocol, market, asset, hour, skew FROM market_hourly
    UNION ALL
    SELECT 'asset', NULL, NULL, NULL, asset, hour,
           ((sum(long_oi_usd) - sum(short_oi_usd)) / nullif(sum(total_oi_usd), 0))::DOUBLE
    FROM market_hourly WHERE asset IS NOT NULL GROUP BY asset, hour
), flagged AS (
    SELECT *, CASE WHEN abs(skew) >= (SELECT max(imbalance_threshold) FROM analytics_settings)
                   THEN sign(skew) ELSE 0 END AS side_sign
    FROM s
), runs AS (
    SELECT *, row_number() OVER w - row_number() OVER (PARTITION BY scope, chain_id, protocol,
               market, asset, side_sign ORDER BY hour) AS run,
           lead(hour) OVER w AS next_hour
    FROM flagged
    WINDOW w AS (PARTITION BY scope, chain_id, protocol, market, asset ORDER BY hour)
)
SELECT scope, chain_id, protocol, market, asset,
       CASE WHEN any_value(side_sign) > 0 THEN 'long' ELSE 'short' END AS side,
       min(hour) AS start_hour, arg_max_null(next_hour, hour) AS end_hour,
       arg_max(skew, abs(skew)) AS peak_skew, count(*) AS hours
FROM runs WHERE side_sign <> 0
GROUP BY scope, chain_id, protocol, market, asset, side_sign, run;

-- 10. Funding and borrowing rates per hour, annualised (fraction per year; positive: that side
-- pays). GMX v1 (market = the collateral token): the borrow fee both sides pay, from the
-- cumulative rate's change since the previous hour with an update (1e6 precision x 8760 h).
-- Synthetix: the fundingRate of the hour's last FundingRecomputed (a daily proportion x 365;
-- longs pay when positive, shorts receive it). dYdX v4: the funding index's change since the
-- previous tick (quote quantums per base quantum, x 1e6) per whole unit (x 10^base decimals,
-- 1e-6 USD a quote quantum) over the hour's price (its fills' close), per hour, x 8760.
CREATE OR REPLACE VIEW funding_rates_hourly AS
WITH u AS (
    SELECT chain_id, protocol, source, market, date_trunc('hour', block_time) AS hour,
           arg_max(rate_raw::DOUBLE, block_number * 1000000 + log_index) AS cum,
           arg_max(current_rate_raw::DOUBLE, block_number * 1000000 + log_index) AS current
    FROM funding_updates WHERE block_time IS NOT NULL GROUP BY ALL
), r AS (
    SELECT *, (cum - lag(cum) OVER w) / (epoch(hour - lag(hour) OVER w) / 3600) AS per_hour
    FROM u WINDOW w AS (PARTITION BY chain_id, source, market ORDER BY hour)
), dydx AS (
    SELECT chain_id, protocol, market, any_value(index_decimals) AS base_decimals
    FROM position_changes WHERE protocol = 'dydx_v4' GROUP BY ALL
), dydx_price AS (
    SELECT chain_id, protocol, market, hour, close::DOUBLE AS price
    FROM market_hourly WHERE protocol = 'dydx_v4'
), rated AS (
    SELECT r.*, per_hour / 1e6 * 8760 AS borrow_apr,
           per_hour * power(10, d.base_decimals) / 1e12 / nullif(p.price, 0) * 8760
               AS index_apr
    FROM r LEFT JOIN dydx d USING (chain_id, protocol, market)
    LEFT JOIN dydx_price p USING (chain_id, protocol, market, hour)
)
SELECT r.chain_id, r.protocol, r.market, a.asset, r.hour,
       CASE r.protocol WHEN 'gmx_v1' THEN 'borrow' ELSE 'funding' END AS kind,
       CASE r.protocol WHEN 'gmx_v1' THEN borrow_apr
                       WHEN 'synthetix_perps_v2' THEN current / 1e18 * 365
                       WHEN 'dydx_v4' THEN index_apr END AS long_rate_apr,
       CASE r.protocol WHEN 'gmx_v1' THEN borrow_apr
                       WHEN 'synthetix_perps_v2' THEN -current / 1e18 * 365
                       WHEN 'dydx_v4' THEN -index_apr END AS short_rate_apr
FROM rated r LEFT JOIN market_assets a USING (chain_id, protocol, market);

-- Per asset and hour: the venues' rates weighted by their markets' open interest that hour.
CREATE OR REPLACE VIEW asset_funding_rates_hourly AS
SELECT f.asset, f.hour,
       sum(f.long_rate_apr * m.long_oi_usd::DOUBLE) / nullif(sum(m.long_oi_usd::DOUBLE), 0)
           AS long_rate_apr,
       sum(f.short_rate_apr * m.short_oi_usd::DOUBLE) / nullif(sum(m.short_oi_usd::DOUBLE), 0)
           AS short_rate_apr,
       count(*) AS venues
FROM funding_rates_hourly f
JOIN market_hourly m USING (chain_id, protocol, market, hour)
WHERE f.asset IS NOT NULL AND f.long_rate_apr IS NOT NULL
GROUP BY f.asset, f.hour;

-- 11. Long/short ratios of open positions per market and per asset: by accounts (holding a
-- long / a short), by notional, and over the top-10 accounts by notional (long + short).
CREATE OR REPLACE VIEW long_short_ratios AS
WITH acct AS (
    SELECT p.chain_id, p.protocol, p.market, a.asset, p.account,
           coalesce(sum(size_usd) FILTER (WHERE is_long), 0)     AS l,
           coalesce(sum(size_usd) FILTER (WHERE NOT is_long), 0) AS s
    FROM positions p LEFT JOIN market_assets a USING (chain_id, protocol, market)
    WHERE p.status = 'open'
    GROUP BY GROUPING SETS ((p.chain_id, p.protocol, p.market, a.asset, p.account),
                            (a.asset, p.account))
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY chain_id, protocol, market, asset
                                 ORDER BY l + s DESC, account) AS rank
    FROM acct WHERE market IS NOT NULL OR asset IS NOT NULL
)
SELECT CASE WHEN market IS NULL THEN 'asset' ELSE 'market' END AS scope,
       chain_id, protocol, market, asset,
       count(*) FILTER (WHERE l > 0) AS long_accounts,
       count(*) FILTER (WHERE s > 0) AS short_accounts,
       (count(*) FILTER (WHERE l > 0) / nullif(count(*) FILTER (WHERE s > 0), 0))::DOUBLE
           AS accounts_ratio,
       sum(l)::DECIMAL(38,18) AS long_usd, sum(s)::DECIMAL(38,18) AS short_usd,
       (sum(l) / nullif(sum(s), 0))::DOUBLE AS notional_ratio,
       sum(l) FILTER (WHERE rank <= 10)::DECIMAL(38,18) AS top10_long_usd,
       sum(s) FILTER (WHERE rank <= 10)::DECIMAL(38,18) AS top10_short_usd,
       (sum(l) FILTER (WHERE rank <= 10) / nullif(sum(s) FILTER (WHERE rank <= 10), 0))::DOUBLE
           AS top10_ratio
FROM ranked GROUP BY chain_id, protocol, market, asset;

-- 12. Each account over every protocol and chain: open exposure (gross, net long minus short,
-- net per asset), liquidations suffered, realised PnL where the protocol reports it (summed by
-- each protocol's convention: docs/sql.md), first and last activity.
CREATE OR REPLACE VIEW wallet_asset_exposure AS
SELECT p.account, a.asset,
       sum(CASE WHEN is_long THEN size_usd ELSE 0 END)::DECIMAL(38,18) AS long_usd,
       sum(CASE WHEN is_long THEN 0 ELSE size_usd END)::DECIMAL(38,18) AS short_usd,
       sum(CASE WHEN is_long THEN size_usd ELSE -size_usd END)::DECIMAL(38,18) AS net_usd
FROM positions p LEFT JOIN market_assets a USING (chain_id, protocol, market)
WHERE p.status = 'open'
GROUP BY p.account, a.asset;

CREATE OR REPLACE VIEW wallet_exposure AS
WITH o AS (
    SELECT account, sum(size_usd) AS gross,
           sum(CASE WHEN is_long THEN size_usd ELSE -size_usd END) AS net,
           count(*) AS open_positions,
           count(DISTINCT protocol) AS protocols, count(DISTINCT chain_id) AS chains
    FROM positions WHERE status = 'open' GROUP BY account
), kept AS (
    -- realised PnL held on positions: Perp v2's per key over its whole life, GMX v1's (and
    -- other per-position figures) on the open ones; GMX v2 reports it per change (below)
    SELECT account, sum(realized_pnl_usd) AS pnl FROM positions
    WHERE protocol = 'perp_v2' OR (protocol <> 'gmx_v2' AND status = 'open')
    GROUP BY account
), e AS (
    SELECT account, map_from_entries(list((asset, net_usd) ORDER BY asset)) AS net_by_asset
    FROM wallet_asset_exposure WHERE asset IS NOT NULL GROUP BY account
), h AS (
    SELECT account, count(*) FILTER (WHERE kind = 'liquidation') AS liquidations,
           sum(realized_pnl_usd) FILTER (
               WHERE protocol = 'gmx_v2'
                  OR (protocol <> 'perp_v2' AND kind IN ('close', 'liquidation'))) AS closed_pnl,
           min(block_time) AS first_activity, max(block_time) AS last_activity
    FROM position_changes GROUP BY account
)
SELECT h.account, coalesce(o.gross, 0)::DECIMAL(38,18) AS gross_usd,
       coalesce(o.net, 0)::DECIMAL(38,18) AS net_usd, e.net_by_asset,
       coalesce(o.open_positions, 0) AS open_positions, coalesce(o.protocols, 0) AS protocols,
       coalesce(o.chains, 0) AS chains, h.liquidations,
       CASE WHEN h.closed_pnl IS NOT NULL OR kept.pnl IS NOT NULL
            THEN (coalesce(h.closed_pnl, 0) + coalesce(kept.pnl, 0))::DECIMAL(38,18)
       END AS realized_pnl_usd,
       h.first_activity, h.last_activity
FROM h LEFT JOIN o USING (account) LEFT JOIN e USING (account) LEFT JOIN kept USING (account);

-- Concentration as of block b: the whale_concentration view's columns over open_positions_at(b).
CREATE OR REPLACE MACRO whale_concentration_at(b) AS TABLE
WITH acct AS (
    SELECT chain_id, protocol, market, account, sum(size_usd) AS size
    FROM open_positions_at(b)
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

-- One row per (chain_id, protocol) with market NULL, and one per (chain_id, protocol, market).
-- top10_share and hhi are in [0, 1]; gini in [0, 1); whales hold >= 1,000,000 USD open.
CREATE OR REPLACE VIEW whale_concentration AS SELECT * FROM whale_concentration_at(NULL);
