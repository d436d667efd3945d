//! History on NATS: JetStream streams (see the module documentation of [`super`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, context, stream};
use tokio::sync::OnceCell;

use crate::broker::History;
use crate::broker::memory::new_epoch;
use crate::publish::Position;

/// Prepended to a channel's subject to form the subject its history is stored under.
pub const STORE_PREFIX: &str = "socketshark-history.";
/// Prepended to the (escaped) subject prefix and service name to name a service's stream.
pub const STREAM_PREFIX: &str = "socketshark-history-";
/// Header of every stored message (and epoch marker): its offset in the channel.
const OFFSET_HEADER: &str = "Socketshark-Offset";
/// Header of every stored message (and epoch marker): the channel's epoch.
const EPOCH_HEADER: &str = "Socketshark-Epoch";
/// Publishing gives up after this many conflicting attempts in a row.
const ATTEMPTS: usize = 64;
/// At most this many channels' last stored messages are remembered (then forgotten at once).
const CACHED_CHANNELS: usize = 10_000;

/// Why a history operation failed.
#[derive(Debug)]
enum Failure {
    /// The stream is not there (deleted by hand, JetStream's store lost): open it again.
    Gone(String),
    Other(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Failure {
        Failure::Other(e)
    }
}

impl From<Failure> for String {
    fn from(f: Failure) -> String {
        match f {
            Failure::Gone(e) | Failure::Other(e) => e,
        }
    }
}

/// The last message stored for a channel: its stream sequence and its position.
#[derive(Debug, Clone)]
struct Last {
    seq: u64,
    offset: u64,
    epoch: String,
}

/// The limits a stream was created or updated with by this node.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Limits {
    /// `max_msgs_per_subject` (`-1`: not known yet, until the first publish).
    size: i64,
    ttl: Duration,
}

struct Service {
    service: String,
    name: String,
    stream: stream::Stream<()>,
    limits: Limits,
}

/// A service's stream, created or found once per node (and again after an error).
type Cell = Arc<OnceCell<Mutex<Service>>>;

pub struct JetStreamHistory {
    js: jetstream::Context,
    subject_prefix: String,
    services: Mutex<HashMap<String, Cell>>,
    /// store subject -> its last stored message, as this node last saw it. Only a hint: the
    /// publish states it as the expected last sequence, and the stream refuses it if stale.
    last: Mutex<HashMap<String, Last>>,
}

/// A name for a stream: `.` is not allowed in it, so it is escaped like the rest.
pub fn stream_name(subject_prefix: &str, service: &str) -> String {
    let escaped = super::subject(subject_prefix, service).replace('.', "%2E");
    format!("{STREAM_PREFIX}{escaped}")
}

fn header(m: &jetstream::message::StreamMessage, name: &str) -> Option<String> {
    m.headers.get(name).map(|v| v.as_str().to_owned())
}

impl JetStreamHistory {
    pub fn new(client: async_nats::Client, subject_prefix: &str) -> JetStreamHistory {
        JetStreamHistory {
            js: jetstream::new(client),
            subject_prefix: subject_prefix.to_owned(),
            services: Mutex::default(),
            last: Mutex::default(),
        }
    }

    /// The live subject of `channel`, and the subject its history is stored under.
    fn subjects(&self, channel: &str) -> (String, String) {
        let live = super::subject(&self.subject_prefix, channel);
        let store = format!("{STORE_PREFIX}{live}");
        (live, store)
    }

