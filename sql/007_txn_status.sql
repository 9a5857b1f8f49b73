-- ccq schema, version 7: indexes for the reads of every call.
--
-- Every inbound call asks whether it is the new leg of a blind transfer
-- (a TXN in status Transferring, from the same caller, in the last two
-- minutes), the queue views count Waiting TXNs, and the janitor looks for
-- answered calls that never ended. Without this index each of those reads
-- every TXN ever made; with it, only the few in that status.

ALTER TABLE txn ADD KEY ix_txn_status (status, transfer_at);

-- An answered call's device is found by the Contact of the 200 among the
-- registrations: without this, every answer read every registration.
ALTER TABLE device_contact ADD KEY ix_contact (contact(255));
