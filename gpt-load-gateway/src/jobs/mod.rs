//! Background tasks of the gateway, each spawned at start and awaited at shutdown.

pub(crate) mod log_writer;
