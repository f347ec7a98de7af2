//! Human output for `paiosctl`: the status table, durations, sizes and what each
//! operation did. Pure functions over the answers and an injected `now`, so the tests
//! are exact; colour is decided by the caller (a TTY and no `NO_COLOR`).
