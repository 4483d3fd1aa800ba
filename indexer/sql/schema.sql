-- perp-indexer schema. USD amounts are exact DECIMAL(38,18); *_raw columns keep the protocol's own
-- integers (e.g. USD x 1e30 for GMX) exactly as BIGNUM. Addresses and hashes are lower-case 0x hex.

CREATE TABLE IF NOT EXISTS position_changes (
    chain_id             BIGINT NOT NULL,
    protocol             VARCHAR NOT NULL,   -- adapter name, e.g. gmx_v1
    source               VARCHAR NOT NULL,   -- config entry name, e.g. gmx_v1_arbitrum
    block_number         BIGINT NOT NULL,
    block_time           TIMESTAMP,          -- UTC
    tx_hash              VARCHAR NOT NULL,
    log_index            INTEGER NOT NULL,   -- of the event the change is keyed by
    position_key         VARCHAR NOT NULL,
    account              VARCHAR NOT NULL,
    market               VARCHAR NOT NULL,
    -- NULL where margin is not a per-position token (account-wide or sUSD margin)
    collateral_token     VARCHAR,
    is_long              BOOLEAN NOT NULL,
    kind                 VARCHAR NOT NULL,   -- increase | decrease | close | liquidation
    size_delta_usd       DECIMAL(38,18) NOT NULL,  -- signed
    collateral_delta_usd DECIMAL(38,18),           -- signed, as the protocol reports it
    size_after_usd       DECIMAL(38,18) NOT NULL,
    collateral_after_usd DECIMAL(38,18),           -- NULL: no per-position collateral
    price_usd            DECIMAL(38,18),           -- USD per whole index token (NULL: decimals unknown)
    fee_usd              DECIMAL(38,18) NOT NULL,
    realized_pnl_usd     DECIMAL(38,18),           -- position's realised PnL after (NULL: not reported)
    entry_price_usd      DECIMAL(38,18),           -- average entry price after (0 once closed)
    size_delta_raw       BIGNUM NOT NULL,
    size_after_raw       BIGNUM NOT NULL,
    collateral_after_raw BIGNUM,
    entry_price_raw      BIGNUM,
    usd_decimals         TINYINT NOT NULL,   -- scale of the *_raw USD columns
    index_token          VARCHAR,            -- the market's index token (NULL: unknown)
    -- token-unit amounts (protocols that track them); raw integers are exact
    size_delta_tokens_raw       BIGNUM,
    size_after_tokens_raw       BIGNUM,
    collateral_delta_tokens_raw BIGNUM,
    collateral_after_tokens_raw BIGNUM,
    index_decimals              TINYINT,
    collateral_decimals         TINYINT,
    size_after_tokens           DECIMAL(38,18),
    collateral_after_tokens     DECIMAL(38,18),
    -- each change's contribution to its market's open interest, per side: size after minus the
    -- key's size after on that side before it (sums over any prefix of the ledger are exact OI)
    long_oi_delta_usd           DECIMAL(38,18),
    short_oi_delta_usd          DECIMAL(38,18),
    -- the position's funding reference after the change, protocol units (GMX v1
    -- entryFundingRate, 1e6; Synthetix: index into the market's funding sequence)
    funding_entry           BIGINT,
    -- the liquidation price after the change where the protocol's event reports one (gTrade
    -- liqPrice at execution); NULL elsewhere (see the position_risk view)
    liquidation_price_usd       DECIMAL(38,18)
);

CREATE TABLE IF NOT EXISTS positions (
    chain_id          BIGINT NOT NULL,
    protocol          VARCHAR NOT NULL,
    source            VARCHAR NOT NULL,
    position_key      VARCHAR NOT NULL,
    account           VARCHAR NOT NULL,
    market            VARCHAR NOT NULL,
    collateral_token  VARCHAR,
    is_long           BOOLEAN NOT NULL,
    size_usd          DECIMAL(38,18) NOT NULL,
    collateral_usd    DECIMAL(38,18),
    entry_price_usd   DECIMAL(38,18),
    status            VARCHAR NOT NULL,        -- open | closed | liquidated
    opened_block      BIGINT,                  -- block of the latest opening of this key
    updated_block     BIGINT NOT NULL,
    realized_pnl_usd  DECIMAL(38,18),
    size_raw          BIGNUM NOT NULL,
    collateral_raw    BIGNUM,
    entry_price_raw   BIGNUM,
    index_token       VARCHAR,
    size_tokens       DECIMAL(38,18),
    collateral_tokens DECIMAL(38,18),
    size_tokens_raw       BIGNUM,
    collateral_tokens_raw BIGNUM,
    funding_entry     BIGINT,
    liquidation_price_usd DECIMAL(38,18),
    last_price_usd        DECIMAL(38,18)           -- price of its last change
);

CREATE TABLE IF NOT EXISTS funding_updates (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    block_time    TIMESTAMP,
    log_index     INTEGER NOT NULL,
    market        VARCHAR NOT NULL,             -- GMX v1: the collateral token
    rate_raw      BIGNUM NOT NULL,              -- cumulative funding rate, protocol units
    funding_index BIGINT,                       -- Synthetix: the entry's index in the sequence
    current_rate_raw BIGNUM                     -- Synthetix: fundingRate, daily proportion x 1e18
);

-- Funding settled per position where the protocol reports it (dYdX settled_funding): positive
-- when the account paid, negative when it received.
CREATE TABLE IF NOT EXISTS funding_payments (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    block_time    TIMESTAMP,
    tx_hash       VARCHAR NOT NULL,
    log_index     INTEGER NOT NULL,
    account       VARCHAR NOT NULL,
    position_key  VARCHAR NOT NULL,
    market        VARCHAR NOT NULL,
    amount_raw    BIGNUM NOT NULL,               -- the adapter's USD scale
    amount_usd    DECIMAL(38,18)
);

