//! The admin REST API under `/api`, wire-compatible with gpt-load 1.4: the same paths, fields,
//! envelope (`{code:0,message,data}` / `{code:"ERR",message}`) and authentication by `AUTH_KEY`.
//! Deliberate deviations are listed in `docs/API.md`.
//!
//! `routes.rs` is the table of routes; each area has its handlers and DTOs; queries live in
//! `repo/`; [`error::AdminError`] is the one conversion into the error envelope. Changes reach the
//! proxy at once: every change goes through the [`Registry`](crate::registry::Registry), which
//! writes the database and then the state of the groups it touched.

mod access_keys;
mod auth;
mod cluster;
mod dashboard;
mod envelope;
mod error;
mod extract;
mod groups;
mod integration;
mod json;
mod keys;
mod lang;
mod logs;
mod openapi;
mod page;
mod policies;
mod prelude;
mod routes;
mod settings;
mod state;
mod task_manager;
mod tasks;
mod throttle;
mod usage;
mod validation;

#[cfg(test)]
pub(crate) use self::routes::BODY_LIMIT;
pub(crate) use self::{
    integration::group_integration_info,
    routes::{router, unknown_route},
    state::AdminState,
};
