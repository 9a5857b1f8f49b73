-- ccq schema, version 1: transactions and their journeys.
-- Forward-only: never edit a migration that has shipped; add a new file.

CREATE TABLE txn (
  id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  kind           ENUM('call','chat') NOT NULL DEFAULT 'call',
  direction      ENUM('inbound','outbound','internal') NOT NULL,
  call_type      ENUM('direct','callback','outbound','chat') NOT NULL,
  status         ENUM('Waiting','Assigning','Assigned','Transferring','Ended','Failed') NOT NULL DEFAULT 'Waiting',
  sip_call_id    VARCHAR(255) NULL,
  from_uri       VARCHAR(512) NULL,
  to_uri         VARCHAR(512) NULL,
  source_addr    VARCHAR(64) NULL,
  created_at     DATETIME(3) NOT NULL,
  updated_at     DATETIME(3) NOT NULL,
  answered_at    DATETIME(3) NULL,
  ended_at       DATETIME(3) NULL,
  result         VARCHAR(64) NULL,
  failure_reason VARCHAR(255) NULL,
  UNIQUE KEY uq_txn_call_id (sip_call_id),
  KEY ix_txn_created (created_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE txn_event (
  id      BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  txn_id  BIGINT UNSIGNED NOT NULL,
  at      DATETIME(3) NOT NULL,
  kind    VARCHAR(32) NOT NULL,
  text    VARCHAR(1024) NOT NULL,
  KEY ix_event_txn (txn_id, at),
  CONSTRAINT fk_event_txn FOREIGN KEY (txn_id) REFERENCES txn (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;
