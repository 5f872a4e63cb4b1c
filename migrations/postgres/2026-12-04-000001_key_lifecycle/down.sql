ALTER TABLE api_keys
    DROP COLUMN last_validated_at,
    DROP COLUMN last_success_at,
    DROP COLUMN last_failure_at,
    DROP COLUMN last_error_message,
    DROP COLUMN backoff_level,
    DROP COLUMN cooling_until,
    DROP COLUMN state;
