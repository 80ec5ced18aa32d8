-- The stream worker's nonce on the assistant row its begin created: a stream worker
-- that died while its begin was in flight journaled only the nonce, so whoever
-- adopts its journal finds the row by it (chat.message.find) and finishes it.
ALTER TABLE messages ADD COLUMN stream_nonce BIGINT NULL;
