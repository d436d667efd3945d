//! The session end (R-END): every subscription removed, with its unsubscribe callbacks.

use std::task::Poll;

use super::*;

impl Session {
    /// Ends the session (R-END-2): every active subscription is removed, most recent first,
    /// each followed by `before_unsubscribe` and `on_unsubscribe`, whose answers are ignored.
    pub async fn end(&self) {
        self.mark_closing();
        // Stop every periodic task first: while the removals below wait for their callbacks, no
        // heartbeat or renewal of a later subscription may start.
        let names: Vec<String> = {
            let mut st = self.lock();
            for sub in st.subs.values_mut() {
                sub.stop_timers(&self.app.timers, true);
            }
            if let Some(id) = st.token.take().and_then(|t| t.expiry) {
                self.app.timers.cancel(id);
            }
            st.subs.keys().rev().map(|k| k.name().to_owned()).collect()
        };
        for name in names {
            let Some(removed) = self.remove_sub(&name, None, true) else {
                continue;
            };
            self.unsubscribe_callbacks(&name, &removed).await;
        }
        // Removals started by a failed renewal finish their callbacks first (the last one
        // wakes the connection's task, which runs this).
        std::future::poll_fn(|cx| {
            self.out.register(cx.waker());
            if self.removals_in_flight.load(Ordering::Acquire) == 0 {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    }

    /// `before_unsubscribe` then `on_unsubscribe` for a removal that is not a client command;
    /// errors are logged and ignored (R-END-2, R-DEF-4). Returns `before_unsubscribe`'s data.
    pub(super) async fn unsubscribe_callbacks(
        &self,
        name: &str,
        removed: &Removed,
    ) -> Option<Value> {
        let svc = &removed.service;
        let mut data = None;
        for (url, callback, keep_data) in [
            (&svc.before_unsubscribe, "before_unsubscribe", true),
            (&svc.on_unsubscribe, "on_unsubscribe", false),
        ] {
            let Some(url) = url else { continue };
            let body = self.body(name, &removed.extra.map, &removed.authz, None);
            match self.call(callback, &svc.name, Some(name), url, &body).await {
                Outcome::Unusable(why) => {
                    tracing::error!(
                        session = self.id,
                        subscription = name,
                        url = url.display.as_str(),
                        error = why.as_str(),
                        "unhandled exception in unsubscribe callback"
                    );
                }
                Outcome::Answer(mut a) if keep_data => {
                    data = a.remove("data").filter(|d| !d.is_null());
                }
                Outcome::Answer(_) => {}
            }
        }
        data
    }
}
