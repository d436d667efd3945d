//! Issue 17, hot reload: SIGHUP and `POST /admin/reload` apply services, limits and the log
//! level without closing a connection; a removed service's subscriptions end as after a failed
//! renewal; settings that need a restart are reported and keep their old values; an invalid file
//! is refused with the `--check-config` message and changes nothing; a reload under load costs no
//! client anything.

mod common;
use common::*;

fn config(svc: &MockService, redis: &Redis, on_subscribe: &str, with_gone: bool) -> Config {
    let mut cfg = base_config(redis, svc);
    cfg.set("api", json!({"port": 0}));
    cfg.set(
        "services.svc1",
        json!({"require_authentication": false, "on_subscribe": svc.url(on_subscribe),
               "on_message": svc.url("/svc1/on_message")}),
    );
    if with_gone {
        cfg.set("services.gone", json!({"require_authentication": false}));
    }
    cfg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_services_and_ends_the_subscriptions_of_a_removed_one() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let server = Server::start_config(&config(&svc, &redis, "/a/on_subscribe", true)).await;
    let mut c = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut c, "svc1.x").await;
    subscribe_ok(&mut c, "gone.y").await;
    // on_subscribe is called after the reply (R-SUB-12).
    svc.wait_calls("/a/on_subscribe", 1, secs(5.0)).await;

    let mut next = config(&svc, &redis, "/b/on_subscribe", false);
    next.set("limits.max_subscriptions", 3);
    next.set("ws.port", free_port());
    server.rewrite_config(&next.toml());
    let mark = server.log_mark();
    server.signal(libc::SIGHUP);
    let line = server
        .wait_log_since(mark, |l| is_event(l, "configuration reloaded"), secs(5.0))
        .await;
    assert_eq!(line["removed"], "gone", "{line}");
    assert_eq!(line["changed"], "svc1", "{line}");
    let restart = server
        .find_logs("configuration reload: these settings need a restart and keep their old values");
    assert_eq!(restart.len(), 1, "{restart:?}");
    assert_eq!(restart[0]["settings"], "ws.port");

    assert_eq!(
        c.recv().await,
        json!({"event": "unsubscribe", "subscription": "gone.y", "error": "Unauthorized."})
    );
    // The kept subscription goes on, new subscriptions use the new callback URL and limits.
    subscribe_ok(&mut c, "svc1.z").await;
    svc.wait_calls("/b/on_subscribe", 1, secs(5.0)).await;
    assert_eq!(svc.calls("/a/on_subscribe"), 1);
    subscribe_ok(&mut c, "svc1.w").await;
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "svc1.v"}))
        .await;
    assert_eq!(r["error"], "Too many subscriptions.", "{r}");
    let r = c.request(&json!({"event": "ping"})).await;
    assert_eq!(r["event"], "pong");
    assert!(!c.is_closed());
    // The old port still serves.
    let mut d = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut d, "svc1.x").await;
    server.stop(secs(10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_with_the_check_config_message_and_changes_nothing() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let server = Server::start_config(&config(&svc, &redis, "/a/on_subscribe", true)).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut c, "gone.y").await;

    let mut bad = config(&svc, &redis, "/a/on_subscribe", false);
    bad.set("limits.max_message_size", 10);
    server.rewrite_config(&bad.toml());
    let dir = TempDir::new("reload");
    let path = dir.write("bad.toml", bad.toml());
    let check = std::process::Command::new(server_bin())
        .arg("--check-config")
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(2));
    let expected = String::from_utf8_lossy(&check.stderr)
        .trim()
        .replace(&path.display().to_string(), "FILE");

    let mark = server.log_mark();
    server.signal(libc::SIGHUP);
    let line = server
        .wait_log_since(
            mark,
            |l| is_event(l, "configuration reload refused"),
            secs(5.0),
        )
        .await;
    let logged = line["error"].as_str().unwrap().to_owned();
    let file = logged.split(": ").nth(1).unwrap().to_owned();
    assert_eq!(logged.replace(&file, "FILE"), expected);
    let r = http_request(port, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, 400, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["error"].as_str().unwrap(), logged);
    // Nothing changed: the service is still there.
    c.expect_silence(ms(300)).await;
    subscribe_ok(&mut c, "gone.z").await;
    server.stop(secs(10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_reload_over_http_changes_the_log_level() {
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    let first = config(&svc, &redis, "/a/on_subscribe", true);
    let server = Server::start_config(&first).await;
    let port = server.api_port().await;
    let mut c = Client::connect(&server.ws_url()).await;
    c.request(&json!({"event": "ping"})).await;
    server
        .wait_log(|l| is_event(l, "client event"), secs(5.0))
        .await;

    let mut quiet = first.clone();
    quiet.set("log.level", "INFO");
    server.rewrite_config(&quiet.toml());
    let r = http_request(port, "POST", "/admin/reload", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["restart_needed"], json!([]), "{body}");
    // Lines written before the reload may still be on their way to the test's log reader.
    sleep_ms(300).await;
    let mark = server.log_mark();
    c.request(&json!({"event": "ping"})).await;
    sleep_ms(200).await;
    let debug: Vec<Value> = server
        .logs_since(mark)
        .into_iter()
        .filter(|l| l["level"] == "debug")
        .collect();
    assert!(
        debug.is_empty(),
        "debug lines after the reload to INFO: {debug:?}"
    );
    server.stop(secs(10.0)).await;
}

/// 500 clients send messages (each through `on_message`) while the configuration is reloaded
/// five times: every message is answered, nobody is disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_under_load_costs_the_clients_nothing() {
    const CLIENTS: usize = 500;
    const MESSAGES: usize = 20;
    let redis = Redis::start().await;
    let svc = MockService::start().await;
    svc.set("/svc1/on_message", Reply::ok_data(json!("echo")));
    let cfg = config(&svc, &redis, "/a/on_subscribe", true);
    let server = Server::start_config(&cfg).await;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let mut c = Client::connect(&server.ws_url()).await;
        subscribe_ok(&mut c, "svc1.room").await;
        clients.push(c);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut errors = 0;
                for i in 0..MESSAGES {
                    let r = c
                        .request(&json!({"event": "message", "subscription": "svc1.room", "data": i}))
                        .await;
                    if r != json!({"event": "message", "status": "ok", "data": "echo", "subscription": "svc1.room"}) {
                        errors += 1;
                    }
                    sleep_ms(20).await;
                }
                (errors, c.is_closed())
            })
        })
        .collect();
    let mut next = cfg.clone();
    for round in 0..5 {
        sleep_ms(60).await;
        next.set("limits.max_subscriptions", 100 + round);
        server.rewrite_config(&next.toml());
        server.signal(libc::SIGHUP);
        // Signals sent while one is pending merge into one: wait for each reload.
        let n = round as usize + 1;
        wait_until(secs(5.0), "the reload", || {
            server.count_log("configuration reloaded") == n
        })
        .await;
    }
    let (mut errors, mut closed) = (0, 0);
    for t in tasks {
        let (e, c) = t.await.unwrap();
        errors += e;
        closed += usize::from(c);
    }
    assert_eq!(server.count_log("configuration reloaded"), 5);
    assert_eq!((errors, closed), (0, 0), "errors, disconnected clients");
    assert_eq!(svc.calls("/svc1/on_message"), CLIENTS * MESSAGES);
    server.stop(secs(10.0)).await;
}
