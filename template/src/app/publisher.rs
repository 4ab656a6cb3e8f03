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

pub struct EventPublisher {
    buffer: Mutex<Vec<String>>,
    capacity: usize,
    sent: AtomicU64,
    closed: AtomicBool,
}

/// Why an event was not taken.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The broker is not keeping up: callers should back off.
    #[error("event buffer full ({buffered} events)")]
    Full { buffered: usize },
    /// The service is shutting down.
    #[error("the publisher is closed")]
    Closed,
}

impl EventPublisher {
    pub fn new(capacity: usize) -> Self {
        Self {
            buffer: Mutex::new(Vec::new()),
            capacity,
            sent: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        }
    }

    pub fn publish(&self, event: String) -> Result<(), PublishError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(PublishError::Closed);
        }
        let mut buffer = self.buffer.lock().expect("publisher buffer lock");
        if buffer.len() >= self.capacity {
            return Err(PublishError::Full {
                buffered: buffer.len(),
            });
        }
        buffer.push(event);
        Ok(())
    }

    /// Sends everything buffered so far; returns how many events went out.
    pub async fn flush(&self) -> usize {
        let batch = std::mem::take(&mut *self.buffer.lock().expect("publisher buffer lock"));
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

    /// Healthy while the buffer has room: a full buffer means the broker is not keeping up.
    pub fn check(&self) -> Result<(), PublishError> {
        let buffered = self.buffer.lock().expect("publisher buffer lock").len();
        if buffered < self.capacity {
            Ok(())
        } else {
            Err(PublishError::Full { buffered })
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
        let publisher = EventPublisher::new(2);
        publisher.publish("a".into()).unwrap();
        publisher.publish("b".into()).unwrap();
        let full = Err(PublishError::Full { buffered: 2 });
        assert_eq!(publisher.publish("c".into()), full);
        assert_eq!(publisher.check(), full);
        assert_eq!(publisher.close().await, 2);
        assert_eq!(publisher.sent(), 2);
        assert_eq!(publisher.publish("d".into()), Err(PublishError::Closed));
    }
}
