-- The tables gpt-load 1.4 creates on SQLite, as GORM AutoMigrate writes them
-- (gorm v1.30.0 with github.com/glebarez/sqlite v1.11.0; models of gpt-load v1.4.7 to v1.4.9).
-- Statement text, order and names are GORM's: indexes are created after their table, in reverse tag order.
CREATE TABLE `system_settings` (`id` integer PRIMARY KEY AUTOINCREMENT,`setting_key` varchar(255) NOT NULL,`setting_value` text NOT NULL,`description` varchar(512),`created_at` datetime,`updated_at` datetime,CONSTRAINT `uni_system_settings_setting_key` UNIQUE (`setting_key`));
CREATE TABLE `groups` (`id` integer PRIMARY KEY AUTOINCREMENT,`name` varchar(255) NOT NULL,`display_name` varchar(255),`proxy_keys` text,`description` varchar(512),`group_type` varchar(50) DEFAULT "standard",`upstreams` JSON NOT NULL,`validation_endpoint` varchar(255),`channel_type` varchar(50) NOT NULL,`sort` integer DEFAULT 0,`test_model` varchar(255) NOT NULL,`param_overrides` JSON,`config` JSON,`header_rules` JSON,`model_redirect_rules` JSON,`model_redirect_strict` numeric DEFAULT false,`last_validated_at` datetime,`created_at` datetime,`updated_at` datetime,CONSTRAINT `uni_groups_name` UNIQUE (`name`));
CREATE TABLE `group_sub_groups` (`id` integer PRIMARY KEY AUTOINCREMENT,`group_id` integer NOT NULL,`sub_group_id` integer NOT NULL,`weight` integer DEFAULT 0,`created_at` datetime,`updated_at` datetime);
CREATE UNIQUE INDEX `idx_group_sub` ON `group_sub_groups`(`group_id`,`sub_group_id`);
CREATE TABLE `api_keys` (`id` integer PRIMARY KEY AUTOINCREMENT,`key_value` text NOT NULL,`key_hash` varchar(128),`group_id` integer NOT NULL,`status` varchar(50) NOT NULL DEFAULT "active",`notes` varchar(255) DEFAULT "",`request_count` integer NOT NULL DEFAULT 0,`failure_count` integer NOT NULL DEFAULT 0,`last_used_at` datetime,`created_at` datetime,`updated_at` datetime,CONSTRAINT `fk_groups_api_keys` FOREIGN KEY (`group_id`) REFERENCES `groups`(`id`));
CREATE INDEX `idx_api_keys_status` ON `api_keys`(`status`);
CREATE INDEX `idx_api_keys_group_id` ON `api_keys`(`group_id`);
CREATE INDEX `idx_api_keys_key_hash` ON `api_keys`(`key_hash`);
CREATE INDEX `idx_api_keys_group_last_used_id` ON `api_keys`(`group_id`,`last_used_at`,`id`);
CREATE TABLE `request_logs` (`id` varchar(36),`timestamp` datetime NOT NULL,`group_id` integer NOT NULL,`group_name` varchar(255),`parent_group_id` integer,`parent_group_name` varchar(255),`key_value` text,`key_hash` varchar(128),`model` varchar(255),`is_success` numeric NOT NULL,`source_ip` varchar(64),`status_code` integer NOT NULL,`request_path` varchar(500),`duration` integer NOT NULL,`error_message` text,`user_agent` varchar(512),`request_type` varchar(20) NOT NULL DEFAULT "final",`upstream_addr` varchar(500),`is_stream` numeric NOT NULL,`request_body` text,PRIMARY KEY (`id`));
CREATE INDEX `idx_request_logs_request_type` ON `request_logs`(`request_type`);
CREATE INDEX `idx_request_logs_model` ON `request_logs`(`model`);
CREATE INDEX `idx_request_logs_key_hash` ON `request_logs`(`key_hash`);
CREATE INDEX `idx_request_logs_parent_group_name` ON `request_logs`(`parent_group_name`);
CREATE INDEX `idx_request_logs_parent_group_id` ON `request_logs`(`parent_group_id`);
CREATE INDEX `idx_request_logs_group_name` ON `request_logs`(`group_name`);
CREATE INDEX `idx_request_logs_group_id` ON `request_logs`(`group_id`);
CREATE INDEX `idx_request_logs_timestamp` ON `request_logs`(`timestamp`);
CREATE TABLE `group_hourly_stats` (`id` integer PRIMARY KEY AUTOINCREMENT,`time` datetime NOT NULL,`group_id` integer NOT NULL,`success_count` integer NOT NULL DEFAULT 0,`failure_count` integer NOT NULL DEFAULT 0,`created_at` datetime,`updated_at` datetime);
CREATE UNIQUE INDEX `idx_group_time` ON `group_hourly_stats`(`time`,`group_id`);