    /// The stream of `channel`'s service, created if missing. `size` is the history size when
    /// known (a publish): a stream created without it keeps every message per subject until the
    /// first publish sets the limit; a stream whose limits differ from this node's is updated.
    async fn stream(
        &self,
        channel: &str,
        size: Option<usize>,
        ttl: Duration,
    ) -> Result<stream::Stream<()>, Failure> {
        let service = channel.split_once('.').map_or(channel, |(s, _)| s);
        let cell = self
            .services
            .lock()
            .unwrap()
            .entry(service.to_owned())
            .or_default()
            .clone();
        let service = cell
            .get_or_try_init(|| self.open(service, size, ttl))
            .await?;
        let (service_name, name, stream, limits) = {
            let s = service.lock().unwrap();
            (
                s.service.clone(),
                s.name.clone(),
                s.stream.clone(),
                s.limits,
            )
        };
        let want = Limits {
            size: size.map_or(limits.size, |s| s as i64),
            ttl,
        };
        if size.is_some() && want != limits {
            let config = self.config(&service_name, want);
            // Failing (the stream deleted meanwhile?): open it again.
            self.js
                .update_stream(config)
                .await
                .map_err(|e| Failure::Gone(format!("jetstream: updating stream {name}: {e}")))?;
            tracing::info!(
                broker = "nats",
                stream = name.as_str(),
                size = want.size,
                ttl = want.ttl.as_secs_f64(),
                "history stream limits updated"
            );
            service.lock().unwrap().limits = want;
        }
        Ok(stream)
    }

    /// The service's stream configuration: `socketshark-history.<subject of service>.>` stored,
    /// each message republished to its live subject once stored.
    fn config(&self, service: &str, limits: Limits) -> stream::Config {
        let live = format!("{}.>", super::subject(&self.subject_prefix, service));
        stream::Config {
            name: stream_name(&self.subject_prefix, service),
            subjects: vec![format!("{STORE_PREFIX}{live}")],
            max_messages_per_subject: limits.size,
            max_age: limits.ttl,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            republish: Some(stream::Republish {
                source: format!("{STORE_PREFIX}{live}"),
                destination: live,
                headers_only: false,
            }),
            ..Default::default()
        }
    }

    /// Finds or creates the service's stream (create-or-get: never deletes or resets one).
    async fn open(
        &self,
        service: &str,
        size: Option<usize>,
        ttl: Duration,
    ) -> Result<Mutex<Service>, String> {
        let name = stream_name(&self.subject_prefix, service);
        for _ in 0..3 {
            match self.js.get_stream(&name).await {
                Ok(mut s) => {
                    let info = s
                        .info()
                        .await
                        .map_err(|e| format!("jetstream: stream {name}: {e}"))?;
                    let limits = Limits {
                        size: info.config.max_messages_per_subject,
                        ttl: info.config.max_age,
                    };
                    return self.open_service(service, &name, limits).await;
                }
                Err(e)
                    if matches!(e.kind(), context::GetStreamErrorKind::JetStream(ref j)
                        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) => {}
                Err(e) => {
                    return Err(format!(
                        "jetstream: stream {name}: {e} (is JetStream on: nats-server -js?)"
                    ));
                }
            }
            let limits = Limits {
                size: size.map_or(-1, |s| s as i64),
                ttl,
            };
            match self.js.create_stream(self.config(service, limits)).await {
                Ok(_) => {
                    tracing::info!(
                        broker = "nats",
                        stream = name.as_str(),
                        "history stream created"
                    );
                    return self.open_service(service, &name, limits).await;
                }
                // Another node created it meanwhile (with other limits): use that one.
                Err(e) => {
                    tracing::info!(broker = "nats", stream = name.as_str(), error = %e, "creating the history stream failed; looking again")
                }
            }
        }
        Err(format!("jetstream: cannot create or find stream {name}"))
    }

    /// A store error: the stream may be gone (deleted by hand, JetStream reset); look it up
    /// again next time.
    fn forget(&self, channel: &str) {
        let service = channel.split_once('.').map_or(channel, |(s, _)| s);
        self.services.lock().unwrap().remove(service);
    }

