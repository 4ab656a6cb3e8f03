//! Who scrapes `/metrics`, so that the end of a shutdown is seen: the process exits only
//! once every scraper seen recently has read the final counters, or when
//! `SHUTDOWN_METRICS_LINGER` runs out, whichever comes first.
//!
//! Without this the shutdown's outcome is counted a few milliseconds before the process
//! exits, and a Prometheus scraping every 15 s never holds it.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

/// Scrapers remembered at most: a client cannot grow the book without bound, and a
/// Prometheus pair, an agent and a person with curl fit well within it.
const MOST_SCRAPERS: usize = 16;

/// The scrapers seen, by address; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Scrapers(Arc<Book>);

#[derive(Default)]
struct Book {
    /// When each address last began a scrape.
    last_scrape: Mutex<HashMap<IpAddr, Instant>>,
    scraped: Notify,
}

/// How a linger ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lingered {
    /// Scrapers seen within the linger before it began: each one was waited for.
    pub(crate) waited_for: usize,
    /// Those that read the final counters in time.
    pub(crate) read_final: usize,
}

impl Scrapers {
    /// Notes that `peer` is scraping now; call before the metrics are rendered.
    pub(crate) fn record(&self, peer: IpAddr) {
        let now = Instant::now();
        {
            let mut last_scrape = self.0.last_scrape.lock().expect("never poisoned");
            if last_scrape.len() >= MOST_SCRAPERS && !last_scrape.contains_key(&peer) {
                let oldest = last_scrape
                    .iter()
                    .min_by_key(|(_, at)| **at)
                    .map(|(ip, _)| *ip);
                last_scrape.remove(&oldest.expect("the book is full"));
            }
            last_scrape.insert(peer, now);
        }
        self.0.scraped.notify_waiters();
    }

    /// Waits until every scraper seen within `linger` before now has begun a scrape after
    /// now, at most `linger`. Call once the final counters are in place: any scrape that
    /// begins later reads them. Returns at once when nobody scraped recently.
    pub(crate) async fn linger(&self, linger: Duration) -> Lingered {
        let began = Instant::now();
        let waited: Vec<IpAddr> = {
            let last_scrape = self.0.last_scrape.lock().expect("never poisoned");
            let recent = began.checked_sub(linger).unwrap_or(began);
            let waited = last_scrape.iter().filter(|(_, at)| **at >= recent);
            waited.map(|(ip, _)| *ip).collect()
        };
        let deadline = began + linger;
        loop {
            let scraped = self.0.scraped.notified();
            let read_final = self.read_since(&waited, began);
            if read_final == waited.len() || Instant::now() >= deadline {
                return Lingered {
                    waited_for: waited.len(),
                    read_final,
                };
            }
            tokio::select! {
                () = scraped => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    fn read_since(&self, peers: &[IpAddr], since: Instant) -> usize {
        let last_scrape = self.0.last_scrape.lock().expect("never poisoned");
        let read = |peer: &&IpAddr| last_scrape.get(peer).is_some_and(|at| *at > since);
        peers.iter().filter(read).count()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const LINGER: Duration = Duration::from_secs(17);

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    #[tokio::test(start_paused = true)]
    async fn nobody_scraping_means_no_wait() {
        let scrapers = Scrapers::default();
        let began = Instant::now();
        let lingered = scrapers.linger(LINGER).await;
        assert_eq!(
            lingered,
            Lingered {
                waited_for: 0,
                read_final: 0
            }
        );
        assert_eq!(began.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scraper_that_stopped_long_ago_is_not_waited_for() {
        let scrapers = Scrapers::default();
        scrapers.record(ip(1));
        tokio::time::sleep(LINGER + Duration::from_secs(1)).await;
        assert_eq!(scrapers.linger(LINGER).await.waited_for, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_linger_ends_once_each_recent_scraper_scraped_again() {
        let scrapers = Scrapers::default();
        scrapers.record(ip(1));
        scrapers.record(ip(2));
        let began = Instant::now();
        let scraping = scrapers.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            scraping.record(ip(1));
            tokio::time::sleep(Duration::from_secs(5)).await;
            scraping.record(ip(2));
        });
        let lingered = scrapers.linger(LINGER).await;
        assert_eq!(
            lingered,
            Lingered {
                waited_for: 2,
                read_final: 2
            }
        );
        assert_eq!(
            began.elapsed(),
            Duration::from_secs(8),
            "no longer than needed"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_scraper_that_never_comes_back_costs_the_whole_linger_and_no_more() {
        let scrapers = Scrapers::default();
        scrapers.record(ip(1));
        let began = Instant::now();
        let lingered = scrapers.linger(LINGER).await;
        assert_eq!(
            lingered,
            Lingered {
                waited_for: 1,
                read_final: 0
            }
        );
        assert_eq!(began.elapsed(), LINGER);
    }

    #[tokio::test(start_paused = true)]
    async fn the_book_stays_bounded() {
        let scrapers = Scrapers::default();
        for last in 0..=255 {
            scrapers.record(ip(last));
            tokio::time::advance(Duration::from_millis(1)).await;
        }
        let book = scrapers.0.last_scrape.lock().unwrap();
        assert_eq!(book.len(), MOST_SCRAPERS);
        assert!(book.contains_key(&ip(255)), "the newest is kept");
    }
}
