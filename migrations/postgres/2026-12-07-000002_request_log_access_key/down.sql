ALTER TABLE request_logs DROP COLUMN access_key_id;
