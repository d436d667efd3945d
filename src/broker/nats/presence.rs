//! Presence on NATS: JetStream key-value buckets (see the module documentation of [`super`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv};
use tokio::sync::OnceCell;

/// Prepended to the escaped subject prefix and service name to name a service's bucket.
pub const BUCKET_PREFIX: &str = "socketshark-presence-";

/// `s` with every byte outside `A-Z a-z 0-9 -` (and `keep`) written `<esc>XX`.
fn escape(s: &str, esc: char, keep: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("{esc}{b:02X}"));
        }
    }
    out
}

/// The bucket of a service (bucket names allow `A-Z a-z 0-9 - _` only).
pub fn bucket_name(subject_prefix: &str, service: &str) -> String {
    format!(
        "{BUCKET_PREFIX}{}",
        escape(&format!("{subject_prefix}{service}"), '_', &[])
    )
}

/// A member's key: the channel and the member id, each one token (keys allow
/// `A-Z a-z 0-9 - _ / = .`; dots separate tokens).
pub fn key(channel: &str, member: &str) -> String {
    format!("{}.{}", token(channel), token(member))
}

fn token(s: &str) -> String {
    escape(s, '=', b"_/")
}

/// A bucket as this node opened it, and the ttl it has.
struct Bucket {
    store: kv::Store,
    stream: String,
    ttl: Duration,
}

pub struct JetStreamPresence {
    js: jetstream::Context,
    subject_prefix: String,
    buckets: Mutex<HashMap<String, Arc<OnceCell<Mutex<Bucket>>>>>,
}

impl JetStreamPresence {
    pub fn new(client: async_nats::Client, subject_prefix: &str) -> JetStreamPresence {
        JetStreamPresence {
            js: jetstream::new(client),
            subject_prefix: subject_prefix.to_owned(),
            buckets: Mutex::default(),
        }
    }

    /// The bucket of `channel`'s service, created if missing (create-or-get), its `max_age`
    /// brought to `ttl`. With `ttl` `None` (a read) nothing is created or changed: `Ok(None)`
    /// when there is no bucket.
    async fn bucket(
        &self,
        channel: &str,
        ttl: Option<Duration>,
    ) -> Result<Option<(kv::Store, String)>, String> {
        let service = channel.split_once('.').map_or(channel, |(s, _)| s);
        let name = bucket_name(&self.subject_prefix, service);
        let cell = self
            .buckets
            .lock()
            .unwrap()
            .entry(service.to_owned())
            .or_default()
            .clone();
        let stream = format!("KV_{name}");
        // Err(None): no bucket, and this is a read.
        let result = cell
            .get_or_try_init(|| async {
                let fail = |e: &dyn std::fmt::Display| {
                    Some(format!(
                        "jetstream: bucket {name}: {e} (is JetStream on: nats-server -js?)"
                    ))
                };
                let has = match self.js.get_stream(&stream).await {
                    Ok(mut s) => Some(s.info().await.map_err(|e| fail(&e))?.config.max_age),
                    Err(e)
                        if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(ref j)
                            if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
                    {
                        None
                    }
                    Err(e) => return Err(fail(&e)),
                };
                let (store, ttl) = match (has, ttl) {
                    (Some(has), _) => (self.js.get_key_value(&name).await.map_err(|e| fail(&e))?, has),
                    (None, Some(ttl)) => {
                        // The stream a key-value bucket is made of, created here: async-nats's
                        // create_key_value cannot read nats-server 2.9's answer.
                        let config = jetstream::stream::Config {
                            name: stream.clone(),
                            subjects: vec![format!("$KV.{name}.>")],
                            max_messages_per_subject: 1,
                            max_age: ttl,
                            duplicate_window: ttl.min(Duration::from_secs(120)),
                            discard: jetstream::stream::DiscardPolicy::New,
                            storage: jetstream::stream::StorageType::Memory,
                            allow_rollup: true,
                            deny_delete: true,
                            allow_direct: true,
                            ..Default::default()
                        };
                        // Two nodes creating it at once with the same ttl: both succeed.
                        self.js.create_stream(config).await.map_err(|e| fail(&e))?;
                        let store = self.js.get_key_value(&name).await.map_err(|e| fail(&e))?;
                        (store, ttl)
                    }
                    (None, None) => return Err(None),
                };
                Ok(Mutex::new(Bucket {
                    store,
                    stream: stream.clone(),
                    ttl,
                }))
            })
            .await;
        let bucket = match result {
            Ok(b) => b,
            Err(e) => {
                self.buckets.lock().unwrap().remove(service);
                return e.map_or(Ok(None), Err);
            }
        };
        let (store, stream, has) = {
            let b = bucket.lock().unwrap();
            (b.store.clone(), b.stream.clone(), b.ttl)
        };
        if let Some(ttl) = ttl.filter(|t| *t != has) {
            let mut s = self
                .js
                .get_stream(&stream)
                .await
                .map_err(|e| format!("jetstream: bucket {name}: {e}"))?;
            let mut config = s
                .info()
                .await
                .map_err(|e| format!("jetstream: bucket {name}: {e}"))?
                .config
                .clone();
            config.max_age = ttl;
            config.duplicate_window = config.duplicate_window.min(ttl);
            self.js
                .update_stream(config)
                .await
                .map_err(|e| format!("jetstream: updating bucket {name}: {e}"))?;
            bucket.lock().unwrap().ttl = ttl;
        }
        Ok(Some((store, stream)))
    }

