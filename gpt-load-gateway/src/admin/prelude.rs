//! What every handler module uses: the envelope, the error, the extractors, the answer language
//! and the state. Handler modules `use` it whole so their imports name only what is their own.

pub(crate) use super::{
    envelope::{Ack, AckReply, Envelope, Reply, ack, ok},
    error::{AdminError, AdminResult},
    extract::{AdminPath, AdminQuery},
    json::AdminJson,
    lang::{Lang, text},
    state::{Admin, AdminState},
};
