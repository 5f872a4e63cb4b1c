-- Token usage per attempt (docs/USAGE.md), ours and additive: gpt-load ignores these columns.
-- NULL when the reply reported no usage (an abandoned attempt, an error, a stream without it).
-- One statement: MySQL commits DDL statement by statement, and one ALTER TABLE adds every
-- column or none.
ALTER TABLE request_logs
    ADD COLUMN prompt_tokens BIGINT NULL,
    ADD COLUMN completion_tokens BIGINT NULL,
    ADD COLUMN cached_tokens BIGINT NULL,
    ADD COLUMN reasoning_tokens BIGINT NULL,
    ADD COLUMN total_tokens BIGINT NULL;
