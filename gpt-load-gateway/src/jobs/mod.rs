//! Background tasks of the gateway, each spawned at start and awaited at shutdown.

pub(crate) mod access_quotas;
pub(crate) mod gauges;
pub(crate) mod log_writer;
pub(crate) mod retention;
pub(crate) mod validate;
