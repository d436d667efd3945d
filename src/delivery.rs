//! Per-subscription delivery state: the out-of-order filter (R-OOO) and the throttle (R-THR).
//!
//! Pure logic driven by the caller's clock (`now` is a parameter), so it is unit-tested without
//! sleeping. The session owns one of each per subscription instance and schedules the trailing
//! sends this module asks for.

use std::collections::HashMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::compat::pyjson::HashKey;

/// Longest delay a trailing send is scheduled for: an infinite or absurd throttle period means
/// "never" in practice, and must not overflow the clock.
const MAX_DELAY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The out-of-order filter: per order key, the last accepted order (R-OOO-3..5).
#[derive(Debug, Default)]
pub struct OrderFilter {
    last: HashMap<HashKey, f64>,
}

impl OrderFilter {
    /// Whether a message with this key and order passes. A passing message becomes the last
    /// order of its key. Equal orders are dropped; NaN compares false everywhere, so a NaN order
    /// always passes and then lets every order pass (R-OOO-4).
    pub fn accept(&mut self, key: &HashKey, order: f64) -> bool {
        match self.last.get_mut(key) {
            Some(last) if order <= *last => false,
            Some(last) => {
                *last = order;
                true
            }
            None => {
                self.last.insert(key.clone(), order);
                true
            }
        }
    }

    /// Seeds the state from the `before_subscribe` response's options (R-OOO-6).
    pub fn seed(&mut self, key: HashKey, order: f64) {
        self.last.insert(key, order);
    }
}

/// What to do with a throttled message on arrival (R-THR-3).
#[derive(Debug, PartialEq)]
pub enum Arrival<P> {
    /// Send it now.
    SendNow(P),
    /// It is now the pending message; a trailing send is already scheduled.
    Held,
    /// It is now the pending message; the caller must schedule a trailing send at this instant
    /// and call [`Throttle::fire`] then.
    Schedule(Instant),
}

#[derive(Debug)]
struct KeyState<P> {
    last_send: Instant,
    pending: Option<P>,
    due: Option<Instant>,
}

/// The throttle of one subscription instance: per throttle key, the time of the last send, the
/// pending message and whether a trailing send is scheduled (R-THR-2).
#[derive(Debug)]
pub struct Throttle<P> {
    keys: HashMap<HashKey, KeyState<P>>,
}

impl<P> Default for Throttle<P> {
    fn default() -> Self {
        Throttle {
            keys: HashMap::new(),
        }
    }
}

impl<P> Throttle<P> {
    /// A message with throttle period `period` seconds arrives (R-THR-3).
    pub fn arrive(&mut self, key: &HashKey, period: f64, now: Instant, msg: P) -> Arrival<P> {
        let Some(st) = self.keys.get_mut(key) else {
            self.keys.insert(
                key.clone(),
                KeyState {
                    last_send: now,
                    pending: None,
                    due: None,
                },
            );
            return Arrival::SendNow(msg);
        };
        if st.due.is_some() {
            st.pending = Some(msg);
            return Arrival::Held;
        }
        let elapsed = now.saturating_duration_since(st.last_send).as_secs_f64();
        if elapsed < period {
            let delay = Duration::try_from_secs_f64(period)
                .unwrap_or(MAX_DELAY)
                .min(MAX_DELAY);
            let due = st.last_send + delay;
            st.pending = Some(msg);
            st.due = Some(due);
            Arrival::Schedule(due)
        } else {
            st.last_send = now;
            Arrival::SendNow(msg)
        }
    }

    /// The trailing send of `key` is due: returns the pending message to send now, if any; the
    /// key becomes idle with its last send at `now` (R-THR-4).
    pub fn fire(&mut self, key: &HashKey, now: Instant) -> Option<P> {
        let st = self.keys.get_mut(key)?;
        st.due = None;
        let msg = st.pending.take()?;
        st.last_send = now;
        Some(msg)
    }

    /// Starts the throttle window of `key` now, as if a message had just been sent (R-THR-8).
    pub fn seed(&mut self, key: HashKey, now: Instant) {
        self.keys.insert(
            key,
            KeyState {
                last_send: now,
                pending: None,
                due: None,
            },
        );
    }

