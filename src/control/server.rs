//! The socket side inside paiosd: accept, check the peer UID, read size-limited request
//! lines with timeouts, and hand each request to the supervisor actor.
