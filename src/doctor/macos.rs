//! macOS facts doctor needs. Listening ports are not checked (no `/proc`; `lsof` is
//! slow and not always allowed), which `doctor` reports as a note.

/// Not checked on macOS: see the module doc.
pub(super) fn port_holders(_port: u16) -> Option<Vec<i32>> {
    None
}
