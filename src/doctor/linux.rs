//! Linux facts doctor needs beyond `process`: which processes hold a listening TCP
//! port. The `procfs` crate reads the socket tables (`/proc/net/tcp{,6}`, which give
//! each socket's inode) and each process's descriptors (whose links name
//! `socket:[INODE]`).

use std::collections::BTreeSet;

use procfs::net::{TcpNetEntry, TcpState};
use procfs::process::FDTarget;

/// PIDs (of those whose fds we can read) holding a socket that listens on `port`.
pub(super) fn port_holders(port: u16) -> Option<Vec<i32>> {
    let tables = [procfs::net::tcp(), procfs::net::tcp6()];
    let inodes: BTreeSet<u64> = tables
        .iter()
        .flatten()
        .flat_map(|table| listening_inodes(table, port))
        .collect();
    if inodes.is_empty() {
        return Some(Vec::new());
    }
    let Ok(all) = procfs::process::all_processes() else {
        return Some(Vec::new());
    };
    let holders = all
        .flatten()
        .filter(|p| {
            p.fd().is_ok_and(|mut fds| {
                fds.any(|fd| {
                    fd.is_ok_and(|fd| {
                        matches!(fd.target, FDTarget::Socket(inode) if inodes.contains(&inode))
                    })
                })
            })
        })
        .map(|p| p.pid)
        .collect();
    Some(holders)
}

/// Inodes of the sockets listening on `port` in one socket table.
fn listening_inodes(table: &[TcpNetEntry], port: u16) -> Vec<u64> {
    table
        .iter()
        .filter(|e| e.state == TcpState::Listen && e.local_address.port() == port && e.inode != 0)
        .map(|e| e.inode)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_listener_is_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holders = port_holders(port).unwrap();
        assert!(
            holders.contains(&(std::process::id() as i32)),
            "{holders:?}"
        );
    }
}
