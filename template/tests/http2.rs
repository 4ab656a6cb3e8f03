//! HTTP/2 (cleartext, prior knowledge): draining sends GOAWAY instead of `Connection: close`.

mod support;

use http_body_util::Empty;
use hyper::{Request, body::Bytes, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use support::Service;
use tokio::{net::TcpStream, task::JoinHandle};

type Sender = http2::SendRequest<Empty<Bytes>>;

async fn connect(service: &Service) -> (Sender, JoinHandle<hyper::Result<()>>) {
    let stream = TcpStream::connect(service.http).await.unwrap();
    let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    (sender, tokio::spawn(connection))
}

async fn get(sender: &mut Sender) -> u16 {
    let request = Request::get("http://test/").body(Empty::new()).unwrap();
    sender
        .send_request(request)
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn draining_sends_goaway_and_still_serves_new_connections() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "10s")]);
    let (mut before, before_connection) = connect(&service).await;
    assert_eq!(get(&mut before).await, 200);

    service.signal(libc::SIGTERM);
    service.wait_for_log_where(|line| line["state"] == "draining");

    // The open connection is told to go away and ends without a request being cut, while
    // the drain delay still runs: without the GOAWAY it would end only once stopping.
    let ended = tokio::time::timeout(support::PATIENCE, before_connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    assert_eq!(still_draining(&service), 1.0, "ended by the GOAWAY");
    // New connections are served meanwhile, and told to go away after their request.
    let (mut during, during_connection) = connect(&service).await;
    assert_eq!(get(&mut during).await, 200);
    let ended = tokio::time::timeout(support::PATIENCE, during_connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    assert_eq!(still_draining(&service), 1.0, "ended by the GOAWAY");

    assert_eq!(
        tokio::task::spawn_blocking(move || service.wait_exit())
            .await
            .unwrap(),
        0
    );
}

/// 1 while the service is draining (not yet stopping), 0 otherwise.
fn still_draining(service: &Service) -> f64 {
    service.metric(r#"lifecycle_state{state="draining"}"#)
}

/// The idle timeout holds for HTTP/2 too, however often the connection pings: an idle
/// connection gets a GOAWAY and ends.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_at_the_idle_timeout() {
    let service = Service::start(&[("IDLE_TIMEOUT", "500ms")]);
    let (mut sender, connection) = connect(&service).await;
    assert_eq!(get(&mut sender).await, 200);
    let ended = tokio::time::timeout(support::PATIENCE, connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    // The server counts the connection closed once its task ends, just after the client
    // saw the close.
    tokio::task::spawn_blocking(move || {
        service.wait_until("the connection is counted closed", |service| {
            service.metric("http_connections_open") == 0.0
        })
    })
    .await
    .unwrap();
}

/// A client that ignores the GOAWAY and its ping (it never reads) cannot hold the shutdown
/// to its deadline: once its request is answered and nothing moves, it is dropped.
#[test]
fn a_client_that_ignores_goaway_cannot_hold_the_shutdown() {
    use std::io::Write as _;

    let mut service = Service::start(&[
        ("SHUTDOWN_DRAIN_DELAY", "500ms"),
        ("SHUTDOWN_TIMEOUT", "10s"),
    ]);
    let mut deaf = std::net::TcpStream::connect(service.http).unwrap();
    // The client preface, empty SETTINGS, then `GET /` on stream 1 in HPACK (:method GET,
    // :scheme http, :path /, :authority "a"); nothing is ever read or acknowledged.
    let block = [0x82, 0x86, 0x84, 0x41, 1, b'a'];
    let mut frames = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frames.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    frames.extend_from_slice(&[0, 0, block.len() as u8, 1, 0x05, 0, 0, 0, 1]);
    frames.extend_from_slice(&block);
    deaf.write_all(&frames).unwrap();
    service.wait_until("the request was answered", |service| {
        service.metric(r#"http_responses_total{class="2xx"}"#) == 1.0
    });

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0, "no connection was cut");
    drop(deaf);
}
