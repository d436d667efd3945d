//! The shared timer wheel: every subscription's periodic renewal (R-REAUTH) and heartbeat
//! (R-HB) and every trailing throttled send (R-THR-4) waits here, as one entry of one
//! [`DelayQueue`] driven by one task, instead of as a task of its own.
//!
//! A sleeping task per timer costs the size of everything it will ever await: a renewal's
//! task holds room for the authorizer call's future, about 2.8 KB per subscription while it
//! sleeps (measured: 2,000 connections x 10 subscriptions with renewals and heartbeats, 65.7 KB
//! per connection). An entry here is the job (a boxed closure capturing a weak session
//! reference, the name and the instance) plus the wheel's bookkeeping, about 150 bytes.
//!
//! When an entry is due, the driver task calls its job outside the lock. A job that awaits
//! (a renewal's HTTP call) spawns a task for the duration of the call only.
//!
//! Cancelling is by [`TimerId`], never by the queue's own key: keys are reused once an entry
//! fired, so a stale key could cancel someone else's timer. An id that already fired, or was
//! cancelled, is ignored.

use std::collections::HashMap;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::time::Instant;
use tokio_util::time::DelayQueue;
use tokio_util::time::delay_queue::Key;

/// What runs when a timer is due. It runs on the driver task: it must not block; a job that
/// awaits spawns.
pub type Job = Box<dyn FnOnce() + Send>;

/// A scheduled timer, for [`Timers::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

#[derive(Default)]
pub struct Timers {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    queue: DelayQueue<(TimerId, Job)>,
    /// The queue key of every pending timer.
    keys: HashMap<TimerId, Key, foldhash::fast::RandomState>,
    next_id: u64,
    /// The driver task is running.
    driven: bool,
}

/// The furthest a timer is set: a later due time fires after this long instead (the wheel
/// cannot hold more than about 2.2 years and would panic). Jobs for which that matters check the
/// time when they run (a JWT's expiry does).
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(365 * 24 * 3600);

impl Timers {
    /// Runs `job` at `due`, or after [`MAX_DELAY`] if that is sooner (from within a tokio
    /// runtime: the first call starts the driver).
    pub fn schedule(&self, due: Instant, job: Job) -> TimerId {
        let due = due.min(Instant::now() + MAX_DELAY);
        let mut inner = self.inner.lock().unwrap();
        inner.next_id += 1;
        let id = TimerId(inner.next_id);
        let key = inner.queue.insert_at((id, job), due);
        inner.keys.insert(id, key);
        if !inner.driven {
            inner.driven = true;
            tokio::spawn(drive(Arc::downgrade(&self.inner)));
        }
        id
    }

    /// Cancels a pending timer; nothing happens when it already fired or was cancelled.
    pub fn cancel(&self, id: TimerId) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(key) = inner.keys.remove(&id) {
            // Dropped after the lock: a job's captures may be anything.
            let removed = inner.queue.remove(&key);
            drop(inner);
            drop(removed);
        }
    }

    /// Timers pending (for tests).
    pub fn pending(&self) -> usize {
        self.inner.lock().unwrap().keys.len()
    }
}

/// The driver: pops due entries and runs their jobs, until the wheel is dropped.
async fn drive(inner: std::sync::Weak<Mutex<Inner>>) {
    loop {
        let job = poll_fn(|cx| {
            let Some(inner) = inner.upgrade() else {
                return Poll::Ready(None);
            };
            let mut inner = inner.lock().unwrap();
            match inner.queue.poll_expired(cx) {
                Poll::Ready(Some(expired)) => {
                    let (id, job) = expired.into_inner();
                    inner.keys.remove(&id);
                    Poll::Ready(Some(job))
                }
                // Empty: the next insert wakes this task (the queue kept its waker).
                Poll::Ready(None) | Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match job {
            Some(job) => job(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_due_time_years_ahead_is_capped_not_a_panic() {
        let t = Timers::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let far = Instant::now() + Duration::from_secs(10 * 365 * 24 * 3600);
        t.schedule(far, counter_job(&fired));
        tokio::time::sleep(MAX_DELAY - Duration::from_secs(1)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1, "fired at the cap");
    }

    fn counter_job(c: &Arc<AtomicUsize>) -> Job {
        let c = c.clone();
        Box::new(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_run_when_due_and_cancelled_ones_never() {
        let timers = Timers::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let now = Instant::now();
        timers.schedule(now + Duration::from_millis(10), counter_job(&fired));
        let cancelled = timers.schedule(now + Duration::from_millis(20), counter_job(&fired));
        timers.schedule(now + Duration::from_millis(30), counter_job(&fired));
        timers.cancel(cancelled);
        assert_eq!(timers.pending(), 2);
        tokio::time::sleep(Duration::from_millis(15)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 2);
        assert_eq!(timers.pending(), 0);
        // Cancelling what already fired or was cancelled does nothing.
        timers.cancel(cancelled);
        timers.cancel(TimerId(1));
        // The wheel wakes up for an entry scheduled while it sleeps with nothing to do.
        timers.schedule(
            Instant::now() + Duration::from_millis(5),
            counter_job(&fired),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_id_never_cancels_a_later_timer() {
        let timers = Timers::default();
        let fired = Arc::new(AtomicUsize::new(0));
        let first = timers.schedule(Instant::now(), counter_job(&fired));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
        // The queue reuses the first entry's key for this one; the first id must not reach it.
        timers.schedule(
            Instant::now() + Duration::from_millis(5),
            counter_job(&fired),
        );
        timers.cancel(first);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_may_schedule_another() {
        let timers = Arc::new(Timers::default());
        let fired = Arc::new(AtomicUsize::new(0));
        let (t, f) = (timers.clone(), fired.clone());
        timers.schedule(
            Instant::now() + Duration::from_millis(5),
            Box::new(move || {
                t.schedule(Instant::now() + Duration::from_millis(5), counter_job(&f));
            }),
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(fired.load(Ordering::SeqCst), 1);
    }
}
