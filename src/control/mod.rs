//! The control plane: `paiosctl` talks to `paiosd` over `<state-dir>/paiosd.sock`.
//!
//! [`protocol`] holds the message types both binaries share; [`server`] accepts
//! connections inside paiosd and hands each request to the supervisor actor;
//! [`client`] is the connecting side used by `paiosctl` (whose verbs, and the text a
//! person reads, are in [`crate::ctl`]).

pub mod client;
pub mod protocol;
pub mod server;

use tokio::sync::oneshot;

/// One request handed from a connection to the supervisor actor, with where to answer.
/// The actor answers when the operation is complete (or at once for `wait: false`).
#[derive(Debug)]
pub struct ControlMsg {
    pub request: protocol::Request,
    pub reply: oneshot::Sender<protocol::Response>,
}
