ALTER TABLE request_logs
    DROP COLUMN total_tokens,
    DROP COLUMN reasoning_tokens,
    DROP COLUMN cached_tokens,
    DROP COLUMN completion_tokens,
    DROP COLUMN prompt_tokens;
