//! Redis faults with `[redis] on_loss = "reconnect"` (issue 20): the same SIGKILL + restart and
//! SIGSTOP as the `shutdown` rows, but the server must keep every client connected, subscribe
//! every channel again once Redis is back, and replay no client callback.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::redis_faults::{Tally, close_summary, fmt_opt, probe, start_load};
use super::{Ctx, Row, ServerSetup, counting_service, ms, progress};

/// The fault: SIGKILL and a restart after 3 s, or SIGSTOP for 5 s.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Kill,
    Stop,
}

pub async fn run(ctx: &Ctx, fault: Fault) -> Result<Vec<Row>, String> {
    let (clients, topics, rate) = if ctx.short {
        (100usize, 10u64, 1000.0)
    } else {
        (1000, 100, 10_000.0)
    };
    let (interval, timeout) = (1.0, 1.0);
    let (down_s, what) = match fault {
        Fault::Kill => (3.0, "SIGKILL, restarted after 3 s"),
        Fault::Stop => (5.0, "SIGSTOP 5 s, then SIGCONT"),
    };
    let mut row = Row::new(
        &format!("Redis {what}, on_loss = \"reconnect\""),
        format!(
            "{rate:.0} msgs/s fan-out, {clients} clients on {topics} channels ({} deliveries/s); ping_interval = {interval}, ping_timeout = {timeout}; on_subscribe callback",
            (rate * clients as f64 / topics as f64) as u64
        ),
    );
    let mut redis = ctx.redis().await?;
    let (svc_port, callbacks) = counting_service().await?;
    let name = match fault {
        Fault::Kill => "kill-reconnect",
        Fault::Stop => "stop-reconnect",
    };
    let setup = ServerSetup::write(
        ctx,
        name,
        redis.port,
        &format!("on_loss = \"reconnect\"\nping_interval = {interval}\nping_timeout = {timeout}"),
        "",
        &format!(
            "[services.f]\nrequire_authentication = false\non_subscribe = \"http://127.0.0.1:{svc_port}/on_subscribe\"\n"
        ),
    )?;
    let server = setup.start(ctx).await?;
    progress(format!("{name}: {clients} clients subscribing"));
    let run = start_load(&setup.url(), redis.url(), clients, topics, rate).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let callbacks_before = callbacks.load(Relaxed);
    let no_receiver_before = run.publisher.no_receiver.load(Relaxed);
    let failed_before = run.publisher.failed.load(Relaxed);

    progress(format!("{name}: {what}"));
    let t_fault = Instant::now();
    let lost_line = "redis connection lost: sessions stay open, reconnecting";
    match fault {
        Fault::Kill => redis.kill(),
        Fault::Stop => redis.signal(libc::SIGSTOP),
    }
    let detect = server
        .wait_log(lost_line, Duration::from_secs_f64(down_s))
        .await;
    tokio::time::sleep_until((t_fault + Duration::from_secs_f64(down_s)).into()).await;
    match fault {
        Fault::Kill => redis.start().await?,
        Fault::Stop => redis.signal(libc::SIGCONT),
    }
    let t_back = Instant::now();
    let back = server
        .wait_log("redis reconnected", Duration::from_secs(30))
        .await;
    // From now on every published message must arrive.
    run.fleet
        .mark
        .store(run.publisher.next_seq.load(Relaxed), Relaxed);
    progress(format!(
        "{name}: Redis back; server resubscribed {} ms later",
        fmt_opt(back.map(|t| ms(t.saturating_duration_since(t_back))))
    ));
    let lost_during = run.publisher.no_receiver.load(Relaxed) - no_receiver_before;
    let failed_during = run.publisher.failed.load(Relaxed) - failed_before;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let Tally {
        deaf_topics,
        deaf_publish,
        expected,
        received,
        lost,
        dups,
        wrong,
    } = probe(&run, &redis.url(), &mut row).await;
    let t_probed = Instant::now();
    let callbacks_after = callbacks.load(Relaxed) - callbacks_before;
    let closes = run.closes(0);
    let disconnects: u64 = closes.values().sum();
    run.stop();
    let running = server.exited().is_none();
    let panics = server.panics();
    let exit = server.stop(Duration::from_secs(30)).await;

    row.check(detect.is_some(), || {
        format!("no `{lost_line}` log line within {down_s} s")
    });
    row.check(back.is_some(), || {
        "no `redis reconnected` log line within 30 s of Redis coming back".into()
    });
    row.check(running && disconnects == 0, || {
        format!(
            "server running: {running}; clients disconnected: {}",
            close_summary(&closes)
        )
    });
    row.check(lost == 0, || {
        format!("{lost} deliveries published after the reconnection were lost")
    });
    row.check(deaf_topics.is_empty() && deaf_publish == 0, || {
        format!("deaf channels: {deaf_topics:?} (PUBLISH reached no subscriber: {deaf_publish})")
    });
    row.check(dups == 0 && wrong == 0, || {
        format!("{dups} duplicates, {wrong} wrong-topic deliveries")
    });
    row.check(callbacks_after == 0, || {
        format!("{callbacks_after} callbacks replayed after the outage")
    });
    row.check(panics.is_empty(), || format!("server panicked: {panics:?}"));
    row.check(exit == Some(0), || format!("exit {exit:?} on SIGTERM"));

    let detect_ms = detect.map(|t| ms(t.saturating_duration_since(t_fault)));
    let back_ms = back.map(|t| ms(t.saturating_duration_since(t_back)));
    row.outcome = format!(
        "{disconnects} of {clients} clients disconnected; server logged the loss and `redis reconnected`; deaf channels {} of {topics}; lost after the reconnection {lost}; callbacks in the recovery {callbacks_after}",
        deaf_topics.len() + deaf_publish as usize
    );
    row.figure = format!(
        "loss noticed {} ms after the fault; every channel subscribed again {} ms after Redis was back; published during the outage: {lost_during} reached no subscriber (lost, no history), {failed_during} refused by a dead Redis; {expected} deliveries expected after the reconnection, {received} received",
        fmt_opt(detect_ms),
        fmt_opt(back_ms),
    );
    row.json = serde_json::json!({
        "clients": clients, "topics": topics, "rate": rate, "on_loss": "reconnect",
        "ping_interval": interval, "ping_timeout": timeout, "down_s": down_s,
        "disconnects": disconnects, "close_codes": closes,
        "detection_ms": detect_ms, "resubscribed_after_redis_back_ms": back_ms,
        "published_during_outage_no_subscriber": lost_during,
        "publish_failed_during_outage": failed_during,
        "expected_after_recovery": expected, "received_after_recovery": received,
        "lost_after_recovery": lost, "deaf_channels": deaf_topics.len() as u64 + deaf_publish,
        "duplicates": dups, "wrong_topic": wrong,
        "callbacks_after_outage": callbacks_after,
        "probe_ms": ms(t_probed.saturating_duration_since(t_back)),
        "client_problems": *run.fleet.failures.lock().unwrap(),
        "panics": panics,
    });
    Ok(vec![row])
}
