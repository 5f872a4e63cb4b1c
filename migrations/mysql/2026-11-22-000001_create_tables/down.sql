DROP TABLE group_hourly_stats;
DROP TABLE request_logs;
DROP TABLE api_keys;
DROP TABLE group_sub_groups;
DROP TABLE `groups`;
DROP TABLE system_settings;
