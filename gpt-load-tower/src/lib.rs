//! Composable Tower layers for AI API key-pool gateways.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[macro_use]
mod macros;

pub mod auth;
pub mod blacklist;
pub mod body;
pub mod channel;
mod clock;
pub mod context;
pub mod error;
mod future;
pub mod keys;
pub mod limit;
pub mod log;
mod query;
pub mod retry;
pub mod rewrite;
pub mod secret;
pub mod telemetry;
pub mod upstream;
mod wrr;

#[cfg(test)]
mod test_util;

pub use self::{
    error::{BoxError, Error, ErrorKind},
    future::ResponseFuture,
    keys::ExcludedKeys,
};
