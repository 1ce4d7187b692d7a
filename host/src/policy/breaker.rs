//! Circuit breaker over policy modules, keyed by the module's sha256.
//!
//! A module that fails (a failed call, or the cycle's policy-time budget overrun charged to
//! it) in `trip_after` consecutive decision cycles is **disabled**: the scheduler uses the
//! strategy's fallback module from the start of each cycle instead, at no cost. After a
//! back-off (`backoff_cycles`, doubled at each new trip up to `max_backoff_cycles`) the module
//! gets one trial cycle (`HalfOpen`): success closes the breaker, failure opens it again. An
//! operator re-enables a module at once with [`Breaker::reset`].
//!
//! **API boundary**: the scheduler owns an `Arc<Breaker>` (`Scheduler::breaker`, shared with
//! `Scheduler::set_breaker`); the controller exposes [`Breaker::states`], [`Breaker::events`]
//! and [`Breaker::reset`]. Thread-safe; transitions are logged (`warn` on the first trip of a
//! module, `info` after) and kept as [`BreakerEvent`]s (bounded). Time is counted in decision
//! cycles, so a simulation behaves the same on any machine.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use super::sanitize::clean;

/// When the breaker opens and for how long.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerConfig {
    /// Consecutive failing cycles that disable a module.
    pub trip_after: u32,
    /// Cycles a module stays disabled after its first trip.
    pub backoff_cycles: u64,
    /// Longest back-off (it doubles at every trip).
    pub max_backoff_cycles: u64,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        // 3 failing cycles (15 min at the usual 5-minute interval); retry after 1 h, at most a day.
        BreakerConfig { trip_after: 3, backoff_cycles: 12, max_backoff_cycles: 288 }
    }
}

/// The state of one module's breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum BreakerState {
    /// In use. `consecutive_failures` failing cycles in a row so far.
    Closed { consecutive_failures: u32 },
    /// Disabled until `retry_at_cycle`.
    Open { since_cycle: u64, retry_at_cycle: u64, reason: String },
    /// On trial in the current cycle after a back-off.
    HalfOpen,
}

impl BreakerState {
    pub fn is_open(&self) -> bool {
        matches!(self, BreakerState::Open { .. })
    }

    /// One word for tables: `closed`, `open`, `half-open`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BreakerState::Closed { .. } => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

/// What happened to a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerAction {
    /// The module was disabled.
    Opened,
    /// The back-off ended: the module is on trial.
    Trial,
    /// The trial succeeded: the module is in use again.
    Closed,
    /// An operator re-enabled the module.
    Reset,
}

/// One transition, for the controller's API and the logs.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerEvent {
    pub sha256: String,
    pub module: String,
    pub cycle: u64,
    pub action: BreakerAction,
    /// Why it opened (the failure's one-line message), else empty.
    pub reason: String,
}

/// A module's breaker as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModuleBreaker {
    pub sha256: String,
    pub module: String,
    #[serde(flatten)]
    pub state: BreakerState,
    /// Times it was disabled.
    pub trips: u32,
    /// Failing cycles in total.
    pub failed_cycles: u64,
}

struct Entry {
    module: String,
    state: BreakerState,
    trips: u32,
    failed_cycles: u64,
    backoff: u64,
}

#[derive(Default)]
struct Inner {
    modules: HashMap<String, Entry>,
    events: VecDeque<BreakerEvent>,
}

/// Most events kept.
const EVENTS: usize = 256;

