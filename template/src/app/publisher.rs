//! An example of a resource that must close after the last request: a producer that
//! buffers events and must flush them before the process exits. Replace the body of
//! [`EventPublisher::send_batch`] with a real client (Kafka, SQS, a database...).

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Bounded in bytes, not in events: a client sending large bodies cannot grow it past its
/// capacity.
pub struct EventPublisher {
    buffer: Mutex<Buffer>,
    capacity_bytes: usize,
    sent: AtomicU64,
    closed: AtomicBool,
}

#[derive(Default)]
struct Buffer {
    events: Vec<String>,
    bytes: usize,
}

/// Why an event was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker is not keeping up: callers should back off.
    #[error("event buffer full ({buffered_bytes} bytes)")]
    Full { buffered_bytes: usize },
    /// The service is shutting down.
    #[error("the publisher is closed")]
    Closed,
}

impl EventPublisher {
    pub fn new(capacity_bytes: usize) -> Self {
        Self {
            buffer: Mutex::new(Buffer::default()),
            capacity_bytes,
            sent: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub fn publish(&self, event: String) -> Result<(), PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        let mut buffer = self.buffer.lock().expect("publisher buffer lock");
        if buffer.bytes + event.len() > self.capacity_bytes {
            return Err(PublishError::Full {
                buffered_bytes: buffer.bytes,
            });
        }
        buffer.bytes += event.len();
        buffer.events.push(event);
        Ok(())
    }

    /// Sends everything buffered so far; returns how many events went out.
    pub async fn flush(&self) -> usize {
        let batch = std::mem::take(&mut *self.buffer.lock().expect("publisher buffer lock")).events;
        let count = batch.len();
        if count > 0 {
            self.send_batch(batch).await;
            self.sent.fetch_add(count as u64, Ordering::Relaxed);
        }
        count
    }

    /// Refuses new events, then flushes the rest.
    pub async fn close(&self) -> usize {
        self.closed.store(true, Ordering::Release);
        self.flush().await
    }

    /// Healthy while the buffer is under three quarters full: a fuller buffer means the
    /// broker is not keeping up.
    pub fn check(&self) -> Result<(), PublishError> {
        let buffered_bytes = self.buffer.lock().expect("publisher buffer lock").bytes;
        if buffered_bytes < self.capacity_bytes / 4 * 3 {
            Ok(())
        } else {
            Err(PublishError::Full { buffered_bytes })
        }
    }

    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    async fn send_batch(&self, batch: Vec<String>) {
        // Stands in for a network round trip to a broker.
        tokio::time::sleep(Duration::from_millis(5)).await;
        tracing::debug!(events = batch.len(), "published a batch");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn close_flushes_and_refuses_new_events() {
        let publisher = EventPublisher::new(8);
        publisher.publish("abc".into()).unwrap();
        publisher.publish("def".into()).unwrap();
        let full = Err(PublishError::Full { buffered_bytes: 6 });
        assert_eq!(
            publisher.publish("ghi".into()),
            full,
            "9 bytes would not fit"
        );
        assert_eq!(
            publisher.check(),
            full,
            "6 of 8 bytes is too full to be ready"
        );
        assert_eq!(publisher.close().await, 2);
        assert_eq!(publisher.sent(), 2);
        assert_eq!(publisher.publish("d".into()), Err(PublishError::Closed));
    }

    #[test]
    fn the_capacity_counts_bytes_not_events() {
        let publisher = EventPublisher::new(1024);
        assert!(publisher.publish("x".repeat(1000)).is_ok());
        assert!(
            publisher.publish("x".repeat(100)).is_err(),
            "one large event fills it"
        );
        for _ in 0..24 {
            publisher.publish("y".into()).unwrap();
        }
        assert_eq!(
            publisher.check(),
            Err(PublishError::Full {
                buffered_bytes: 1024
            })
        );
    }
}
