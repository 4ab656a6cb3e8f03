//! The `healthcheck` subcommand: one plain HTTP/1.1 GET, so that an image without a shell
//! or curl can still probe itself (`helm test`, container health checks).

use std::{
    io::{Read, Write},
    net::{TcpStream, ToSocketAddrs},
    time::Duration,
};

/// Returns the status line on a 2xx answer, and why not otherwise.
pub(crate) fn check(url: &str, timeout: Duration) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let address = authority
        .to_socket_addrs()
        .map_err(|err| format!("{authority}: {err}"))?
        .next()
        .ok_or_else(|| format!("{authority}: no address"))?;

    let mut stream =
        TcpStream::connect_timeout(&address, timeout).map_err(|err| format!("{address}: {err}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|err| err.to_string())?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(|err| err.to_string())?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|err| format!("{address}: {err}"))?;
    let mut answer = String::new();
    stream
        .take(64 * 1024)
        .read_to_string(&mut answer)
        .map_err(|err| format!("{address}: {err}"))?;

    let status_line = answer.lines().next().unwrap_or_default().to_owned();
    let healthy = status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'));
    if healthy {
        Ok(status_line)
    } else {
        Err(format!("{url}: {status_line}"))
    }
}
