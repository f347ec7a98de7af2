//! Health probe targets: the `http` URL and the `tcp` address, parsed once when the
//! file is loaded, so a typo is a config error instead of a service that fails every
//! probe, and the prober connects to the parts it is handed without parsing again.
//!
//! Only plain `http://` is supported: probes talk to services on this machine, where
//! TLS adds a dependency and certificate trouble without protecting anything.

use std::fmt;
use std::str::FromStr;

/// A probe URL, `http://HOST:PORT[/PATH]`, in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    /// Host as written, without brackets for IPv6 (`127.0.0.1`, `localhost`, `::1`).
    pub host: String,
    pub port: u16,
    /// Path and query, always starting with `/`.
    pub path: String,
    /// The URL as written, for messages and summaries.
    url: String,
}

impl HttpTarget {
    /// The URL as written in the service file.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The `Host` header: host and port, an IPv6 host in brackets.
    pub fn host_header(&self) -> String {
        host_port(&self.host, self.port)
    }
}

impl FromStr for HttpTarget {
    type Err = String;
    fn from_str(url: &str) -> Result<HttpTarget, String> {
        parse_http_url(url)
    }
}

impl fmt::Display for HttpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

/// A `tcp` probe address, `HOST:PORT`, in parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpTarget {
    /// Host as written, without brackets for IPv6.
    pub host: String,
    pub port: u16,
    /// The address as written, for messages and summaries.
    addr: String,
}

impl TcpTarget {
    /// The address as written in the service file.
    pub fn as_str(&self) -> &str {
        &self.addr
    }
}

impl FromStr for TcpTarget {
    type Err = String;
    fn from_str(addr: &str) -> Result<TcpTarget, String> {
        parse_tcp_addr(addr)
    }
}

impl fmt::Display for TcpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.addr)
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Parses `http://HOST:PORT[/PATH]`. The port is required: a service on a personal
/// machine never listens on 80, and a missing port is almost always a mistake.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    const EXAMPLE: &str = "e.g. \"http://127.0.0.1:3001/health\"";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL: {EXAMPLE}"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "https is not supported by health probes; use http:// on a loopback port \
             or an `exec` probe ({EXAMPLE})"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "`{scheme}://` is not supported: only http:// URLs are ({EXAMPLE})"
        ));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.contains('@') {
        return Err(format!(
            "`{url}`: user names in probe URLs are not supported"
        ));
    }
    if path.contains('#') {
        return Err(format!(
            "`{url}`: a fragment (`#…`) is never sent; remove it"
        ));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`{url}`: the path contains spaces or control characters"
        ));
    }
    let (host, port) =
        split_host_port(authority).map_err(|e| format!("`{url}`: {e} ({EXAMPLE})"))?;
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(HttpTarget {
        host,
        port,
        path,
        url: url.to_string(),
    })
}

/// Parses `HOST:PORT` (`127.0.0.1:3001`, `localhost:5432`, `[::1]:8080`) into the
/// host (brackets removed) and port.
pub fn parse_tcp_addr(addr: &str) -> Result<TcpTarget, String> {
    if addr.contains("://") {
        return Err(format!(
            "`{addr}`: write just host:port, without a scheme, e.g. \"127.0.0.1:3001\""
        ));
    }
    let (host, port) =
        split_host_port(addr).map_err(|e| format!("`{addr}`: {e}, e.g. \"127.0.0.1:3001\""))?;
    Ok(TcpTarget {
        host,
        port,
        addr: addr.to_string(),
    })
}

fn split_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err("unclosed `[` in the host".to_string());
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err("needs a port after the host".to_string());
        };
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`{host}` is not an IPv6 address"));
        }
        (host, port)
    } else {
        let Some((host, port)) = s.rsplit_once(':') else {
            return Err("needs a port after the host".to_string());
        };
        if host.contains(':') {
            return Err("an IPv6 host needs brackets, e.g. [::1]:8080".to_string());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("needs a host before the port".to_string());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || ".-_:".contains(c))
    {
        return Err(format!("`{host}` is not a host name or address"));
    }
    let port: u16 = match port.parse() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("`{port}` is not a port (1-65535)")),
    };
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let t = parse_http_url("http://127.0.0.1:3001/health").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("127.0.0.1", 3001, "/health")
        );
        assert_eq!(t.as_str(), "http://127.0.0.1:3001/health");
        assert_eq!(t.host_header(), "127.0.0.1:3001");
        let t: HttpTarget = "http://[::1]:8080/x".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
        assert_eq!(t.host_header(), "[::1]:8080");
        assert_eq!(t.to_string(), "http://[::1]:8080/x");
        assert_eq!(parse_http_url("http://localhost:80").unwrap().path, "/");
        assert_eq!(
            parse_http_url("HTTP://[::1]:8080/x?y=1").unwrap().host,
            "::1"
        );
        assert_eq!(parse_http_url("http://h:1?q").unwrap().path, "/?q");
        let bad = [
            ("https://127.0.0.1:3001/", "https is not supported"),
            ("ftp://127.0.0.1:21/", "only http://"),
            ("127.0.0.1:3001", "not a URL"),
            ("http://127.0.0.1/health", "needs a port"),
            ("http://:3001/", "needs a host"),
            ("http://h:0/", "not a port"),
            ("http://h:70000/", "not a port"),
            ("http://h:x/", "not a port"),
            ("http://u@h:1/", "user names"),
            ("http://h:1/#x", "fragment"),
            ("http://h:1/a b", "spaces"),
            ("http://[::1:80/", "unclosed"),
            ("http://::1:80/", "brackets"),
            ("http://ex ample:80/", "not a host"),
        ];
        for (url, want) in bad {
            let err = parse_http_url(url).unwrap_err();
            assert!(err.contains(want), "{url}: {err}");
        }
    }

    #[test]
    fn tcp_addresses() {
        let t = parse_tcp_addr("127.0.0.1:5432").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("127.0.0.1", 5432));
        let t: TcpTarget = "[::1]:5432".parse().unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 5432));
        assert_eq!(t.to_string(), "[::1]:5432");
        for bad in ["127.0.0.1", ":80", "h:", "tcp://h:80", "h:99999", "[x]:80"] {
            assert!(parse_tcp_addr(bad).is_err(), "{bad}");
        }
    }
}
