//! HTTP/1.1 over raw sockets: a strict keep-alive client with no retries, so every failure
//! a server causes is seen and counted, and one-shot requests on a connection of their own,
//! as the kubelet's probes and a proxy's admin calls make them.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

pub struct Connection {
    stream: BufReader<TcpStream>,
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The server asked to close the connection after this response.
    pub close: bool,
    pub body: Vec<u8>,
}

impl Connection {
    pub fn open(addr: SocketAddr, timeout: Duration) -> std::io::Result<Connection> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    pub fn get(&mut self, path: &str) -> std::io::Result<Response> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: demo\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes())?;
        self.read_response()
    }

    fn read_response(&mut self) -> std::io::Result<Response> {
        let mut status_line = String::new();
        if self.stream.read_line(&mut status_line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        let mut head = Head::from_status_line(&status_line).map_err(std::io::Error::other)?;
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if !head.header(&line).map_err(std::io::Error::other)? {
                break;
            }
        }
        let Head {
            status,
            length,
            close,
        } = head;
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body)?;
        Ok(Response {
            status,
            close,
            body,
        })
    }
}

/// What a response head says: its status, the body's length, whether the connection closes.
/// Read line by line, so that blocking and async readers share it.
#[derive(Debug)]
pub struct Head {
    pub status: u16,
    pub length: usize,
    pub close: bool,
}

impl Head {
    /// From the status line, e.g. `HTTP/1.1 200 OK`.
    pub fn from_status_line(line: &str) -> Result<Head, String> {
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        Ok(Head {
            status,
            length: 0,
            close: false,
        })
    }

    /// Takes one header line; returns false for the blank line that ends the head.
    pub fn header(&mut self, line: &str) -> Result<bool, String> {
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(false);
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                self.length = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
            } else if name.eq_ignore_ascii_case("connection") {
                self.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(true)
    }
}

/// A request sent on a connection of its own with [`once`].
#[derive(Debug, Clone, Copy)]
pub struct OneShot<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub body: &'a str,
    pub user_agent: &'a str,
}

impl<'a> OneShot<'a> {
    pub fn get(path: &'a str) -> OneShot<'a> {
        OneShot {
            method: "GET",
            path,
            body: "",
            user_agent: "kube-service-template-tests",
        }
    }
}

/// Sends `request` with `Connection: close` and reads until the server closes: the status
/// and the body.
pub async fn once(
    addr: SocketAddr,
    request: OneShot<'_>,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let OneShot {
            method,
            path,
            body,
            user_agent,
        } = request;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: {user_agent}\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        let answer = String::from_utf8_lossy(&answer).into_owned();
        let status = answer
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| std::io::Error::other("no status line"))?;
        let body = answer
            .split_once("\r\n\r\n")
            .map(|(_, body)| body.to_owned())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
