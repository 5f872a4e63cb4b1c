-- Token usage per attempt (docs/USAGE.md), ours and additive: gpt-load ignores these columns.
-- NULL when the reply reported no usage (an abandoned attempt, an error, a stream without it).
ALTER TABLE request_logs ADD COLUMN prompt_tokens BIGINT NULL;
ALTER TABLE request_logs ADD COLUMN completion_tokens BIGINT NULL;
ALTER TABLE request_logs ADD COLUMN cached_tokens BIGINT NULL;
ALTER TABLE request_logs ADD COLUMN reasoning_tokens BIGINT NULL;
ALTER TABLE request_logs ADD COLUMN total_tokens BIGINT NULL;
