//! History and recovery on subscribe (issue 14): what a subscribe to a channel with history
//! tells the client and which messages follow its reply. Pure, no IO: the session reads the
//! channel's [`History`] from the broker after its channel subscription is confirmed (so live
//! messages are being buffered) and hands both here.
//!
//! The reply carries `offset` and `epoch`: the position just before the first message that
//! follows the reply, so a client that keeps the offset of the last message it got can always
//! ask to recover from there. With `"recover": {"offset": N, "epoch": E}` the reply also says
//! `"recovered": true` and the messages after N follow it, from history then live, each exactly
//! once: live messages the history already covered are dropped. When the epoch differs, N is
//! ahead of the channel, or the window no longer holds every message after N, it says
//! `"recovered": false` and only live messages follow (the client reloads its state).

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::broker::History;
use crate::publish::{Position, Published};

/// A client's `recover` request: the position of the last message it got.
pub type Recover = Position;

/// Reads `"recover": {"offset": N, "epoch": "E"}` from a subscribe command. `Some(None)`: the
/// field is there but malformed (treated as a recovery that cannot succeed).
pub fn recover_of(cmd: &Map<String, Value>) -> Option<Option<Recover>> {
    let r = cmd.get("recover")?;
    Some(Position::of_object(r))
}

/// What follows a subscribe to a channel with history.
#[derive(Debug)]
pub struct Plan {
    /// The position before the first message that follows the reply.
    pub offset: u64,
    pub epoch: String,
    /// `Some` when the client asked to recover.
    pub recovered: Option<bool>,
    /// The messages to deliver after the reply, in order (through the normal pipeline).
    pub deliver: Vec<Arc<Published>>,
}

impl Plan {
    /// The reply's extra keys: `offset`, `epoch` and, when asked, `recovered`.
    pub fn reply_fields(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("offset".into(), self.offset.into());
        m.insert("epoch".into(), self.epoch.as_str().into());
        if let Some(r) = self.recovered {
            m.insert("recovered".into(), r.into());
        }
        m
    }
}

