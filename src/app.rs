//! The process-wide context shared by every session: configuration, the HTTP client, the hub,
//! metrics, the timer wheel and the registry of live sessions (for shutdown).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::Config;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::service::ServiceClient;
use crate::timers::Timers;

/// What the process needs of a live session (implemented by `session::Session`): its id, a
/// close at shutdown, and the bytes queued for its client. A trait, so that this context does
/// not depend on the session module that depends on it.
pub trait LiveSession: Send + Sync {
    fn id(&self) -> u64;
    /// Starts a server-initiated close with this code.
    fn close(&self, code: u16, reason: &'static str);
    /// Bytes of frames queued for the client.
    fn queued_bytes(&self) -> usize;
    /// A reloaded configuration is in force: subscriptions take their service's new settings;
    /// those whose service is gone end.
    fn reconfigure(&self, cfg: &Config);
}

pub struct App {
    /// The configuration in force; replaced by a reload (`crate::reload`). Read it with
    /// [`App::cfg`].
    config: arc_swap::ArcSwap<Config>,
    /// The file it came from (`None`: the embedded quick start, nothing to reload).
    pub config_path: Option<std::path::PathBuf>,
    pub http: ServiceClient,
    /// `[authentication.jwt]`, when configured.
    pub jwt: Option<crate::jwt::Verifier>,
    pub hub: Hub,
    pub metrics: Arc<Metrics>,
    /// Renewals, heartbeats and trailing throttled sends of every session.
    pub timers: Timers,
    /// This node's id among the nodes sharing a broker (presence member ids).
    pub node: String,
    /// This node's presence members (services with `presence`).
    pub presence: crate::presence::Presence,
    /// The demo page (`ws.demo`), once the API port is known.
    pub demo: std::sync::OnceLock<crate::demo::Demo>,
    sessions: Mutex<HashMap<u64, Arc<dyn LiveSession>>>,
    next_session_id: AtomicU64,
    shutting_down: AtomicBool,
    /// Open connections, including those still in their handshake.
    connections: AtomicUsize,
    /// Notified whenever a session ends.
    pub session_ended: Notify,
    /// Messages in (from brokers) and out (to clients) per second, sampled every second.
    pub rates: Mutex<Rates>,
}

/// The last two samples of the message counters, for rates.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub at: std::time::Instant,
    pub received: u64,
    pub delivered: u64,
    pub in_per_s: f64,
    pub out_per_s: f64,
}

impl Rates {
    /// A new sample: the rates since the previous one.
    pub fn sample(&mut self, now: std::time::Instant, received: u64, delivered: u64) {
        let dt = now.duration_since(self.at).as_secs_f64();
        if dt > 0.0 {
            self.in_per_s = received.saturating_sub(self.received) as f64 / dt;
            self.out_per_s = delivered.saturating_sub(self.delivered) as f64 / dt;
        }
        (self.at, self.received, self.delivered) = (now, received, delivered);
    }
}

impl App {
    pub fn new(
        cfg: Arc<Config>,
        config_path: Option<std::path::PathBuf>,
        http: ServiceClient,
        jwt: Option<crate::jwt::Verifier>,
        hub: Hub,
        metrics: Arc<Metrics>,
    ) -> App {
        App {
            config: arc_swap::ArcSwap::new(cfg),
            config_path,
            http,
            jwt,
            hub,
            metrics,
            timers: Timers::default(),
            node: crate::broker::memory::new_epoch(),
            presence: Default::default(),
            demo: std::sync::OnceLock::new(),
            sessions: Mutex::new(HashMap::new()),
            next_session_id: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            session_ended: Notify::new(),
            rates: Mutex::new(Rates {
                at: std::time::Instant::now(),
                received: 0,
                delivered: 0,
                in_per_s: 0.0,
                out_per_s: 0.0,
            }),
        }
    }

    /// The configuration in force (a cheap snapshot: hold it for the duration of one step).
    pub fn cfg(&self) -> arc_swap::Guard<Arc<Config>> {
        self.config.load()
    }

    /// Puts a reloaded configuration in force.
    pub fn set_cfg(&self, cfg: Arc<Config>) {
        self.config.store(cfg);
    }

    /// From now on, connections that complete their handshake are dropped (R-SHUT-3).
    pub fn begin_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    pub fn connection_opened(&self) {
        self.connections.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections.fetch_sub(1, Ordering::Relaxed);
    }

    /// Open connections, including those still in their handshake.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    pub fn next_session_id(&self) -> u64 {
        self.next_session_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn register(&self, session: Arc<dyn LiveSession>) {
        self.sessions.lock().unwrap().insert(session.id(), session);
    }

    pub fn unregister(&self, id: u64) {
        self.sessions.lock().unwrap().remove(&id);
        self.session_ended.notify_waiters();
    }

    pub fn session_count(&self) -> usize {
        self.sessions.lock().unwrap().len()
    }

    /// Bytes queued for clients, all sessions together.
    pub fn queued_bytes(&self) -> usize {
        let sessions = self.sessions.lock().unwrap();
        sessions.values().map(|s| s.queued_bytes()).sum()
    }

    /// A snapshot of the live sessions.
    pub fn sessions(&self) -> Vec<Arc<dyn LiveSession>> {
        self.sessions.lock().unwrap().values().cloned().collect()
    }
}

/// Counts a connection from accept to the end of its session (`limits.max_connections`).
pub struct ConnectionSlot(Arc<App>);

impl ConnectionSlot {
    pub fn new(app: Arc<App>) -> ConnectionSlot {
        app.connection_opened();
        ConnectionSlot(app)
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.connection_closed();
    }
}