    /// Puts every member (each refreshed for the bucket's `max_age`).
    pub async fn add(
        &self,
        channel: &str,
        members: Vec<(String, Vec<u8>)>,
        ttl: Duration,
    ) -> Result<(), String> {
        let Some((store, _)) = self.bucket(channel, Some(ttl)).await? else {
            return Err("jetstream: no presence bucket".to_owned());
        };
        let puts = members
            .into_iter()
            .map(|(id, info)| {
                let store = store.clone();
                let key = key(channel, &id);
                async move { store.put(&key, info.into()).await }
            })
            .collect::<Vec<_>>();
        for r in futures_util::future::join_all(puts).await {
            r.map_err(|e| format!("jetstream: presence of {channel}: {e}"))?;
        }
        Ok(())
    }

    pub async fn remove(&self, channel: &str, member: &str) -> Result<(), String> {
        let Some((store, _)) = self.bucket(channel, None).await? else {
            return Ok(());
        };
        store
            .delete(key(channel, member))
            .await
            .map_err(|e| format!("jetstream: presence of {channel}: {e}"))
    }

    /// The info of every member of `channel` (the last value of each of its keys, deleted ones
    /// left out; expired ones are gone from the bucket).
    pub async fn members(&self, channel: &str) -> Result<Vec<Vec<u8>>, String> {
        let Some((_, stream)) = self.bucket(channel, None).await? else {
            // No bucket yet: nobody was ever present.
            return Ok(Vec::new());
        };
        let err = |e: &dyn std::fmt::Display| format!("jetstream: presence of {channel}: {e}");
        let stream = self
            .js
            .get_stream_no_info(&stream)
            .await
            .map_err(|e| err(&e))?;
        let service = channel.split_once('.').map_or(channel, |(s, _)| s);
        let filter = format!(
            "$KV.{}.{}.*",
            bucket_name(&self.subject_prefix, service),
            token(channel)
        );
        let mut out = Vec::new();
        super::read_filtered(
            &stream,
            filter,
            consumer::DeliverPolicy::LastPerSubject,
            &format!("presence of {channel}"),
            |m| {
                let deleted = m.headers.as_ref().and_then(|h| h.get("KV-Operation"));
                if deleted.is_none() && !m.payload.is_empty() {
                    out.push(m.payload.to_vec());
                }
                true
            },
        )
        .await
        .map(|()| out)
    }
}
