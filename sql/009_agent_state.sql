-- ccq schema, version 9: what calls change about an agent lives in a row
-- of its own (agent_state), not in the agent's user row.
--
-- A new call's decision claims the agent by locking their user row
-- (SELECT ... FOR UPDATE SKIP LOCKED, see claim_agent and qb_claim in
-- queued/ops_call.c): a row another transaction holds is skipped, and the
-- call takes the slower general path. The end of every talked call wrote
-- the agent's last_call_end and wrapup_until into that same row, so a
-- decision that picked an agent whose call was ending (the one idle
-- longest often is) found the row locked by the end's report until it
-- committed and was refused (about 1 % of the decisions at 160 calls/s in
-- tests/bench/inbound.sh, each then 5-30 ms instead of 1), and the end's
-- UPDATE waited for claims in turn.
--
-- Here the call's end writes agent_state, which no claim locks: the claim
-- reads the wrap-up from it without a lock (a scalar subquery, READ
-- COMMITTED: what is committed when the claim runs). An agent has a row
-- once one of their calls has ended; no row: never called, not in
-- wrap-up. No foreign key to user on purpose: the check of one would take
-- a shared lock on the user row on every insert, the very conflict this
-- removes (users are never deleted; txn has no foreign key to user
-- either).

-- Written so that it can run again if it stopped half-way (a file is not
-- applied atomically, see queued(8)).

CREATE TABLE IF NOT EXISTS agent_state (
  user_id        INT UNSIGNED NOT NULL PRIMARY KEY,
  last_call_end  DATETIME(3) NULL,
  wrapup_until   DATETIME(3) NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

INSERT IGNORE INTO agent_state (user_id, last_call_end, wrapup_until)
  SELECT id, last_call_end, wrapup_until FROM user
  WHERE last_call_end IS NOT NULL OR wrapup_until IS NOT NULL;

ALTER TABLE user DROP COLUMN IF EXISTS last_call_end, DROP COLUMN IF EXISTS wrapup_until;
