//! Constant-rate HTTP/1.1 load through the Service proxy, from three clients in turn:
//! - standard: hyper-util's pooled client, with its default retry of requests that never
//!   reached the server (what most Rust services would use);
//! - strict: a raw keep-alive pool that retries nothing, so every error a server causes is
//!   counted;
//! - fresh: a new connection for every request, as a proxy without upstream keep-alive or a
//!   script calling curl would make. Keep-alive clients settle on the pods that stay, so
//!   only this one is sure to open connections while the Service still routes to a pod that
//!   stopped listening: it makes that mistake visible by construction, not by chance.
//!
//! Open loop: requests start on schedule whether or not earlier ones have finished. Bounded
//! in time and in count.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::http1::{Connection, Request};

#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Requests per second, both clients together.
    pub rate: u32,
    /// Every n-th request of each client is slow.
    pub slow_every: u32,
    pub slow: Duration,
    /// Give up on a request after this long.
    pub request_timeout: Duration,
    /// Hard bounds, whatever the scenario does.
    pub max_duration: Duration,
    pub max_requests: u64,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            rate: 500,
            slow_every: 50,
            slow: Duration::from_secs(3),
            request_timeout: Duration::from_secs(60),
            max_duration: Duration::from_secs(300),
            max_requests: 200_000,
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum ClientKind {
    Standard,
    Strict,
    Fresh,
}

impl ClientKind {
    pub const ALL: [ClientKind; 3] = [ClientKind::Standard, ClientKind::Strict, ClientKind::Fresh];

    /// The client of the `n`-th request: each in turn.
    fn nth(n: u64) -> ClientKind {
        ClientKind::ALL[(n % ClientKind::ALL.len() as u64) as usize]
    }
}

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// The connection was closed or reset before a whole response arrived.
    Closed,
    Timeout,
    Status(u16),
    Other(String),
}

impl Failure {
    /// What the client saw, for people.
    pub fn in_words(&self) -> String {
        match self {
            Failure::Connect => "connection refused".into(),
            Failure::Closed => "connection closed or reset before the response".into(),
            Failure::Timeout => "no response in time".into(),
            Failure::Status(status) => format!("answered {status}"),
            Failure::Other(text) => format!("other error ({text})"),
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Outcome {
    pub client: ClientKind,
    pub slow: bool,
    /// When the request was sent and answered, from the simulation's start.
    pub sent: Duration,
    pub done: Duration,
    pub failure: Option<Failure>,
}

/// Runs the load until `stop` or the bounds, then waits for requests still in flight.
pub async fn run(
    target: SocketAddr,
    config: LoadConfig,
    started: Instant,
    stop: CancellationToken,
) -> Vec<Outcome> {
    let standard: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let strict = Arc::new(StrictPool::default());
    let (outcomes, mut collected) = mpsc::unbounded_channel();
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / config.rate.max(1) as f64));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let until = Instant::now() + config.max_duration;

    for sent in 0..config.max_requests {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        if Instant::now() > until {
            break;
        }
        let client = ClientKind::nth(sent);
        let turn = sent / ClientKind::ALL.len() as u64;
        let slow = turn % config.slow_every as u64 == config.slow_every as u64 - 1;
        let call = Call::nth(turn, slow.then_some(config.slow));
        let (standard, strict, outcomes, timeout) = (
            standard.clone(),
            strict.clone(),
            outcomes.clone(),
            config.request_timeout,
        );
        tokio::spawn(async move {
            let sent = started.elapsed();
            let result = match client {
                ClientKind::Standard => {
                    tokio::time::timeout(timeout, standard_call(&standard, target, &call)).await
                }
                ClientKind::Strict => {
                    tokio::time::timeout(timeout, strict.call(target, &call)).await
                }
                ClientKind::Fresh => tokio::time::timeout(timeout, fresh_call(target, &call)).await,
            };
            let failure = match result {
                Ok(Ok(200)) => None,
                Ok(Ok(status)) => Some(Failure::Status(status)),
                Ok(Err(failure)) => Some(failure),
                Err(_) => Some(Failure::Timeout),
            };
            let _ = outcomes.send(Outcome {
                client,
                slow,
                sent,
                done: started.elapsed(),
                failure,
            });
        });
    }
    drop(outcomes);
    let mut all = Vec::new();
    while let Some(outcome) = collected.recv().await {
        all.push(outcome);
    }
    all
}

/// What one request asks of the service: the example app's routes, reads and writes.
#[derive(Debug, Clone)]
struct Call {
    method: &'static str,
    path: String,
    body: &'static str,
}

impl Call {
    fn request(&self) -> Request<'_> {
        Request {
            method: self.method,
            path: &self.path,
            body: self.body,
            user_agent: "load",
        }
    }

    /// The `turn`-th request of a client: slow when `slow` is set, else GET and POST in turn.
    fn nth(turn: u64, slow: Option<Duration>) -> Call {
        match slow {
            Some(slow) => Call {
                method: "GET",
                path: format!("/slow?ms={}", slow.as_millis()),
                body: "",
            },
            None if turn.is_multiple_of(2) => Call {
                method: "GET",
                path: "/".into(),
                body: "",
            },
            None => Call {
                method: "POST",
                path: "/echo".into(),
                body: "{\"order\":42}",
            },
        }
    }
}

async fn standard_call(
    client: &Client<HttpConnector, Full<Bytes>>,
    target: SocketAddr,
    call: &Call,
) -> Result<u16, Failure> {
    let request = hyper::Request::builder()
        .method(call.method)
        .uri(format!("http://{target}{}", call.path))
        .body(Full::new(Bytes::from_static(call.body.as_bytes())))
        .expect("a valid request");
    let response = client.request(request).await.map_err(|error| {
        if error.is_connect() {
            Failure::Connect
        } else {
            classify(&error)
        }
    })?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|error| classify(&error))?;
    Ok(status)
}

fn classify(error: &(dyn std::error::Error + 'static)) -> Failure {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.contains("closed")
        || text.contains("reset")
        || text.contains("broken pipe")
        || text.contains("incomplete")
    {
        Failure::Closed
    } else {
        Failure::Other(text)
    }
}

/// One request on a connection of its own, closed after the response.
async fn fresh_call(target: SocketAddr, call: &Call) -> Result<u16, Failure> {
    let mut connection = Connection::open(target)
        .await
        .map_err(|_| Failure::Connect)?;
    let response = connection
        .send(&call.request(), true)
        .await
        .map_err(failure)?;
    Ok(response.status)
}

/// Keep-alive connections, most recently used first, as hyper's pool picks them.
#[derive(Default)]
struct StrictPool {
    idle: Mutex<Vec<Connection>>,
}

impl StrictPool {
    async fn call(&self, target: SocketAddr, call: &Call) -> Result<u16, Failure> {
        let mut connection = match self.take_open() {
            Some(connection) => connection,
            None => Connection::open(target)
                .await
                .map_err(|_| Failure::Connect)?,
        };
        let response = connection
            .send(&call.request(), false)
            .await
            .map_err(failure)?;
        if !response.close {
            self.idle.lock().unwrap().push(connection);
        }
        Ok(response.status)
    }

    /// An idle connection the server has not closed, as a careful client checks before reuse.
    fn take_open(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap();
        while let Some(connection) = idle.pop() {
            if connection.is_reusable() {
                return Some(connection);
            }
        }
        None
    }
}

/// A connection that ends or breaks mid-exchange is `Closed`; an answer that is not HTTP is
/// something else.
fn failure(error: std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::InvalidData {
        Failure::Other(error.to_string())
    } else {
        Failure::Closed
    }
}
