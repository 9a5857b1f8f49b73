-- ccq schema, version 6: the DNC registry's change log.
--
-- Every change of dnc_number made through queued (list.add / list.remove on
-- the 'dnc' list) writes, in the same transaction, the row of list_version
-- 'dnc' (version + 1) and then its log rows here with that version: one row
-- per number of a small request ('add' / 'remove'), or ONE 'bulk' row for a
-- large batch (a bulk import: the loader rebuilds its base image instead).
-- The bump takes the row lock of list_version 'dnc' before the log rows are
-- written and holds it to the commit, so versions are assigned in commit
-- order: once the loader has read version V, every row with version <= V is
-- committed. The Kamailio module's loader reads the rows above the version it
-- has (doc/compliance.md "How a change reaches the calls"); a version with no
-- row at all (pruned, or written by something else) makes it rebuild from
-- dnc_number. queued deletes rows older than a day.

CREATE TABLE dnc_change (
  seq         BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  version     BIGINT UNSIGNED NOT NULL,          -- list_version 'dnc' after the change
  op          ENUM('add','remove','bulk') NOT NULL,
  number      VARCHAR(17) NULL,                  -- as in dnc_number; NULL for 'bulk'
  changed_at  DATETIME(3) NOT NULL,
  KEY k_version (version),
  KEY k_changed (changed_at)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin;
