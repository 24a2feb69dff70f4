-- Otedama's cold-path database: a projection of the journals.
-- One set of migrations for SQLite and PostgreSQL: only types and syntax
-- both accept. Every u64 of the journals that can exceed i64 is stored as
-- TEXT (decimal); the rest are BIGINT. Layout and meaning: api/DATABASE.md.

-- The journal position each projected journal has reached, written in the
-- same transaction as the rows it produced.
CREATE TABLE projection_positions (
    journal TEXT PRIMARY KEY,
    seq BIGINT NOT NULL,
    ts BIGINT NOT NULL
);

CREATE TABLE trades (
    match_id BIGINT PRIMARY KEY,
    instrument INTEGER NOT NULL,
    ts BIGINT NOT NULL,
    price BIGINT NOT NULL,
    qty BIGINT NOT NULL,
    taker_side SMALLINT NOT NULL,
    taker_order BIGINT NOT NULL,
    taker_account BIGINT NOT NULL,
    taker_fee BIGINT NOT NULL,
    maker_order BIGINT NOT NULL,
    maker_account BIGINT NOT NULL,
    maker_fee BIGINT NOT NULL,
    seq BIGINT NOT NULL
);
CREATE INDEX trades_by_instrument ON trades (instrument, match_id);

CREATE TABLE orders (
    order_id BIGINT PRIMARY KEY,
    account BIGINT NOT NULL,
    instrument INTEGER NOT NULL,
    side SMALLINT NOT NULL,
    price BIGINT NOT NULL,
    qty BIGINT NOT NULL,
    filled BIGINT NOT NULL,
    leaves BIGINT NOT NULL,
    status TEXT NOT NULL,
    cancel_reason TEXT NOT NULL,
    accepted_ts BIGINT NOT NULL,
    final_ts BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
CREATE INDEX orders_by_account ON orders (account, order_id);

CREATE TABLE share_intervals (
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    interval_start BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    work TEXT NOT NULL,
    work_f64 DOUBLE PRECISION NOT NULL,
    blocks BIGINT NOT NULL,
    PRIMARY KEY (address, worker, interval_start)
);
CREATE INDEX share_intervals_by_time ON share_intervals (interval_start);

CREATE TABLE miners (
    address TEXT PRIMARY KEY,
    first_share BIGINT NOT NULL,
    last_share BIGINT NOT NULL,
    shares BIGINT NOT NULL
);

CREATE TABLE workers (
    address TEXT NOT NULL,
    worker TEXT NOT NULL,
    first_share BIGINT NOT NULL,
    last_share BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    PRIMARY KEY (address, worker)
);

CREATE TABLE blocks (
    seq BIGINT PRIMARY KEY,
    height BIGINT NOT NULL,
    block_id TEXT NOT NULL,
    time BIGINT NOT NULL,
    subsidy BIGINT NOT NULL,
    fees BIGINT NOT NULL,
    job TEXT NOT NULL,
    outcome TEXT NOT NULL,
    on_chain_mask TEXT NOT NULL,
    finder TEXT NOT NULL,
    worker TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX blocks_by_height ON blocks (height);