    /// The last message stored under `store`, `None` if there is none.
    async fn read_last(
        &self,
        stream: &stream::Stream<()>,
        store: &str,
    ) -> Result<Option<Last>, Failure> {
        match stream.get_last_raw_message_by_subject(store).await {
            Ok(m) => {
                let offset = header(&m, OFFSET_HEADER).and_then(|o| o.parse().ok());
                let epoch = header(&m, EPOCH_HEADER);
                match (offset, epoch) {
                    (Some(offset), Some(epoch)) => Ok(Some(Last {
                        seq: m.sequence,
                        offset,
                        epoch,
                    })),
                    _ => Err(Failure::Other(format!(
                        "jetstream: {store}: a stored message without {OFFSET_HEADER}/{EPOCH_HEADER}"
                    ))),
                }
            }
            Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => {
                let gone = matches!(e.kind(), stream::LastRawMessageErrorKind::JetStream(ref j)
                    if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND);
                let e = format!("jetstream: reading {store}: {e}");
                Err(if gone {
                    Failure::Gone(e)
                } else {
                    Failure::Other(e)
                })
            }
        }
    }

    /// Stores `payload` (empty: an epoch marker) at `position`, provided the subject's last
    /// stored message is still `expect` (0: none). `Ok(None)`: it is not (another node stored
    /// one meanwhile, or it expired).
    async fn store(
        &self,
        store: &str,
        payload: Vec<u8>,
        position: &Position,
        expect: u64,
    ) -> Result<Option<u64>, Failure> {
        let publish = context::Publish::build()
            .payload(payload.into())
            .header(OFFSET_HEADER, position.offset.to_string().as_str())
            .header(EPOCH_HEADER, position.epoch.as_str())
            .expected_last_subject_sequence(expect);
        let ack = match self.js.send_publish(store.to_owned(), publish).await {
            Ok(ack) => ack.await,
            Err(e) => Err(e),
        };
        match ack {
            Ok(ack) => Ok(Some(ack.sequence)),
            Err(e) if e.kind() == context::PublishErrorKind::WrongLastSequence => Ok(None),
            Err(e) => {
                let gone = e.kind() == context::PublishErrorKind::StreamNotFound;
                let e = format!("jetstream: storing on {store}: {e}");
                Err(if gone {
                    Failure::Gone(e)
                } else {
                    Failure::Other(e)
                })
            }
        }
    }

    fn cached(&self, store: &str) -> Option<Last> {
        self.last.lock().unwrap().get(store).cloned()
    }

    fn remember(&self, store: &str, last: Option<Last>) {
        let mut cache = self.last.lock().unwrap();
        match last {
            Some(l) => {
                if cache.len() >= CACHED_CHANNELS && !cache.contains_key(store) {
                    cache.clear();
                }
                cache.insert(store.to_owned(), l);
            }
            None => {
                cache.remove(store);
            }
        }
    }

