//! End-to-end test support for the gateway.
//!
//! The main piece is [`mock`], a deterministic in-process upstream that speaks
//! the OpenAI, Anthropic and Gemini wire formats, with scripted per-key
//! failures and request recording. [`process`] runs the built gateway binary
//! as a child process. The most used types are re-exported here.

pub mod binaries;
pub mod mock;
pub mod process;
pub mod servers;

pub use binaries::{gateway_binary, workspace_root};
pub use mock::{Behaviour, MockConfig, MockUpstream, ReceivedRequest};
pub use process::{GatewayCommand, GatewayProcess};
