//! Endpoints and kube-proxy: the endpoints controller publishes which pods may receive new
//! connections; every proxy learns of a change only after a propagation lag; established
//! connections stay pinned to their backend, as conntrack keeps them.

use std::{
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use super::timeline::{Happening, Timeline};

/// A pod a proxy may send new connections to.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub pod: String,
    pub addr: SocketAddr,
    /// Where the pod's readiness probe answers, for proxies that health-check on their own.
    pub health: Option<SocketAddr>,
}

/// One pod in the endpoint slice, and whether it may receive new connections.
#[derive(Debug, Clone, PartialEq)]
struct Backend {
    endpoint: Routed,
    ready: bool,
}

/// The endpoint slice as the proxies see it: the truth, late by the propagation lag.
pub struct Endpoints {
    changes: mpsc::UnboundedSender<(Instant, Backend)>,
    view: Arc<RwLock<Vec<Backend>>>,
    /// The ready part of the view, for real proxies to follow.
    routed: watch::Sender<Vec<Routed>>,
}

impl Endpoints {
    pub fn new(lag: Duration, timeline: Arc<Timeline>) -> Arc<Endpoints> {
        let (changes, mut pending) = mpsc::unbounded_channel::<(Instant, Backend)>();
        let view: Arc<RwLock<Vec<Backend>>> = Arc::default();
        let applied = view.clone();
        let routed = watch::Sender::new(Vec::new());
        let publish_routed = routed.clone();
        // One task applies changes in the order they happened, each `lag` after it happened.
        tokio::spawn(async move {
            while let Some((happened, backend)) = pending.recv().await {
                tokio::time::sleep_until(happened + lag).await;
                let mut view = applied.write().unwrap();
                let pod = &backend.endpoint.pod;
                let changed = match view.iter_mut().find(|known| known.endpoint.pod == *pod) {
                    Some(known) if *known == backend => false,
                    Some(known) => {
                        *known = backend.clone();
                        true
                    }
                    None => {
                        view.push(backend.clone());
                        true
                    }
                };
                if changed {
                    publish_routed.send_replace(ready_of(&view));
                    drop(view);
                    let pod = backend.endpoint.pod.clone();
                    let what = if backend.ready {
                        Happening::Routed { pod }
                    } else {
                        Happening::Unrouted { pod }
                    };
                    timeline.record("proxy", what);
                }
            }
        });
        Arc::new(Endpoints {
            changes,
            view,
            routed,
        })
    }

    /// The pods new connections may go to, as it changes.
    pub fn watch_routed(&self) -> watch::Receiver<Vec<Routed>> {
        self.routed.subscribe()
    }

    /// The endpoints controller's decision for one pod: ready means ready and not terminating.
    pub fn publish(&self, pod: &str, addr: SocketAddr, health: Option<SocketAddr>, ready: bool) {
        let backend = Backend {
            endpoint: Routed {
                pod: pod.to_owned(),
                addr,
                health,
            },
            ready,
        };
        let _ = self.changes.send((Instant::now(), backend));
    }

    fn ready(&self) -> Vec<Routed> {
        ready_of(&self.view.read().unwrap())
    }
}

fn ready_of(view: &[Backend]) -> Vec<Routed> {
    view.iter()
        .filter(|backend| backend.ready)
        .map(|backend| backend.endpoint.clone())
        .collect()
}

/// What the proxy saw go wrong, beside what the clients count.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    pub connections: AtomicU64,
    pub no_ready_endpoint: AtomicU64,
    pub backend_refused: AtomicU64,
}

/// A TCP proxy on 127.0.0.1 standing for the Service's cluster IP.
pub struct Proxy {
    pub addr: SocketAddr,
    pub counters: Arc<ProxyCounters>,
}

impl Proxy {
    pub async fn start(
        endpoints: Arc<Endpoints>,
        stop: CancellationToken,
    ) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let counters: Arc<ProxyCounters> = Arc::default();
        let next = Arc::new(AtomicUsize::new(0));
        let counting = counters.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((client, _)) = accepted else { continue };
                counting.connections.fetch_add(1, Ordering::Relaxed);
                let backends = endpoints.ready();
                if backends.is_empty() {
                    counting.no_ready_endpoint.fetch_add(1, Ordering::Relaxed);
                    continue; // dropping the client closes it: nowhere to send it
                }
                let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()].addr;
                let counting = counting.clone();
                tokio::spawn(async move { pin(client, backend, &counting).await });
            }
        });
        Ok(Proxy { addr, counters })
    }
}

/// Copies both ways until each side has finished, half-closes included.
async fn pin(mut client: TcpStream, backend: SocketAddr, counters: &ProxyCounters) {
    let _ = client.set_nodelay(true);
    let connected = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(backend)).await;
    let Ok(Ok(mut server)) = connected else {
        counters.backend_refused.fetch_add(1, Ordering::Relaxed);
        // Like a reset from the pod: the client sees its connection fail.
        let _ = client.set_zero_linger();
        return;
    };
    let _ = server.set_nodelay(true);
    if tokio::io::copy_bidirectional(&mut client, &mut server)
        .await
        .is_err()
    {
        // One side reset: pass the reset on rather than a clean close.
        let _ = client.set_zero_linger();
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const LAG: Duration = Duration::from_millis(300);

    /// A backend that greets every connection, then echoes.
    async fn backend() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    stream.write_all(b"hi").await.unwrap();
                    let mut buffer = [0u8; 16];
                    while let Ok(read @ 1..) = stream.read(&mut buffer).await {
                        stream.write_all(&buffer[..read]).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    /// What a new connection through the proxy gets first: the greeting, or nothing.
    async fn greeting(proxy: SocketAddr) -> (Vec<u8>, TcpStream) {
        let mut stream = TcpStream::connect(proxy).await.unwrap();
        let mut buffer = vec![0u8; 2];
        let read = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buffer))
            .await
            .unwrap()
            .unwrap_or(0);
        buffer.truncate(read);
        (buffer, stream)
    }

    #[tokio::test]
    async fn changes_reach_the_proxy_after_the_lag_and_connections_stay_pinned() {
        let timeline = Arc::new(Timeline::new(false));
        let endpoints = Endpoints::new(LAG, timeline);
        let proxy = Proxy::start(endpoints.clone(), CancellationToken::new())
            .await
            .unwrap();
        let pod_a = backend().await;
        endpoints.publish("pod-a", pod_a, None, true);

        let (early, _) = greeting(proxy.addr).await;
        assert!(early.is_empty(), "routed before the lag had passed");
        tokio::time::sleep(LAG + Duration::from_millis(100)).await;
        let (greeted, mut pinned) = greeting(proxy.addr).await;
        assert_eq!(greeted, b"hi");

        endpoints.publish("pod-a", pod_a, None, false);
        tokio::time::sleep(LAG + Duration::from_millis(100)).await;
        let (refused, _) = greeting(proxy.addr).await;
        assert!(
            refused.is_empty(),
            "new connections still routed to a withdrawn endpoint"
        );
        assert_eq!(proxy.counters.no_ready_endpoint.load(Ordering::Relaxed), 2);

        // The established connection still reaches its backend.
        pinned.write_all(b"ok").await.unwrap();
        let mut echo = [0u8; 2];
        pinned.read_exact(&mut echo).await.unwrap();
        assert_eq!(&echo, b"ok");
    }
}
