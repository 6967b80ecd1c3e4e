-- Claim tokens and a leader lease.
--
-- A claim's token is drawn from a sequence when a worker claims a job, and every later
-- statement of that run (heartbeat, progress, finish, hand-back) must present it. The
-- owner and attempt number are not enough to tell two runs apart: after a rescue and a
-- retry by request, the same worker can claim the same attempt number again, and an old
-- run's outcome must never land on the new claim.
--
-- Maintenance (promotion, rescue, retention) is led by whoever holds an unexpired row of
-- queue.leaders. A session advisory lock was held by a frozen process (SIGSTOP, a cut-off
-- network with the TCP connection still open) for as long as its connection lived; a
-- lease that its holder must renew passes to another worker once it expires, and every
-- maintenance statement checks the lease it runs under.

-- +goose Up
CREATE SEQUENCE queue.lease_token_seq AS bigint CACHE 64;

ALTER TABLE queue.jobs ADD COLUMN lease_token bigint;

CREATE TABLE queue.leaders (
    name       text        NOT NULL,
    holder     text        NOT NULL,
    elected_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT leaders_pkey PRIMARY KEY (name)
);

-- +goose Down
DROP TABLE queue.leaders;
ALTER TABLE queue.jobs DROP COLUMN lease_token;
DROP SEQUENCE queue.lease_token_seq;
