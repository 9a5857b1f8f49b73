-- ccq schema, version 5: call recording (doc/recording.md).
--
-- The policy: on or off per organisation, inbox and user; the most specific
-- setting wins (user, then inbox, then organisation). NULL = inherit. The
-- Kamailio module reads these columns into shared memory (its loader polls
-- SUM(list_version.version); recording.set bumps the 'recording' row).

ALTER TABLE org ADD COLUMN record_calls TINYINT(1) NOT NULL DEFAULT 0;
ALTER TABLE inbox ADD COLUMN record_calls TINYINT(1) NULL;
ALTER TABLE user ADD COLUMN record_calls TINYINT(1) NULL;

INSERT INTO list_version (name, version, changed_at) VALUES ('recording', 1, UTC_TIMESTAMP(3));

-- The recordings rtpengine made (--recording-method=pcap), as queued's
-- indexer found them in recording_dir/metadata/ (one row per metadata file).
-- org, inbox, TXN and agent are copied from the TXN whose leg has the
-- recording's Call-ID; a recording without one (status no_txn) has none and
-- is seen by the local operator only.
CREATE TABLE recording (
  id           BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  org_id       INT UNSIGNED NULL,
  inbox_id     INT UNSIGNED NULL,
  txn_id       BIGINT UNSIGNED NULL,
  agent_id     INT UNSIGNED NULL,
  call_id      VARCHAR(255) NOT NULL,
  meta_name    VARCHAR(255) NOT NULL,          -- the metadata file's name: the indexer's key
  pcap_path    VARCHAR(1024) NOT NULL,         -- '' when the metadata names none
  meta_path    VARCHAR(1024) NOT NULL,         -- where the metadata file is now
  size_bytes   BIGINT UNSIGNED NULL,           -- of the pcap
  sha256       CHAR(64) NULL,                  -- of the pcap, hex
  started_at   DATETIME(3) NULL,               -- rtpengine's first SDP with recording on
  ended_at     DATETIME(3) NULL,               -- the call's end at rtpengine
  -- Which stream is which party: the rtpengine address:port each party's RTP
  -- is sent to, i.e. the destination of that party's packets in the pcap.
  caller_addr  VARCHAR(64) NULL,               -- the caller / customer
  agent_addr   VARCHAR(64) NULL,               -- the agent
  codec        VARCHAR(100) NULL,              -- "PCMU/8000"
  rec_meta     VARCHAR(255) NULL,              -- the metadata string the proxy gave rtpengine
  status       ENUM('ok','missing','unreadable','no_txn','purging','tampered') NOT NULL,
  detail       VARCHAR(255) NULL,              -- why a status is not ok
  indexed_at   DATETIME(3) NOT NULL,
  verified_at  DATETIME(3) NULL,               -- the last recording.mark
  UNIQUE KEY uq_rec_meta (meta_name),
  KEY ix_rec_txn (txn_id),
  KEY ix_rec_org_started (org_id, started_at),
  KEY ix_rec_status (status),
  KEY ix_rec_call (call_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
