//! The control plane: `paiosctl` talks to `paiosd` over `<state-dir>/paiosd.sock`.
//!
//! [`protocol`] holds the message types both binaries share; [`server`] accepts
//! connections inside paiosd and hands each request to the supervisor actor;
//! [`client`] is the connecting side used by `paiosctl`.

pub mod client;
pub mod protocol;
pub mod server;
