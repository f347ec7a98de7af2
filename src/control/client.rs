//! The connecting side used by `paiosctl`: one request, one answer.
