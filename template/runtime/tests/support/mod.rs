//! Drives [`serve`] in-process on Tokio's paused clock.
//!
//! Clients are plain blocking sockets used inside `spawn_blocking`: while one runs, the
//! paused clock does not auto-advance, so every exchange happens at one instant of the
//! service's time. Time moves only when the test sleeps or waits for the service to end.

#![allow(dead_code)] // each test file uses its own share

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::Arc,
    time::Duration,
};

use axum::Router;
use kube_service_runtime::{
    Error, Exit, Listeners, Ports, Service, Settings, Shutdown, ShutdownTrigger, Signal, Startup,
    serve,
};
use tokio::{net::TcpListener, sync::Notify, task::JoinHandle, time::Instant};

const SERVICE: Service = Service {
    name: "in-process",
    version: "0.0.0",
    ports: Ports { http: 0, admin: 0 },
};

/// A service running in this process.
pub struct Running {
    pub http: SocketAddr,
    pub admin: SocketAddr,
    trigger: ShutdownTrigger,
    exit: JoinHandle<Exit>,
}

impl Running {
    /// Starts the service with `start` as its startup work; returns once it is listening
    /// (not necessarily ready).
    pub async fn start<F, Fut>(settings: Settings, start: F) -> Running
    where
        F: FnOnce(Startup) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Router, Error>> + Send + 'static,
    {
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (http_addr, admin_addr) = (http.local_addr().unwrap(), admin.local_addr().unwrap());
        let listeners = Listeners {
            http: http.into(),
            admin: admin.into(),
        };
        let (trigger, shutdown) = Shutdown::trigger();
        let exit = tokio::spawn(serve(SERVICE, listeners, shutdown, settings, start));
        Running {
            http: http_addr,
            admin: admin_addr,
            trigger,
            exit,
        }
    }

    /// Starts the service with `router` as the app, and waits until it is ready.
    pub async fn ready(settings: Settings, router: Router) -> Running {
        let running = Running::start(settings, move |_| async move { Ok(router) }).await;
        running.wait_ready().await;
        running
    }

    pub async fn wait_ready(&self) {
        for _ in 0..100 {
            if get(self.admin, "/readyz")
                .await
                .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("not ready after 100 tries");
    }

    /// Sends `signal`; returns the service's time at that moment.
    pub fn signal(&self, signal: Signal) -> Instant {
        self.trigger.send(signal);
        Instant::now()
    }

    /// Waits for the service to end, letting the paused clock run.
    pub async fn exit(self) -> Exit {
        self.exit.await.expect("serve does not panic")
    }
}

/// Settings for tests: every duration set, the Kubernetes integration off.
pub fn settings(drain_delay: u64, timeout: u64) -> Settings {
    Settings {
        shutdown_drain_delay: Duration::from_secs(drain_delay),
        shutdown_timeout: Duration::from_secs(timeout),
        shutdown_cleanup_timeout: Duration::from_secs(2),
        prestop_delay: Duration::from_secs(3),
        kube_integration: false,
        ..Settings::default()
    }
}

/// A route that tells when it was entered and never answers.
pub fn hanging(entered: Arc<Notify>) -> axum::routing::MethodRouter {
    axum::routing::get(move || async move {
        entered.notify_one();
        std::future::pending::<&'static str>().await
    })
}

/// An HTTP/1.1 response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn asks_to_close(&self) -> bool {
        self.header("connection") == Some("close")
    }
}

/// One keep-alive connection.
pub struct Connection(Option<TcpStream>);

impl Connection {
    pub async fn open(addr: SocketAddr) -> std::io::Result<Connection> {
        let stream = blocking(move || TcpStream::connect(addr)).await?;
        Ok(Connection(Some(stream)))
    }

    /// Sends `GET path` and reads the answer, at one instant of the service's time.
    pub async fn get(&mut self, path: &str) -> std::io::Result<Response> {
        self.send(path).await?;
        self.read().await
    }

    /// Sends `GET path` without waiting for the answer.
    pub async fn send(&mut self, path: &str) -> std::io::Result<()> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n");
        self.with_stream(move |stream| stream.write_all(request.as_bytes()))
            .await
    }

    /// Sends `bytes` as they are: part of a request, say.
    pub async fn send_raw(&mut self, bytes: &'static [u8]) -> std::io::Result<()> {
        self.with_stream(move |stream| stream.write_all(bytes))
            .await
    }

    /// Reads the answer to the request sent last.
    pub async fn read(&mut self) -> std::io::Result<Response> {
        self.with_stream(read_response).await
    }

    async fn with_stream<T: Send + 'static>(
        &mut self,
        work: impl FnOnce(&mut TcpStream) -> std::io::Result<T> + Send + 'static,
    ) -> std::io::Result<T> {
        let mut stream = self.0.take().expect("one exchange at a time");
        let (stream, result) = blocking(move || {
            let result = work(&mut stream);
            Ok((stream, result))
        })
        .await?;
        self.0 = Some(stream);
        result
    }
}

/// `GET path` on a connection of its own.
pub async fn get(addr: SocketAddr, path: &str) -> std::io::Result<Response> {
    Connection::open(addr).await?.get(path).await
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .expect("the client does not panic")
}

fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    // Bounded, so that a service that never answers fails the test instead of hanging it.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {head:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(key, value)| (key.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    Ok(Response {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}
