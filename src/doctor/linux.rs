//! Linux facts doctor needs beyond `process`: which processes hold a listening TCP
//! port (`/proc/net/tcp{,6}` gives the socket inode, `/proc/PID/fd` links name
//! `socket:[INODE]`).

use std::collections::BTreeSet;
use std::fs;

/// PIDs (of those whose fds we can read) holding a socket that listens on `port`.
pub(super) fn port_holders(port: u16) -> Option<Vec<i32>> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    if inodes.is_empty() {
        return Some(Vec::new());
    }
    let mut holders = Vec::new();
    let Ok(dir) = fs::read_dir("/proc") else {
        return Some(holders);
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            fs::read_link(fd.path())
                .ok()
                .and_then(|target| socket_inode(&target.to_string_lossy()))
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if holds {
            holders.push(pid);
        }
    }
    Some(holders)
}

/// Inodes of the sockets in LISTEN state (`0A`) on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let local = fields.get(1)?;
            let state = fields.get(3)?;
            let inode: u64 = fields.get(9)?.parse().ok()?;
            let local_port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
            (*state == "0A" && local_port == port && inode != 0).then_some(inode)
        })
        .collect()
}

fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_table_listeners_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 12345 1 0 20 4 30 10 -1
   1: 0100007F:0BB9 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 12346 1 0 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 999 1 0 20 4 30 10 -1
   3: garbage
";
        assert_eq!(listening_inodes(table, 3001), vec![12345]);
        assert_eq!(listening_inodes(table, 22), vec![999]);
        assert!(listening_inodes(table, 80).is_empty());
        assert!(listening_inodes("", 80).is_empty());
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode("socket:[42]"), Some(42));
        assert_eq!(socket_inode("pipe:[42]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
    }

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
