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
    collateral_token     VARCHAR NOT NULL,
    is_long              BOOLEAN NOT NULL,
    kind                 VARCHAR NOT NULL,   -- increase | decrease | close | liquidation
    size_delta_usd       DECIMAL(38,18) NOT NULL,  -- signed
    collateral_delta_usd DECIMAL(38,18) NOT NULL,  -- signed, as the protocol reports it
    size_after_usd       DECIMAL(38,18) NOT NULL,
    collateral_after_usd DECIMAL(38,18) NOT NULL,
    price_usd            DECIMAL(38,18),           -- USD per whole index token (NULL: decimals unknown)
    fee_usd              DECIMAL(38,18) NOT NULL,
    realized_pnl_usd     DECIMAL(38,18) NOT NULL,  -- position's realised PnL after the change
    entry_price_usd      DECIMAL(38,18),           -- average entry price after (0 once closed)
    size_delta_raw       BIGNUM NOT NULL,
    size_after_raw       BIGNUM NOT NULL,
    collateral_after_raw BIGNUM NOT NULL,
    entry_price_raw      BIGNUM,
    usd_decimals         TINYINT NOT NULL    -- scale of the *_raw USD columns
);

CREATE TABLE IF NOT EXISTS positions (
    chain_id          BIGINT NOT NULL,
    protocol          VARCHAR NOT NULL,
    source            VARCHAR NOT NULL,
    position_key      VARCHAR NOT NULL,
    account           VARCHAR NOT NULL,
    market            VARCHAR NOT NULL,
    collateral_token  VARCHAR NOT NULL,
    is_long           BOOLEAN NOT NULL,
    size_usd          DECIMAL(38,18) NOT NULL,
    collateral_usd    DECIMAL(38,18) NOT NULL,
    entry_price_usd   DECIMAL(38,18),
    status            VARCHAR NOT NULL,        -- open | closed | liquidated
    opened_block      BIGINT,                  -- block of the latest opening of this key
    updated_block     BIGINT NOT NULL,
    realized_pnl_usd  DECIMAL(38,18) NOT NULL,
    size_raw          BIGNUM NOT NULL,
    collateral_raw    BIGNUM NOT NULL,
    entry_price_raw   BIGNUM
);

CREATE TABLE IF NOT EXISTS funding_updates (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    block_time    TIMESTAMP,
    log_index     INTEGER NOT NULL,
    market        VARCHAR NOT NULL,
    rate_raw      BIGNUM NOT NULL               -- cumulative funding rate, protocol units
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

-- Markets announced by protocol events (GMX v2 MarketCreated); configured ones are not copied here.
CREATE TABLE IF NOT EXISTS markets (
    chain_id      BIGINT NOT NULL,
    protocol      VARCHAR NOT NULL,
    source        VARCHAR NOT NULL,
    block_number  BIGINT NOT NULL,
    log_index     INTEGER NOT NULL,
    market        VARCHAR NOT NULL,
    index_token   VARCHAR NOT NULL,
    long_token    VARCHAR NOT NULL,
    short_token   VARCHAR NOT NULL
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

-- Migrations of databases created by earlier versions (each statement is idempotent).
ALTER TABLE position_changes ALTER COLUMN price_usd DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN entry_price_usd DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN entry_price_raw DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN entry_price_usd DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN entry_price_raw DROP NOT NULL;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS index_token VARCHAR;
-- token-unit amounts (protocols that track them, e.g. GMX v2); raw integers are exact
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS size_delta_tokens_raw BIGNUM;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS size_after_tokens_raw BIGNUM;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS collateral_delta_tokens_raw BIGNUM;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS collateral_after_tokens_raw BIGNUM;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS index_decimals TINYINT;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS collateral_decimals TINYINT;
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS size_after_tokens DECIMAL(38,18);
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS collateral_after_tokens DECIMAL(38,18);
ALTER TABLE positions ADD COLUMN IF NOT EXISTS index_token VARCHAR;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS size_tokens DECIMAL(38,18);
ALTER TABLE positions ADD COLUMN IF NOT EXISTS collateral_tokens DECIMAL(38,18);
ALTER TABLE positions ADD COLUMN IF NOT EXISTS size_tokens_raw BIGNUM;
ALTER TABLE positions ADD COLUMN IF NOT EXISTS collateral_tokens_raw BIGNUM;
-- protocols with account-level (cross) margin have no per-position collateral, and some report
-- no realised PnL: those columns are NULL for them
ALTER TABLE position_changes ALTER COLUMN collateral_token DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN collateral_delta_usd DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN collateral_after_usd DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN collateral_after_raw DROP NOT NULL;
ALTER TABLE position_changes ALTER COLUMN realized_pnl_usd DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN collateral_token DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN collateral_usd DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN collateral_raw DROP NOT NULL;
ALTER TABLE positions ALTER COLUMN realized_pnl_usd DROP NOT NULL;
-- markets found by events that are not token triples (Synthetix market proxies): a name
ALTER TABLE markets ALTER COLUMN index_token DROP NOT NULL;
ALTER TABLE markets ALTER COLUMN long_token DROP NOT NULL;
ALTER TABLE markets ALTER COLUMN short_token DROP NOT NULL;
ALTER TABLE markets ADD COLUMN IF NOT EXISTS name VARCHAR;
-- each change's contribution to its market's open interest, per side: size after minus the key's
-- size after on that side before it (sums over any prefix of the ledger are exact OI there);
-- databases of earlier versions get them computed when the writer opens them
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS long_oi_delta_usd DECIMAL(38,18);
ALTER TABLE position_changes ADD COLUMN IF NOT EXISTS short_oi_delta_usd DECIMAL(38,18);