    /// Stores `payload` stamped with the channel's next offset; the stream republishes it to
    /// the live subject. A stream found gone is opened (created) again, once.
    pub async fn publish(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> Result<u64, String> {
        match self.try_publish(channel, payload.clone(), size, ttl).await {
            Err(Failure::Gone(e)) => {
                tracing::warn!(
                    broker = "nats",
                    error = e.as_str(),
                    "history stream gone: opening it again"
                );
                self.forget(channel);
                Ok(self.try_publish(channel, payload, size, ttl).await?)
            }
            r => Ok(r?),
        }
    }

    async fn try_publish(
        &self,
        channel: &str,
        payload: Vec<u8>,
        size: usize,
        ttl: Duration,
    ) -> Result<u64, Failure> {
        let (_, store) = self.subjects(channel);
        let stream = self.stream(channel, Some(size), ttl).await?;
        let mut last = self.cached(&store);
        for _ in 0..ATTEMPTS {
            if last.is_none() {
                last = self.read_last(&stream, &store).await?;
            }
            let (position, expect) = match &last {
                Some(l) => (
                    Position {
                        offset: l.offset + 1,
                        epoch: l.epoch.clone(),
                    },
                    l.seq,
                ),
                // Nothing stored (never, or expired): a new history.
                None => (
                    Position {
                        offset: 1,
                        epoch: new_epoch(),
                    },
                    0,
                ),
            };
            let stamped = position
                .stamp(&payload)
                .ok_or_else(|| "the message must be a non-empty JSON object".to_owned())?;
            match self.store(&store, stamped, &position, expect).await {
                Ok(Some(seq)) => {
                    self.remember(
                        &store,
                        Some(Last {
                            seq,
                            offset: position.offset,
                            epoch: position.epoch.clone(),
                        }),
                    );
                    return Ok(position.offset);
                }
                // Stale: read the subject's last message again.
                Ok(None) => last = None,
                Err(e) => {
                    self.remember(&store, None);
                    return Err(e);
                }
            }
        }
        self.remember(&store, None);
        Err(Failure::Other(format!(
            "jetstream: {store}: {ATTEMPTS} conflicting publishes in a row"
        )))
    }

    /// The channel's position and the stored messages after `since`; an epoch marker is stored
    /// for a channel without history. A stream found gone is opened (created) again, once.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<History, String> {
        match self.try_history(channel, since, ttl).await {
            Err(Failure::Gone(e)) => {
                tracing::warn!(
                    broker = "nats",
                    error = e.as_str(),
                    "history stream gone: opening it again"
                );
                self.forget(channel);
                Ok(self.try_history(channel, since, ttl).await?)
            }
            r => Ok(r?),
        }
    }

    async fn try_history(
        &self,
        channel: &str,
        since: Option<u64>,
        ttl: Duration,
    ) -> Result<History, Failure> {
        let (_, store) = self.subjects(channel);
        let stream = self.stream(channel, None, ttl).await?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            last = self.read_last(&stream, &store).await?;
            if last.is_some() {
                break;
            }
            // No history: an epoch marker, so that the position told now stays valid.
            let marker = Position {
                offset: 0,
                epoch: new_epoch(),
            };
            if let Some(seq) = self.store(&store, Vec::new(), &marker, 0).await? {
                last = Some(Last {
                    seq,
                    offset: 0,
                    epoch: marker.epoch,
                });
                break;
            }
        }
        let last =
            last.ok_or_else(|| format!("jetstream: {store}: no epoch after {ATTEMPTS} tries"))?;
        self.remember(&store, Some(last.clone()));
        let messages = match since {
            Some(since) if since < last.offset => self.read(&stream, &store, since, &last).await?,
            _ => Vec::new(),
        };
        Ok(History {
            epoch: last.epoch,
            top: last.offset,
            messages,
        })
    }

    /// A handle on the existing stream `name` of `service`, known to have `limits`.
    async fn open_service(
        &self,
        service: &str,
        name: &str,
        limits: Limits,
    ) -> Result<Mutex<Service>, String> {
        let stream = self
            .js
            .get_stream_no_info(name)
            .await
            .map_err(|e| format!("jetstream: stream {name}: {e}"))?;
        Ok(Mutex::new(Service {
            service: service.to_owned(),
            name: name.to_owned(),
            stream,
            limits,
        }))
    }

    /// The messages stored under `store` after offset `since`, up to `last`, oldest first.
    async fn read(
        &self,
        stream: &stream::Stream<()>,
        store: &str,
        since: u64,
        last: &Last,
    ) -> Result<Vec<Vec<u8>>, String> {
        let mut out = Vec::new();
        super::read_filtered(
            stream,
            store.to_owned(),
            consumer::DeliverPolicy::All,
            &format!("reading {store}"),
            |m| {
                let headers = m.headers.as_ref();
                let get = |name: &str| headers.and_then(|h| h.get(name)).map(|v| v.as_str());
                let offset: u64 = get(OFFSET_HEADER).and_then(|o| o.parse().ok()).unwrap_or(0);
                if get(EPOCH_HEADER) == Some(last.epoch.as_str()) && offset > since {
                    out.push(m.payload.to_vec());
                }
                offset < last.offset
            },
        )
        .await
        .map(|()| out)
    }
}
