//! The whole gateway in process, on an ephemeral port, in front of the mock upstream, on real
//! databases.

mod access_keys;
mod admin;
mod admin_errors;
mod admin_groups;
mod admin_keys;
mod admin_logs;
mod admin_shapes;
mod admin_tasks;
mod aggregate_failover;
mod console;
mod empty_replies;
mod harness;
mod key_lifecycle;
mod limits;
mod model_filters;
mod pending_keys;
mod policies;
mod proxy;
mod proxy_blame;
mod proxy_model_list;
mod proxy_paths;
mod secrets_at_rest;
mod storage;
mod usage;
mod validation;
