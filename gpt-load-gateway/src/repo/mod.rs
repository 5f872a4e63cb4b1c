//! Every query of the gateway, written once for the three backends with
//! [`with_conn!`](crate::db::with_conn). Handlers and jobs call these; none of them writes SQL.

pub(crate) mod groups;
pub(crate) mod keys;
pub(crate) mod reencrypt;
pub(crate) mod request_logs;
pub(crate) mod settings;
pub(crate) mod stats;

#[cfg(test)]
mod tests;
