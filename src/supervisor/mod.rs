//! The supervisor actor: the one owner of every service's state.
