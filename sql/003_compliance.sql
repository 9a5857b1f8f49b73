-- ccq schema, version 3: outbound compliance (lists, policies, PINs).
-- The Kamailio module loads these into shared memory; list_version tells it
-- that something changed (it polls the versions, never the big tables).

CREATE TABLE compliance_policy (
  org_id            INT UNSIGNED NOT NULL PRIMARY KEY,
  country_whitelist VARCHAR(400) NOT NULL DEFAULT '',   -- ISO codes "SG,MY"; '' = any country
  pin_policy        ENUM('none','international','all') NOT NULL DEFAULT 'none',
  updated_at        DATETIME(3) NOT NULL,
  CONSTRAINT fk_policy_org FOREIGN KEY (org_id) REFERENCES org (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;

-- The national Do-Not-Call registry (shared by every organisation).
-- E.164 digits without '+'; a prefix entry ends with '*'.
CREATE TABLE dnc_number (
  number      VARCHAR(17) NOT NULL PRIMARY KEY
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin;

-- Company blacklist and whitelist.
CREATE TABLE org_list_number (
  org_id      INT UNSIGNED NOT NULL,
  list        ENUM('blacklist','whitelist') NOT NULL,
  number      VARCHAR(17) NOT NULL,
  PRIMARY KEY (org_id, list, number)
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin;

-- Personal whitelists.
CREATE TABLE user_list_number (
  user_id     INT UNSIGNED NOT NULL,
  number      VARCHAR(17) NOT NULL,
  PRIMARY KEY (user_id, number),
  CONSTRAINT fk_ulist_user FOREIGN KEY (user_id) REFERENCES user (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=ascii COLLATE=ascii_bin;

-- Bumped on every change of a list or policy ('dnc', 'lists', 'policy', 'pins'),
-- and of users and devices ('directory': caller IDs, device owners).
CREATE TABLE list_version (
  name        VARCHAR(16) NOT NULL PRIMARY KEY,
  version     BIGINT UNSIGNED NOT NULL,
  changed_at  DATETIME(3) NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=ascii;

INSERT INTO list_version (name, version, changed_at) VALUES
  ('dnc', 1, UTC_TIMESTAMP(3)), ('lists', 1, UTC_TIMESTAMP(3)),
  ('policy', 1, UTC_TIMESTAMP(3)), ('pins', 1, UTC_TIMESTAMP(3)),
  ('directory', 1, UTC_TIMESTAMP(3));

-- PINs: PBKDF2-HMAC-SHA256 "pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>".
ALTER TABLE user ADD COLUMN pin_hash VARCHAR(200) NULL AFTER caller_id;