    /// Number of trailing sends scheduled (for tests and metrics).
    pub fn scheduled(&self) -> usize {
        self.keys.values().filter(|k| k.due.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compat::pyjson::hash_key;
    use serde_json::json;

    fn key(v: serde_json::Value) -> HashKey {
        hash_key(Some(&v)).unwrap()
    }

    #[test]
    fn order_filter_spec_example() {
        // T-42: seeded at 2; 1, 2 dropped; 3, 5 pass; 4, 5 dropped; 6 passes; key `other`
        // independent: 1.1, 1.3 pass, 1.2 dropped.
        let mut f = OrderFilter::default();
        let d = hash_key(None).unwrap();
        f.seed(d.clone(), 2.0);
        let got: Vec<bool> = [1.0, 2.0, 3.0, 5.0, 4.0, 5.0, 6.0]
            .iter()
            .map(|o| f.accept(&d, *o))
            .collect();
        assert_eq!(got, [false, false, true, true, false, false, true]);
        let o = key(json!("other"));
        assert!(f.accept(&o, 1.1));
        assert!(f.accept(&o, 1.3));
        assert!(!f.accept(&o, 1.2));
    }

    #[test]
    fn order_keys_follow_python_dict_semantics() {
        let mut f = OrderFilter::default();
        assert!(f.accept(&key(json!(1)), 5.0));
        assert!(!f.accept(&key(json!(1.0)), 5.0));
        assert!(!f.accept(&key(json!(true)), 4.0));
        assert!(f.accept(&key(json!("1")), 4.0));
        assert!(f.accept(&hash_key(None).unwrap(), 1.0));
        assert!(!f.accept(&key(json!(null)), 1.0));
    }

    #[test]
    fn nan_order_quirk() {
        let mut f = OrderFilter::default();
        let k = key(json!("k"));
        assert!(f.accept(&k, 5.0));
        assert!(f.accept(&k, f64::NAN));
        // The next order passes whatever it is (every comparison with NaN is false) and
        // becomes the last order again.
        assert!(f.accept(&k, 1.0));
        assert!(!f.accept(&k, 0.5));
    }

    #[test]
    fn throttle_burst() {
        // R-THR-6: three at once with T=0.1: #1 now, #2 never, #3 at +0.1.
        let t0 = Instant::now();
        let k = hash_key(None).unwrap();
        let mut t = Throttle::default();
        assert_eq!(t.arrive(&k, 0.1, t0, 1), Arrival::SendNow(1));
        let due = t0 + Duration::from_millis(100);
        assert_eq!(t.arrive(&k, 0.1, t0, 2), Arrival::Schedule(due));
        assert_eq!(t.arrive(&k, 0.1, t0, 3), Arrival::Held);
        assert_eq!(t.scheduled(), 1);
        assert_eq!(t.fire(&k, due), Some(3));
        assert_eq!(t.scheduled(), 0);
        // Within T of the trailing send: scheduled again from the trailing send time.
        let t1 = due + Duration::from_millis(50);
        assert_eq!(
            t.arrive(&k, 0.1, t1, 4),
            Arrival::Schedule(due + Duration::from_millis(100))
        );
        assert_eq!(t.fire(&k, due + Duration::from_millis(100)), Some(4));
        // After a quiet period >= T the next message goes at once (R-THR-6, T-46).
        let t2 = due + Duration::from_millis(400);
        assert_eq!(t.arrive(&k, 0.1, t2, 5), Arrival::SendNow(5));
    }

    #[test]
    fn throttle_due_time_is_fixed_when_scheduled() {
        // R-THR-5: T=0.2 at 0 (sent), T=1.0 at 0.05 (scheduled at 1.0), T=0.01 at 0.1 → sent at 1.0.
        let t0 = Instant::now();
        let k = hash_key(None).unwrap();
        let mut t = Throttle::default();
        assert_eq!(t.arrive(&k, 0.2, t0, 1), Arrival::SendNow(1));
        let s = t.arrive(&k, 1.0, t0 + Duration::from_millis(50), 2);
        assert_eq!(s, Arrival::Schedule(t0 + Duration::from_secs(1)));
        assert_eq!(
            t.arrive(&k, 0.01, t0 + Duration::from_millis(100), 3),
            Arrival::Held
        );
        assert_eq!(t.fire(&k, t0 + Duration::from_secs(1)), Some(3));
    }

    #[test]
    fn throttle_keys_are_independent_and_seedable() {
        let t0 = Instant::now();
        let mut t = Throttle::default();
        let a = key(json!("a"));
        let b = key(json!("b"));
        t.seed(a.clone(), t0);
        assert_eq!(
            t.arrive(&a, 0.2, t0 + Duration::from_millis(10), 1),
            Arrival::Schedule(t0 + Duration::from_millis(200))
        );
        assert_eq!(t.arrive(&b, 1.0, t0, 2), Arrival::SendNow(2));
    }

    #[test]
    fn throttle_odd_periods_never_panic() {
        let t0 = Instant::now();
        let k = hash_key(None).unwrap();
        let mut t = Throttle::default();
        assert_eq!(t.arrive(&k, f64::INFINITY, t0, 1), Arrival::SendNow(1));
        assert!(matches!(
            t.arrive(&k, f64::INFINITY, t0, 2),
            Arrival::Schedule(_)
        ));
        let mut t = Throttle::default();
        assert_eq!(t.arrive(&k, f64::NAN, t0, 1), Arrival::SendNow(1));
        assert_eq!(t.arrive(&k, f64::NAN, t0, 2), Arrival::SendNow(2));
        let mut t = Throttle::default();
        assert_eq!(t.arrive(&k, -1.0, t0, 1), Arrival::SendNow(1));
        assert_eq!(t.arrive(&k, -1.0, t0, 2), Arrival::SendNow(2));
        assert_eq!(
            t.arrive(&k, 1e300, t0, 3),
            Arrival::Schedule(t0 + MAX_DELAY)
        );
    }
}
