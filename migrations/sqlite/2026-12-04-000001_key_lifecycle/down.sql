ALTER TABLE api_keys DROP COLUMN last_validated_at;
ALTER TABLE api_keys DROP COLUMN last_success_at;
ALTER TABLE api_keys DROP COLUMN last_failure_at;
ALTER TABLE api_keys DROP COLUMN last_error_message;
ALTER TABLE api_keys DROP COLUMN backoff_level;
ALTER TABLE api_keys DROP COLUMN cooling_until;
ALTER TABLE api_keys DROP COLUMN state;