/// The circuit breakers of every module a scheduler uses. See the module docs.
#[derive(Default)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, inner: Mutex::new(Inner::default()) }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data (every update is a
        // single assignment): keep serving rather than propagate the poison.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of the module with this sha256 (`Closed` if never seen).
    pub fn state(&self, sha256: &str) -> BreakerState {
        self.lock().modules.get(sha256).map_or(BreakerState::Closed { consecutive_failures: 0 }, |e| e.state.clone())
    }

    /// Every module seen, sorted by name.
    pub fn states(&self) -> Vec<ModuleBreaker> {
        let inner = self.lock();
        let mut out: Vec<ModuleBreaker> = inner
            .modules
            .iter()
            .map(|(sha, e)| ModuleBreaker {
                sha256: sha.clone(),
                module: e.module.clone(),
                state: e.state.clone(),
                trips: e.trips,
                failed_cycles: e.failed_cycles,
            })
            .collect();
        out.sort_by(|a, b| (&a.module, &a.sha256).cmp(&(&b.module, &b.sha256)));
        out
    }

    /// The latest transitions, oldest first.
    pub fn events(&self) -> Vec<BreakerEvent> {
        self.lock().events.iter().cloned().collect()
    }

    /// Operator re-enable: closes the module's breaker at once and resets its back-off.
    /// Returns whether the module was disabled (or on trial).
    pub fn reset(&self, sha256: &str) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.modules.get_mut(sha256) else { return false };
        let was = !matches!(e.state, BreakerState::Closed { .. });
        e.state = BreakerState::Closed { consecutive_failures: 0 };
        e.backoff = 0;
        let module = e.module.clone();
        tracing::info!(module = %module, sha256, "policy module re-enabled by an operator");
        push(
            &mut inner,
            BreakerEvent {
                sha256: sha256.into(),
                module,
                cycle: 0,
                action: BreakerAction::Reset,
                reason: String::new(),
            },
        );
        was
    }

    /// Whether the module may be used in `cycle`. A disabled module whose back-off has ended
    /// goes on trial (and is allowed).
    pub fn allows(&self, sha256: &str, module: &str, cycle: u64) -> bool {
        let mut inner = self.lock();
        let Some(e) = inner.modules.get_mut(sha256) else { return true };
        match &e.state {
            BreakerState::Open { retry_at_cycle, .. } if cycle < *retry_at_cycle => false,
            BreakerState::Open { .. } => {
                e.state = BreakerState::HalfOpen;
                tracing::info!(module = %clean(module), sha256, cycle, "policy module back on trial after its back-off");
                let event = BreakerEvent {
                    sha256: sha256.into(),
                    module: module.into(),
                    cycle,
                    action: BreakerAction::Trial,
                    reason: String::new(),
                };
                push(&mut inner, event);
                true
            }
            _ => true,
        }
    }

    /// Records the outcome of a cycle in which the module was used: `failure` is the one-line
    /// cause when it failed. Returns the new state.
    pub fn record(&self, sha256: &str, module: &str, cycle: u64, failure: Option<&str>) -> BreakerState {
        let config = &self.config;
        let mut inner = self.lock();
        let e = inner.modules.entry(sha256.to_string()).or_insert_with(|| Entry {
            module: module.to_string(),
            state: BreakerState::Closed { consecutive_failures: 0 },
            trips: 0,
            failed_cycles: 0,
            backoff: 0,
        });
        let Some(reason) = failure else {
            let event = matches!(e.state, BreakerState::HalfOpen).then(|| BreakerEvent {
                sha256: sha256.into(),
                module: module.into(),
                cycle,
                action: BreakerAction::Closed,
                reason: String::new(),
            });
            e.state = BreakerState::Closed { consecutive_failures: 0 };
            e.backoff = 0;
            if let Some(event) = event {
                tracing::info!(module = %clean(module), sha256, cycle, "policy module passed its trial: in use again");
                push(&mut inner, event);
            }
            return BreakerState::Closed { consecutive_failures: 0 };
        };
        e.failed_cycles += 1;
        let failures = match e.state {
            BreakerState::Closed { consecutive_failures } => consecutive_failures + 1,
            // A failed trial opens the breaker again at once.
            BreakerState::HalfOpen => config.trip_after.max(1),
            BreakerState::Open { .. } => return e.state.clone(),
        };
        if failures < config.trip_after.max(1) {
            e.state = BreakerState::Closed { consecutive_failures: failures };
            return e.state.clone();
        }
        e.backoff = if e.backoff == 0 { config.backoff_cycles.max(1) } else { e.backoff.saturating_mul(2) };
        e.backoff = e.backoff.min(config.max_backoff_cycles.max(1));
        e.trips += 1;
        let reason = clean(reason);
        e.state = BreakerState::Open { since_cycle: cycle, retry_at_cycle: cycle + e.backoff, reason: reason.clone() };
        let state = e.state.clone();
        let (trips, backoff) = (e.trips, e.backoff);
        if trips == 1 {
            tracing::warn!(module = %clean(module), sha256, cycle, retry_in_cycles = backoff, %reason, "policy module disabled by the circuit breaker after {} failing cycles; using the fallback", config.trip_after);
        } else {
            tracing::info!(module = %clean(module), sha256, cycle, trips, retry_in_cycles = backoff, %reason, "policy module disabled again");
        }
        push(
            &mut inner,
            BreakerEvent { sha256: sha256.into(), module: module.into(), cycle, action: BreakerAction::Opened, reason },
        );
        state
    }
}

fn push(inner: &mut Inner, event: BreakerEvent) {
    if inner.events.len() == EVENTS {
        inner.events.pop_front();
    }
    inner.events.push_back(event);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_backs_off_doubles_and_resets() {
        let b = Breaker::new(BreakerConfig { trip_after: 3, backoff_cycles: 4, max_backoff_cycles: 10 });
        let fail = Some("deadline exceeded");
        assert!(b.allows("s", "m", 0));
        b.record("s", "m", 0, fail);
        b.record("s", "m", 1, None); // a good cycle resets the count
        for c in 2..4 {
            assert_eq!(b.record("s", "m", c, fail), BreakerState::Closed { consecutive_failures: c as u32 - 1 });
        }
        assert!(b.record("s", "m", 4, fail).is_open());
        assert!(!b.allows("s", "m", 5) && !b.allows("s", "m", 7));
        assert!(b.allows("s", "m", 8), "back-off of 4 cycles over");
        assert_eq!(b.state("s"), BreakerState::HalfOpen);
        // A failed trial opens again with twice the back-off.
        let BreakerState::Open { retry_at_cycle, .. } = b.record("s", "m", 8, fail) else { panic!() };
        assert_eq!(retry_at_cycle, 16);
        assert!(b.allows("s", "m", 16));
        let BreakerState::Open { retry_at_cycle, .. } = b.record("s", "m", 16, fail) else { panic!() };
        assert_eq!(retry_at_cycle, 26, "capped at 10");
        assert!(b.reset("s"));
        assert!(b.allows("s", "m", 17));
        assert_eq!(b.states()[0].trips, 3);
        let actions: Vec<BreakerAction> = b.events().iter().map(|e| e.action).collect();
        use BreakerAction::*;
        assert_eq!(actions, vec![Opened, Trial, Opened, Trial, Opened, Reset]);
        // A successful trial closes it.
        for c in 20..23 {
            b.record("s", "m", c, fail);
        }
        assert!(b.allows("s", "m", 100));
        assert_eq!(b.record("s", "m", 100, None), BreakerState::Closed { consecutive_failures: 0 });
        assert_eq!(b.events().last().map(|e| e.action), Some(Closed));
    }
}
