-- ccq schema, version 4: callbacks and scheduled calls (doc/callbacks.md).
--
-- A callback request asks the system to call an extension's device and then
-- connect the customer. Each request has its own TXN (call_type callback,
-- direction outbound) from the moment it is made; the request row carries
-- the queue state: where it is in its extension's queue, its attempts, and
-- why it ended.

CREATE TABLE callback_request (
  id              BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  org_id          INT UNSIGNED NOT NULL,
  user_id         INT UNSIGNED NOT NULL,      -- the extension called (its queue)
  device_id       INT UNSIGNED NULL,          -- the device chosen to ring
  inbox_id        INT UNSIGNED NULL,
  origin_txn_id   BIGINT UNSIGNED NULL,       -- the TXN the callback was made from
  txn_id          BIGINT UNSIGNED NOT NULL,   -- the callback's own TXN
  customer_id     INT UNSIGNED NULL,
  number          VARCHAR(16) NOT NULL,       -- E.164 with '+'
  source          ENUM('agent','customer','schedule','missed','operator') NOT NULL,
  status          ENUM('scheduled','queued','dialing','active','done','failed','expired',
                       'cancelled','overflow','missed') NOT NULL,
  requested_at    DATETIME(3) NOT NULL,       -- the queue order (a schedule: its due time)
  due_at          DATETIME(3) NULL,           -- schedules only
  next_attempt_at DATETIME(3) NOT NULL,
  attempts        INT UNSIGNED NOT NULL DEFAULT 0,
  max_attempts    INT UNSIGNED NOT NULL,
  expires_at      DATETIME(3) NOT NULL,
  progress_at     DATETIME(3) NULL,           -- last news of the current attempt
  progress_mask   INT UNSIGNED NOT NULL DEFAULT 0, -- proxy events seen in this attempt
  pin_ok          TINYINT(1) NOT NULL DEFAULT 0,
  reason          VARCHAR(255) NULL,
  note            VARCHAR(500) NULL,
  created_by      INT UNSIGNED NULL,
  updated_at      DATETIME(3) NOT NULL,
  UNIQUE KEY uq_cb_txn (txn_id),
  KEY ix_cb_queue (user_id, status, requested_at, id),
  KEY ix_cb_number (org_id, number, status),
  KEY ix_cb_due (status, due_at),
  KEY ix_cb_next (status, next_attempt_at),
  KEY ix_cb_origin (origin_txn_id),
  CONSTRAINT fk_cb_org FOREIGN KEY (org_id) REFERENCES org (id),
  CONSTRAINT fk_cb_user FOREIGN KEY (user_id) REFERENCES user (id) ON DELETE CASCADE,
  CONSTRAINT fk_cb_device FOREIGN KEY (device_id) REFERENCES device (id) ON DELETE SET NULL,
  CONSTRAINT fk_cb_txn FOREIGN KEY (txn_id) REFERENCES txn (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The customer leg of a callback (the agent's phone calling the customer
-- after the REFER) joins the callback TXN as a leg of its own.
ALTER TABLE txn_leg
  MODIFY kind ENUM('first','transfer','customer') NOT NULL DEFAULT 'first';