/// Plans what follows the reply, from the client's `recover` request (`Some(None)` when it was
/// malformed), the channel's history read after the channel subscription was confirmed, the
/// live messages buffered since then, and the subscription's recovery window (`before_subscribe`
/// `options.history`: at most that many missed messages are recovered).
pub fn plan(
    recover: Option<Option<&Recover>>,
    history: &History,
    buffered: Vec<Arc<Published>>,
    window: Option<u64>,
) -> Plan {
    let same_epoch = |m: &Published| {
        m.position
            .as_ref()
            .filter(|p| p.epoch == history.epoch)
            .map(|p| p.offset)
    };
    let recovered_messages = recover.map(|r| {
        let r = r.filter(|r| r.epoch == history.epoch && r.offset <= history.top)?;
        if window.is_some_and(|w| history.top - r.offset > w) {
            return None;
        }
        let messages: Vec<Arc<Published>> = history
            .messages
            .iter()
            .filter_map(|p| Published::decode(p).ok())
            .map(Arc::new)
            .collect();
        // Every message after the client's offset must be there, in order.
        let complete = messages.len() as u64 == history.top - r.offset
            && messages
                .iter()
                .zip(r.offset + 1..)
                .all(|(m, want)| same_epoch(m) == Some(want));
        complete.then_some((r.offset, messages))
    });
    match recovered_messages {
        Some(Some((since, mut deliver))) => {
            // Live messages up to the history's top were in it already.
            deliver.extend(
                buffered
                    .into_iter()
                    .filter(|m| same_epoch(m).is_none_or(|o| o > history.top)),
            );
            Plan {
                offset: since,
                epoch: history.epoch.clone(),
                recovered: Some(true),
                deliver,
            }
        }
        not_recovered => {
            // The buffered messages were published after the subscription, in offset order:
            // the position before the first of them.
            let first = buffered.iter().find_map(|m| same_epoch(m));
            Plan {
                offset: first.map_or(history.top, |o| o.saturating_sub(1).min(history.top)),
                epoch: history.epoch.clone(),
                recovered: not_recovered.map(|_| false),
                deliver: buffered,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stamped(offset: u64, epoch: &str) -> Vec<u8> {
        json!({"_history": {"offset": offset, "epoch": epoch}, "subscription": "a.b", "data": offset})
            .to_string()
            .into_bytes()
    }

    fn msg(offset: u64, epoch: &str) -> Arc<Published> {
        Arc::new(Published::decode(&stamped(offset, epoch)).unwrap())
    }

    fn history(top: u64, from: u64) -> History {
        History {
            epoch: "E".into(),
            top,
            messages: (from..=top).map(|o| stamped(o, "E")).collect(),
        }
    }

    fn offsets(p: &Plan) -> Vec<u64> {
        p.deliver
            .iter()
            .map(|m| m.position.as_ref().unwrap().offset)
            .collect()
    }

    fn at(offset: u64, epoch: &str) -> Recover {
        Position {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn recovers_the_gap_then_live_messages_without_duplicates() {
        // The client had 3; history holds 4..=6; live 5..=8 were buffered meanwhile.
        let buffered = (5..=8).map(|o| msg(o, "E")).collect();
        let p = plan(Some(Some(&at(3, "E"))), &history(6, 4), buffered, None);
        assert_eq!(p.recovered, Some(true));
        assert_eq!(p.offset, 3);
        assert_eq!(offsets(&p), vec![4, 5, 6, 7, 8]);
        assert_eq!(
            Value::Object(p.reply_fields()),
            json!({"offset": 3, "epoch": "E", "recovered": true})
        );
    }

    #[test]
    fn nothing_missed_is_recovered_with_nothing() {
        let p = plan(
            Some(Some(&at(6, "E"))),
            &history(6, 7),
            vec![msg(7, "E")],
            None,
        );
        assert_eq!((p.recovered, p.offset), (Some(true), 6));
        assert_eq!(offsets(&p), vec![7]);
    }

    #[test]
    fn refused_when_the_window_lost_messages_the_epoch_changed_or_the_offset_is_ahead() {
        for (r, h) in [
            (at(1, "E"), history(6, 4)),
            (at(3, "X"), history(6, 4)),
            (at(9, "E"), history(6, 4)),
        ] {
            let p = plan(Some(Some(&r)), &h, vec![msg(7, "E")], None);
            assert_eq!(p.recovered, Some(false), "{r:?}");
            assert_eq!(offsets(&p), vec![7], "only live messages follow");
            assert_eq!(p.offset, 6);
        }
        let p = plan(Some(None), &history(6, 4), vec![], None);
        assert_eq!((p.recovered, p.offset), (Some(false), 6));
    }

    #[test]
    fn without_recover_the_position_precedes_the_buffered_messages() {
        let p = plan(None, &history(6, 4), vec![msg(6, "E")], None);
        assert_eq!((p.recovered, p.offset), (None, 5));
        assert_eq!(offsets(&p), vec![6]);
        let p = plan(None, &history(6, 4), vec![], None);
        assert_eq!(p.offset, 6);
        assert!(!p.reply_fields().contains_key("recovered"));
    }

    #[test]
    fn a_subscription_window_limits_what_is_recovered() {
        let within = plan(Some(Some(&at(4, "E"))), &history(6, 5), vec![], Some(2));
        assert_eq!(within.recovered, Some(true));
        assert_eq!(offsets(&within), vec![5, 6]);
        let beyond = plan(Some(Some(&at(3, "E"))), &history(6, 4), vec![], Some(2));
        assert_eq!(beyond.recovered, Some(false));
    }

    #[test]
    fn recover_field() {
        let cmd = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(recover_of(&cmd(json!({}))), None);
        assert_eq!(
            recover_of(&cmd(json!({"recover": {"offset": 3, "epoch": "E"}}))),
            Some(Some(at(3, "E")))
        );
        assert_eq!(
            recover_of(&cmd(json!({"recover": {"offset": -1, "epoch": "E"}}))),
            Some(None)
        );
        assert_eq!(recover_of(&cmd(json!({"recover": true}))), Some(None));
    }
}
