//! Presence (issue 14, not in the original): who is subscribed to each channel of a service
//! with `presence = true`, across nodes.
//!
//! Each node keeps its own members here and writes them to the broker (Redis: a hash of member
//! id -> info and a sorted set of expiries per channel), refreshing them every third of
//! `presence_ttl`; a node that dies stops refreshing, and its members expire. A member is one
//! subscription of one session: id `NODE-SESSION`, info `{"client": id, "auth": {auth fields},
//! ["info": {extra fields}]}`. With `join_leave = true`, joining and leaving are published on
//! the channel as `{"subscription": name, "_presence": {"event": "join"|"leave", "info": ...}}`
//! (no `data`: a server without presence drops it) and reach subscribers as
//! `{"event": "join"|"leave", "subscription": name, "info": ...}`.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{Map, Value};

/// The key of a presence event in a published message.
pub const PRESENCE_KEY: &str = "_presence";

/// A member: its id and info JSON.
pub type Member = (String, Vec<u8>);

/// This node's presence members, by subscription name.
#[derive(Default)]
pub struct Presence {
    local: Mutex<HashMap<String, HashMap<String, Vec<u8>>>>,
}

impl Presence {
    pub fn add(&self, name: &str, id: &str, info: Vec<u8>) {
        self.local
            .lock()
            .unwrap()
            .entry(name.to_owned())
            .or_default()
            .insert(id.to_owned(), info);
    }

    pub fn remove(&self, name: &str, id: &str) {
        let mut local = self.local.lock().unwrap();
        if let Some(members) = local.get_mut(name) {
            members.remove(id);
            if members.is_empty() {
                local.remove(name);
            }
        }
    }

    /// Every channel's members, to refresh them in the broker.
    pub fn snapshot(&self) -> Vec<(String, Vec<Member>)> {
        self.local
            .lock()
            .unwrap()
            .iter()
            .map(|(name, m)| {
                let members = m.iter().map(|(id, i)| (id.clone(), i.clone())).collect();
                (name.clone(), members)
            })
            .collect()
    }
}

/// A member's id: the node's and the session's.
pub fn member_id(node: &str, session: u64) -> String {
    format!("{node}-{session}")
}

/// A member's info: `{"client": id, "auth": {...}, ["info": {extra fields}]}`.
pub fn info(id: &str, auth: &Map<String, Value>, extra: &Map<String, Value>) -> Vec<u8> {
    let mut m = Map::new();
    m.insert("client".into(), id.into());
    m.insert("auth".into(), Value::Object(auth.clone()));
    if !extra.is_empty() {
        m.insert("info".into(), Value::Object(extra.clone()));
    }
    Value::Object(m).to_string().into_bytes()
}

/// The payload publishing a join or leave on `name`'s channel.
pub fn event_payload(name: &str, event: &str, info: &[u8]) -> Vec<u8> {
    let info: Value = serde_json::from_slice(info).unwrap_or(Value::Null);
    serde_json::json!({"subscription": name, PRESENCE_KEY: {"event": event, "info": info}})
        .to_string()
        .into_bytes()
}

/// The client frame of a published presence event, if `v` is one for `name`.
pub fn event_frame(name: &str, v: &Value) -> Option<String> {
    let p = v.get(PRESENCE_KEY)?;
    let event = p
        .get("event")?
        .as_str()
        .filter(|e| *e == "join" || *e == "leave")?;
    if v.get("subscription")?.as_str()? != name {
        return None;
    }
    let info = p.get("info").cloned().unwrap_or(Value::Null);
    Some(serde_json::json!({"event": event, "subscription": name, "info": info}).to_string())
}

/// Members' info as JSON values (unparseable entries skipped).
pub fn members(infos: &[Vec<u8>]) -> Vec<Value> {
    infos
        .iter()
        .filter_map(|i| serde_json::from_slice(i).ok())
        .collect()
}

/// `(clients, users)`: members, and distinct non-empty auth-field sets among them.
pub fn stats(members: &[Value]) -> (usize, usize) {
    let mut users: Vec<String> = members
        .iter()
        .filter_map(|m| m.get("auth").and_then(Value::as_object))
        .filter(|a| !a.is_empty())
        .map(|a| Value::Object(a.clone()).to_string())
        .collect();
    users.sort();
    users.dedup();
    (members.len(), users.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_and_stats() {
        let auth = json!({"user": "u1"}).as_object().unwrap().clone();
        let a = info("n-1", &auth, &Map::new());
        let b = info(
            "n-2",
            &auth,
            &json!({"device": "phone"}).as_object().unwrap().clone(),
        );
        let c = info("m-3", &Map::new(), &Map::new());
        let m = members(&[a.clone(), b, c, b"not json".to_vec()]);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[1],
            json!({"client": "n-2", "auth": {"user": "u1"}, "info": {"device": "phone"}})
        );
        assert_eq!(stats(&m), (3, 1));
        let p = Presence::default();
        p.add("s.a", "n-1", a.clone());
        p.add("s.a", "n-2", a);
        p.remove("s.a", "n-1");
        assert_eq!(p.snapshot().len(), 1);
        p.remove("s.a", "n-2");
        assert!(p.snapshot().is_empty());
    }

    #[test]
    fn presence_events_round_trip() {
        let i = info("n-1", &Map::new(), &Map::new());
        let payload = event_payload("s.a", "join", &i);
        let v: Value = serde_json::from_slice(&payload).unwrap();
        assert!(
            v.get("data").is_none(),
            "no data: servers without presence drop it"
        );
        let frame: Value = serde_json::from_str(&event_frame("s.a", &v).unwrap()).unwrap();
        assert_eq!(
            frame,
            json!({"event": "join", "subscription": "s.a", "info": {"client": "n-1", "auth": {}}})
        );
        assert_eq!(event_frame("s.b", &v), None);
        assert_eq!(event_frame("s.a", &json!({"subscription": "s.a"})), None);
    }
}
