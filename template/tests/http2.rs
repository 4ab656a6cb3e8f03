//! HTTP/2 (cleartext, prior knowledge): draining sends GOAWAY instead of `Connection: close`.

mod support;

use std::time::Duration;

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
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "6s")]);
    let (mut before, before_connection) = connect(&service).await;
    assert_eq!(get(&mut before).await, 200);

    service.signal(libc::SIGTERM);
    service.wait_for_log_where(|line| line["state"] == "draining");

    // The open connection is told to go away and ends without a request being cut...
    let ended = tokio::time::timeout(Duration::from_secs(2), before_connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");
    // ...while the drain delay still runs and new connections are served.
    assert!(service.is_running());
    let (mut during, during_connection) = connect(&service).await;
    assert_eq!(get(&mut during).await, 200);
    let ended = tokio::time::timeout(Duration::from_secs(2), during_connection).await;
    assert!(matches!(ended, Ok(Ok(Ok(())))), "{ended:?}");

    assert_eq!(
        tokio::task::spawn_blocking(move || service.wait_exit())
            .await
            .unwrap(),
        0
    );
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
    assert_eq!(
        tokio::task::spawn_blocking(move || service.metric("http_connections_open"))
            .await
            .unwrap(),
        0.0
    );
}
