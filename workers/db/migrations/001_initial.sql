-- 001: users, devices (a login = a device with its token), clipboard items,
-- chat conversations and messages, idempotency keys.
-- Times are DATETIME(3) in UTC, written by the worker (never NOW(), whose zone
-- depends on the session). Ids are signed BIGINT: every id fits in 2^63-1.

CREATE TABLE users (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    username VARCHAR(64) NOT NULL,
    password_hash VARCHAR(255) NOT NULL,
    -- the last clipboard seq handed out; bumped in the insert's transaction
    clip_seq BIGINT NOT NULL DEFAULT 0,
    created_at DATETIME(3) NOT NULL,
    UNIQUE KEY users_username (username)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE devices (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    name VARCHAR(128) NOT NULL,
    -- SHA-256 of the session token; the token itself is never stored
    token_hash BINARY(32) NOT NULL,
    is_active TINYINT(1) NOT NULL DEFAULT 0,
    last_seen_at DATETIME(3) NULL,
    revoked_at DATETIME(3) NULL,
    created_at DATETIME(3) NOT NULL,
    UNIQUE KEY devices_token (token_hash),
    KEY devices_user (user_id, id),
    CONSTRAINT devices_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE clipboard_items (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    content MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    content_type VARCHAR(255) NOT NULL,
    source_device_id BIGINT NULL,
    created_at DATETIME(3) NOT NULL,
    UNIQUE KEY clipboard_user_seq (user_id, seq),
    CONSTRAINT clipboard_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE conversations (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    title VARCHAR(255) NULL,
    created_at DATETIME(3) NOT NULL,
    KEY conversations_user (user_id, id),
    CONSTRAINT conversations_user_fk FOREIGN KEY (user_id) REFERENCES users (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

CREATE TABLE messages (
    id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    conversation_id BIGINT NOT NULL,
    user_id BIGINT NOT NULL,
    role VARCHAR(16) NOT NULL,
    content MEDIUMTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    -- streaming, complete, failed, cancelled
    status VARCHAR(16) NOT NULL,
    error TEXT NULL,
    created_at DATETIME(3) NOT NULL,
    updated_at DATETIME(3) NOT NULL,
    KEY messages_conversation (conversation_id, id),
    CONSTRAINT messages_conversation_fk FOREIGN KEY (conversation_id) REFERENCES conversations (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;

-- A write with an Idempotency-Key claims (user_id, idem_key) in its own
-- transaction and stores its reply there; a retry finds it and gets the same reply.
CREATE TABLE idempotency_keys (
    user_id BIGINT NOT NULL,
    idem_key VARBINARY(128) NOT NULL,
    op VARCHAR(64) NOT NULL,
    status INT NOT NULL,
    body MEDIUMBLOB NOT NULL,
    created_at DATETIME(3) NOT NULL,
    PRIMARY KEY (user_id, idem_key)
) ENGINE=InnoDB;
