ALTER TABLE api_keys DROP COLUMN key_limits;
