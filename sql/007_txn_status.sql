-- ccq schema, version 7: an index on the status of transactions.
--
-- Every inbound call asks whether it is the new leg of a blind transfer
-- (a TXN in status Transferring, from the same caller, in the last two
-- minutes), the queue views count Waiting TXNs, and the janitor looks for
-- answered calls that never ended. Without this index each of those reads
-- every TXN ever made; with it, only the few in that status.

ALTER TABLE txn ADD KEY ix_txn_status (status, transfer_at);
