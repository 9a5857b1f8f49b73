-- ccq schema, version 2: the directory (organisations, users, devices,
-- inboxes, customers, trunks), API tokens, and the inbound fields of TXNs.

CREATE TABLE org (
  id              INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name            VARCHAR(100) NOT NULL,
  default_country CHAR(2) NOT NULL,
  created_at      DATETIME(3) NOT NULL,
  UNIQUE KEY uq_org_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE user (
  id             INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  org_id         INT UNSIGNED NOT NULL,
  ext_key        VARCHAR(32) NOT NULL,
  name           VARCHAR(100) NOT NULL,
  role           ENUM('owner','admin','member') NOT NULL DEFAULT 'member',
  cc_addon       TINYINT(1) NOT NULL DEFAULT 0,
  caller_id      VARCHAR(16) NULL,
  max_calls      INT UNSIGNED NOT NULL DEFAULT 2,
  wrapup_seconds INT UNSIGNED NOT NULL DEFAULT 0,
  unix_user      VARCHAR(64) NULL,
  last_call_end  DATETIME(3) NULL,
  wrapup_until   DATETIME(3) NULL,
  created_at     DATETIME(3) NOT NULL,
  UNIQUE KEY uq_user_ext (org_id, ext_key),
  UNIQUE KEY uq_user_unix (unix_user),
  CONSTRAINT fk_user_org FOREIGN KEY (org_id) REFERENCES org (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE api_token (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id     INT UNSIGNED NOT NULL,
  token_hash  CHAR(64) NOT NULL,
  label       VARCHAR(100) NOT NULL DEFAULT '',
  created_at  DATETIME(3) NOT NULL,
  last_used   DATETIME(3) NULL,
  UNIQUE KEY uq_token_hash (token_hash),
  CONSTRAINT fk_token_user FOREIGN KEY (user_id) REFERENCES user (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- SIP credentials: Kamailio's auth_db reads username/domain/ha1 directly.
CREATE TABLE device (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id     INT UNSIGNED NOT NULL,
  kind        ENUM('desk_phone','mobile_app','desktop_app','web_phone') NOT NULL,
  label       VARCHAR(100) NOT NULL DEFAULT '',
  username    VARCHAR(64) NOT NULL,
  domain      VARCHAR(128) NOT NULL,
  ha1         CHAR(32) NOT NULL,
  enabled     TINYINT(1) NOT NULL DEFAULT 1,
  created_at  DATETIME(3) NOT NULL,
  UNIQUE KEY uq_device_user (username, domain),
  CONSTRAINT fk_device_user FOREIGN KEY (user_id) REFERENCES user (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Where each device is registered (reported by the ccq module).
CREATE TABLE device_contact (
  device_id   INT UNSIGNED NOT NULL,
  contact     VARCHAR(512) NOT NULL,
  expires_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (device_id, contact(255)),
  CONSTRAINT fk_contact_device FOREIGN KEY (device_id) REFERENCES device (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE inbox (
  id                 INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  org_id             INT UNSIGNED NOT NULL,
  name               VARCHAR(100) NOT NULL,
  ring_timeout       INT UNSIGNED NOT NULL DEFAULT 20,
  max_wait           INT UNSIGNED NOT NULL DEFAULT 120,
  missed_flow        ENUM('notify','callback') NOT NULL DEFAULT 'notify',
  created_at         DATETIME(3) NOT NULL,
  UNIQUE KEY uq_inbox_name (org_id, name),
  CONSTRAINT fk_inbox_org FOREIGN KEY (org_id) REFERENCES org (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE inbox_did (
  did        VARCHAR(16) NOT NULL PRIMARY KEY,
  inbox_id   INT UNSIGNED NOT NULL,
  CONSTRAINT fk_did_inbox FOREIGN KEY (inbox_id) REFERENCES inbox (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE inbox_member (
  inbox_id   INT UNSIGNED NOT NULL,
  user_id    INT UNSIGNED NOT NULL,
  PRIMARY KEY (inbox_id, user_id),
  KEY ix_member_user (user_id),
  CONSTRAINT fk_member_inbox FOREIGN KEY (inbox_id) REFERENCES inbox (id) ON DELETE CASCADE,
  CONSTRAINT fk_member_user FOREIGN KEY (user_id) REFERENCES user (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE customer (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  org_id      INT UNSIGNED NOT NULL,
  name        VARCHAR(100) NOT NULL,
  created_at  DATETIME(3) NOT NULL,
  KEY ix_customer_org (org_id),
  CONSTRAINT fk_customer_org FOREIGN KEY (org_id) REFERENCES org (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE customer_number (
  customer_id INT UNSIGNED NOT NULL,
  org_id      INT UNSIGNED NOT NULL,
  number      VARCHAR(16) NOT NULL,
  verified    TINYINT(1) NOT NULL DEFAULT 0,
  PRIMARY KEY (org_id, number),
  KEY ix_number_customer (customer_id),
  CONSTRAINT fk_number_customer FOREIGN KEY (customer_id) REFERENCES customer (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

CREATE TABLE trunk (
  id          INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  name        VARCHAR(100) NOT NULL,
  address     VARCHAR(64) NOT NULL,
  port        INT UNSIGNED NOT NULL DEFAULT 5060,
  created_at  DATETIME(3) NOT NULL,
  UNIQUE KEY uq_trunk_name (name),
  UNIQUE KEY uq_trunk_addr (address, port)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE txn
  ADD COLUMN org_id        INT UNSIGNED NULL AFTER id,
  ADD COLUMN inbox_id      INT UNSIGNED NULL AFTER org_id,
  ADD COLUMN customer_id   INT UNSIGNED NULL AFTER inbox_id,
  ADD COLUMN agent_id      INT UNSIGNED NULL AFTER customer_id,
  ADD COLUMN device_id     INT UNSIGNED NULL AFTER agent_id,
  ADD COLUMN trunk_id      INT UNSIGNED NULL AFTER device_id,
  ADD COLUMN caller_id     VARCHAR(32) NULL AFTER source_addr,
  ADD COLUMN number        VARCHAR(32) NULL AFTER caller_id,
  ADD COLUMN queued_at     DATETIME(3) NULL AFTER updated_at,
  ADD KEY ix_txn_inbox (inbox_id, id),
  ADD KEY ix_txn_customer (customer_id, created_at),
  ADD KEY ix_txn_agent (agent_id, status);

CREATE TABLE txn_link (
  txn_a       BIGINT UNSIGNED NOT NULL,
  txn_b       BIGINT UNSIGNED NOT NULL,
  kind        VARCHAR(32) NOT NULL DEFAULT 'related',
  created_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (txn_a, txn_b),
  KEY ix_link_b (txn_b)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- Which agents a call has rung, and how it went (distribution skips them).
CREATE TABLE txn_ring (
  txn_id      BIGINT UNSIGNED NOT NULL,
  user_id     INT UNSIGNED NOT NULL,
  at          DATETIME(3) NOT NULL,
  result      VARCHAR(32) NULL,
  PRIMARY KEY (txn_id, user_id),
  CONSTRAINT fk_ring_txn FOREIGN KEY (txn_id) REFERENCES txn (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The SIP calls (legs) of a TXN: the first call, and the calls a blind
-- transfer (REFER) produces. current_call_id is the leg that is live.
CREATE TABLE txn_leg (
  call_id     VARCHAR(255) NOT NULL PRIMARY KEY,
  txn_id      BIGINT UNSIGNED NOT NULL,
  kind        ENUM('first','transfer') NOT NULL DEFAULT 'first',
  created_at  DATETIME(3) NOT NULL,
  KEY ix_leg_txn (txn_id),
  CONSTRAINT fk_leg_txn FOREIGN KEY (txn_id) REFERENCES txn (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

ALTER TABLE txn
  ADD COLUMN current_call_id  VARCHAR(255) NULL AFTER sip_call_id,
  ADD COLUMN transfer_user_id INT UNSIGNED NULL AFTER device_id,
  ADD COLUMN transfer_at      DATETIME(3) NULL AFTER queued_at;

-- What Kamailio's auth_db reads: the credentials of enabled devices only.
CREATE VIEW device_auth AS
  SELECT username, domain, ha1 FROM device WHERE enabled = 1;
