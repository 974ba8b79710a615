-- Owners long-polling their own count (GET /v1/coins/count?below=N&wait_ms=…): while a row here
-- is current, a claim that takes one of that owner's coins sends a notification (channel
-- aqm_stock, payload the owner's id), as every upload does. Claims of owners nobody watches send
-- none: a notifying commit is serialized with every other one.
CREATE TABLE stock_watch (
    user_id uuid        PRIMARY KEY,
    until   timestamptz NOT NULL
);
