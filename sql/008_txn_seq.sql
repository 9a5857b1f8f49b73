-- ccq schema, version 8: TXN ids come from a sequence.
--
-- A new inbound call's decision answers the proxy as soon as its agent is
-- claimed, and that answer names the TXN. With the id drawn from a
-- sequence first, the TXN's INSERT (and the customer lookup) run after the
-- answer has left instead of before it: the statements before the answer
-- are only the claim (see run_call_route in queued/ops_call.c).
--
-- Every INSERT INTO txn takes its id from txn_seq: queued's own inserts
-- name it (LAST_INSERT_ID(NEXTVAL(txn_seq)), so that LAST_INSERT_ID() and
-- mysql_insert_id() still give the new id), and the column's default does
-- it for any other (an operator's SQL). The sequence is InnoDB: after a
-- crash MariaDB never hands out again the id of a committed TXN (the
-- sequence's state is in the redo log ahead of that commit). Up to CACHE
-- values are skipped when MariaDB restarts: ids have gaps, as
-- AUTO_INCREMENT's had after a rollback.
--
-- On an existing database the sequence starts after the highest TXN id.
-- The ALTER rebuilds the txn table (MariaDB copies it to drop
-- AUTO_INCREMENT): on a large table, run the upgrade in a quiet hour.

CREATE SEQUENCE txn_seq START WITH 1 MINVALUE 1 INCREMENT BY 1 CACHE 1000 ENGINE=InnoDB;

SELECT COALESCE(MAX(id), 0) INTO @ccq_mig_max FROM txn;
SET @ccq_mig_sql = IF(@ccq_mig_max > 0,
  CONCAT('SELECT SETVAL(txn_seq, ', @ccq_mig_max, ')'), 'DO 0');
PREPARE ccq_mig_stmt FROM @ccq_mig_sql;
EXECUTE ccq_mig_stmt;
DEALLOCATE PREPARE ccq_mig_stmt;

ALTER TABLE txn MODIFY id BIGINT UNSIGNED NOT NULL DEFAULT NEXTVAL(txn_seq);
