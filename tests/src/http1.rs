//! HTTP/1.1 over raw sockets: the suite's one client. Strict (no retries), so that every
//! failure a server causes is seen and counted; keep-alive, or one request per connection as
//! the kubelet's probes, a proxy's admin calls and `curl` make them.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    /// Sent with its `Content-Length`; an empty body sends neither.
    pub body: &'a str,
    /// Left out when empty.
    pub user_agent: &'a str,
}

impl<'a> Request<'a> {
    pub fn get(path: &'a str) -> Request<'a> {
        Request {
            method: "GET",
            path,
            body: "",
            user_agent: "kube-service-template-tests",
        }
    }

    pub fn post(path: &'a str, body: &'a str) -> Request<'a> {
        Request {
            method: "POST",
            body,
            ..Request::get(path)
        }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// The server asked to close the connection after this response.
    pub close: bool,
    pub body: Vec<u8>,
}

impl Response {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One connection, for as many requests as the server keeps it open.
pub struct Connection {
    reader: BufReader<TcpStream>,
    host: String,
}

impl Connection {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        })
    }

    /// Sends `request` and reads its response; with `last`, asks the server to close after.
    pub async fn send(&mut self, request: &Request<'_>, last: bool) -> std::io::Result<Response> {
        let Request {
            method,
            path,
            body,
            user_agent,
        } = request;
        // Only the headers the request needs: what a server parses is part of what it costs.
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        if !user_agent.is_empty() {
            head.push_str(&format!("User-Agent: {user_agent}\r\n"));
        }
        if last {
            head.push_str("Connection: close\r\n");
        }
        if !body.is_empty() {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let stream = self.reader.get_mut();
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        self.read_response().await
    }

    /// Still open, with nothing unread: what a careful client checks before reusing it.
    pub fn is_reusable(&self) -> bool {
        let mut probe = [0u8; 1];
        self.reader.buffer().is_empty()
            && matches!(
                self.reader.get_ref().try_read(&mut probe),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock
            )
    }

    async fn read_response(&mut self) -> std::io::Result<Response> {
        let mut head = Head::from_status_line(&self.line().await?)?;
        while head.header(&self.line().await?)? {}
        let body = match head.framing {
            Framing::Length(length) => {
                let mut body = vec![0; length];
                self.reader.read_exact(&mut body).await?;
                body
            }
            Framing::Chunked => self.read_chunks().await?,
            Framing::UntilClose => {
                let mut body = Vec::new();
                self.reader.read_to_end(&mut body).await?;
                body
            }
        };
        Ok(Response {
            status: head.status,
            close: head.close,
            body,
        })
    }

    async fn read_chunks(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await?;
            let size = size_line.trim().split(';').next().unwrap_or_default();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !self.line().await?.trim().is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.reader.read_exact(&mut body[start..]).await?;
            self.line().await?;
        }
    }

    /// One line; the connection ending first is an error like any other.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before the response ended",
            ));
        }
        Ok(line)
    }
}

/// Sends `request` on a connection of its own, as the last one, within `timeout`.
pub async fn once(
    addr: SocketAddr,
    request: Request<'_>,
    timeout: Duration,
) -> std::io::Result<Response> {
    let exchange = async {
        let mut connection = Connection::open(addr).await?;
        connection.send(&request, true).await
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}

/// `GET path` on a connection of its own, for code that runs outside Tokio.
pub fn blocking_get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<Response> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(once(addr, Request::get(path), timeout))
}

/// How the body's end is known.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What a response head says, read line by line.
#[derive(Debug)]
struct Head {
    status: u16,
    framing: Framing,
    close: bool,
}

impl Head {
    /// From the status line, e.g. `HTTP/1.1 200 OK`.
    fn from_status_line(line: &str) -> std::io::Result<Head> {
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {line:?}")))?;
        Ok(Head {
            status,
            framing: Framing::UntilClose,
            close: false,
        })
    }

    /// Takes one header line; returns false for the blank line that ends the head.
    fn header(&mut self, line: &str) -> std::io::Result<bool> {
        let line = line.trim_end();
        if line.is_empty() {
            return Ok(false);
        }
        if let Some((name, value)) = line.split_once(':') {
            let (name, value) = (name.trim(), value.trim());
            if name.eq_ignore_ascii_case("content-length") {
                let length = value
                    .parse()
                    .map_err(|_| invalid(format!("bad content-length {value:?}")))?;
                self.framing = Framing::Length(length);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                if value.eq_ignore_ascii_case("chunked") {
                    self.framing = Framing::Chunked;
                }
            } else if name.eq_ignore_ascii_case("connection") {
                self.close = value.eq_ignore_ascii_case("close");
            }
        }
        Ok(true)
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use tokio::{io::AsyncWriteExt, net::TcpListener};

    use super::*;

    /// Serves `answer` to the first request on a loopback listener.
    async fn answering(answer: &'static str) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request).await;
            stream.write_all(answer.as_bytes()).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn bodies_end_by_length_by_chunks_or_by_close() {
        let timeout = Duration::from_secs(5);
        for (answer, body) in [
            ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello"),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2;x=y\r\nlo\r\n0\r\n\r\n",
                "hello",
            ),
            (
                "HTTP/1.1 503 Busy\r\nConnection: close\r\n\r\nhello",
                "hello",
            ),
        ] {
            let response = once(answering(answer).await, Request::get("/"), timeout)
                .await
                .unwrap();
            assert_eq!(response.text(), body, "{answer:?}");
        }
    }

    #[tokio::test]
    async fn a_response_cut_short_is_an_error() {
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort";
        let error = once(
            answering(answer).await,
            Request::get("/"),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
