//! The event bus: every cycle, plan, action, migration progress, host state change and
//! experiment progress, numbered, fanned out to subscribers (the API's server-sent events) and
//! kept in a bounded ring so a client that reconnects with `Last-Event-ID` misses nothing that
//! is still in the ring.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::sync::broadcast;

/// Events kept for `Last-Event-ID` resume.
pub const RING: usize = 20_000;

/// One event.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct Event {
    /// Monotonic, starting at 1 in each controller process.
    pub id: u64,
    /// `cycle`, `plan`, `action`, `migration`, `host`, `experiment`, `policy`, `controller`.
    pub kind: &'static str,
    /// World time (Unix seconds) when it happened.
    pub time: f64,
    pub data: serde_json::Value,
}

/// Publishes events; clone freely.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ring: Mutex<(u64, VecDeque<Arc<Event>>)>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl EventBus {
    pub fn new() -> EventBus {
        let (tx, _) = broadcast::channel(4096);
        EventBus { inner: Arc::new(Inner { ring: Mutex::new((0, VecDeque::with_capacity(1024))), tx }) }
    }

    /// Publishes an event; returns its id.
    pub fn publish(&self, kind: &'static str, time: f64, data: serde_json::Value) -> u64 {
        let mut ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.0 += 1;
        let ev = Arc::new(Event { id: ring.0, kind, time, data });
        if ring.1.len() == RING {
            ring.1.pop_front();
        }
        ring.1.push_back(ev.clone());
        // Sent under the lock, so subscribers see ids in order and `subscribe` cannot miss one.
        let _ = self.inner.tx.send(ev);
        ring.0
    }

    /// The id of the newest event (0 before any).
    pub fn last_id(&self) -> u64 {
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Events after `after` still in the ring, and a receiver for everything newer. `gap` is
    /// true when events after `after` have already left the ring (the client must reload).
    pub fn subscribe(&self, after: Option<u64>) -> Subscription {
        let ring = self.inner.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.inner.tx.subscribe();
        let (backlog, gap) = match after {
            None => (Vec::new(), false),
            Some(a) => {
                let oldest = ring.1.front().map_or(ring.0 + 1, |e| e.id);
                let backlog: Vec<Arc<Event>> = ring.1.iter().filter(|e| e.id > a).cloned().collect();
                (backlog, a + 1 < oldest && a < ring.0)
            }
        };
        Subscription { backlog, gap, rx }
    }

    /// Number of live subscribers.
    pub fn subscribers(&self) -> usize {
        self.inner.tx.receiver_count()
    }
}

/// See [`EventBus::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub gap: bool,
    pub rx: broadcast::Receiver<Arc<Event>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resume_after_an_id_replays_exactly_the_newer_events() {
        let bus = EventBus::new();
        for i in 0..5 {
            bus.publish("cycle", 0.0, serde_json::json!({ "i": i }));
        }
        let mut sub = bus.subscribe(Some(3));
        assert_eq!(sub.backlog.iter().map(|e| e.id).collect::<Vec<_>>(), vec![4, 5]);
        assert!(!sub.gap);
        bus.publish("cycle", 0.0, serde_json::json!({}));
        assert_eq!(sub.rx.try_recv().unwrap().id, 6);
    }

    #[test]
    fn a_resume_point_older_than_the_ring_reports_a_gap() {
        let bus = EventBus::new();
        for _ in 0..RING + 10 {
            bus.publish("cycle", 0.0, serde_json::Value::Null);
        }
        let sub = bus.subscribe(Some(2));
        assert!(sub.gap);
        assert_eq!(sub.backlog.len(), RING);
        assert!(!bus.subscribe(Some(bus.last_id())).gap);
    }
}