CREATE TABLE IF NOT EXISTS checkpoints (
    chain_id      BIGINT NOT NULL,
    source        VARCHAR NOT NULL PRIMARY KEY,
    protocol      VARCHAR NOT NULL,
    start_block   BIGINT NOT NULL,              -- first block of the indexed (contiguous) range
    block_number  BIGINT NOT NULL,              -- everything up to and including this is stored
    block_hash    VARCHAR NOT NULL,
    updated_at    TIMESTAMP NOT NULL,
    last_error    VARCHAR
);

-- Partitions staged by cluster workers and merged into the ledger (backfill --cluster): each is
-- recorded in the transaction that commits its rows, so a file is merged exactly once.
CREATE TABLE IF NOT EXISTS staged_partitions (
    source        VARCHAR NOT NULL,
    file          VARCHAR NOT NULL,             -- under the staging folder: <source>/<lo>-<hi>.parquet
    lo            BIGINT NOT NULL,
    hi            BIGINT NOT NULL,
    logs          BIGINT NOT NULL,
    merged_at     TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS blocks (
    chain_id      BIGINT NOT NULL,
    number        BIGINT NOT NULL,
    hash          VARCHAR NOT NULL,
    parent_hash   VARCHAR NOT NULL,
    timestamp     BIGINT NOT NULL,
    PRIMARY KEY (chain_id, number)
);

-- One row per chain reorganisation the daemon rolled back (written in the rollback's transaction).
CREATE TABLE IF NOT EXISTS reorgs (
    chain_id        BIGINT NOT NULL,
    detected_at     TIMESTAMP NOT NULL,
    old_tip         BIGINT NOT NULL,            -- highest block indexed on the abandoned branch
    ancestor        BIGINT NOT NULL,            -- common ancestor kept; everything above replayed
    depth           BIGINT NOT NULL,            -- old_tip - ancestor
    changes_removed BIGINT NOT NULL             -- position_changes rows deleted (all sources)
);

CREATE TABLE IF NOT EXISTS quarantine (
    chain_id      BIGINT NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    tx_hash       VARCHAR,
    log_index     INTEGER,
    address       VARCHAR,
    topics        VARCHAR[],
    data          VARCHAR,
    reason        VARCHAR NOT NULL,
    quarantined_at TIMESTAMP NOT NULL
);

-- Every market of a source: announced by the protocol's events (found_by 'event': GMX v2
-- MarketCreated, Synthetix MarketAdded), or first seen in a position change (found_by 'trade').
-- Markets that are not token triples (Synthetix proxies) have a name. `asset` is the one
-- upper-case symbol across protocols and chains (ETH for WETH, sETHPERP, vETH, ETH/USD), from
-- `symbol` (the index token's symbol(), the market key or the configured name) or the config's
-- `assets:`; NULL when unknown (never guessed).
CREATE TABLE IF NOT EXISTS markets (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    log_index     INTEGER NOT NULL,
    market        VARCHAR NOT NULL,
    index_token   VARCHAR,
    long_token    VARCHAR,
    short_token   VARCHAR,
    name          VARCHAR,
    found_by      VARCHAR NOT NULL DEFAULT 'event',   -- event | trade
    symbol        VARCHAR,
    asset         VARCHAR
);

-- Protocol parameters the risk views read, each from the block it takes effect: set by events
-- (Synthetix PerpsV2MarketSettings' ParameterUpdated per market key and its global keeper and
-- liquidation fees), or, where the setters emit nothing (GMX v1 Vault's marginFeeBasisPoints,
-- liquidationFeeUsd, maxLeverage), read with eth_call (log_index -1; the block a new value
-- starts at is found by bisection) or given in the config.
CREATE TABLE IF NOT EXISTS protocol_parameters (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    log_index     INTEGER NOT NULL,             -- -1: read with eth_call / configured
    market        VARCHAR,                      -- the protocol's market key; NULL: all markets
    name          VARCHAR NOT NULL,
    value_raw     BIGNUM NOT NULL               -- as the protocol stores it (e.g. 1e18 ratios)
);

-- The thresholds of the analytics views, from the writer's config (one row).
CREATE TABLE IF NOT EXISTS analytics_settings (
    imbalance_threshold DOUBLE NOT NULL,
    dominance_threshold DOUBLE NOT NULL
);

-- The protocol's own open-interest figures (GMX v2 OpenInterest[InTokens]Updated), to reconcile
-- open interest rebuilt from positions with what the protocol itself keeps.
CREATE TABLE IF NOT EXISTS protocol_open_interest (
    chain_id          BIGINT NOT NULL,
    protocol          VARCHAR NOT NULL,
    source            VARCHAR NOT NULL,
    block_number      BIGINT NOT NULL,
    block_time        TIMESTAMP,
    log_index         INTEGER NOT NULL,
    market            VARCHAR NOT NULL,
    collateral_token  VARCHAR NOT NULL,
    is_long           BOOLEAN NOT NULL,
    unit              VARCHAR NOT NULL,          -- usd | tokens (index-token units)
    delta_raw         BIGNUM NOT NULL,
    next_value_raw    BIGNUM NOT NULL,
    next_value_usd    DECIMAL(38,18)             -- unit = usd only
);

-- The layout version of this file. A database of another version is refused with the command
-- that rebuilds it (0.x has no migrations).
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
