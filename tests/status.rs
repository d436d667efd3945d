//! Issue 15, the status page: `GET /status.json` and `GET /status` on the API port, behind the
//! API key when one is set.

mod common;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_json_counts_connections_subscriptions_and_messages() {
    let cfg = Config::from_json(json!({
        "broker": "memory",
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "INFO", "format": "json"},
        "api": {"port": 0, "api_key": "k3y"},
        "services": {"chat": {"require_authentication": false}},
    }));
    let server = Server::start_config(&cfg).await;
    let port = server.api_port().await;
    let mut a = Client::connect(&server.ws_url()).await;
    let mut b = Client::connect(&server.ws_url()).await;
    subscribe_ok(&mut a, "chat.room").await;
    subscribe_ok(&mut b, "chat.room").await;
    subscribe_ok(&mut b, "chat.other").await;
    let auth = [("Authorization", "Bearer k3y")];
    for i in 0..3 {
        let body = json!({"subscription": "chat.room", "data": i}).to_string();
        let r = http_request(port, "POST", "/publish", &auth, body.as_bytes()).await;
        assert_eq!(r.status, 200, "{r:?}");
    }
    a.recv_n(3).await;
    b.recv_n(3).await;
    sleep_ms(1200).await;

    assert_eq!(http_get(port, "/status.json").await.status, 401);
    let r = http_get_with(port, "/status.json", &auth).await;
    assert_eq!(r.status, 200, "{r:?}");
    let s: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(s["connections"], 2, "{s}");
    assert_eq!(s["sessions"], 2, "{s}");
    assert_eq!(s["ready"], true, "{s}");
    assert_eq!(
        s["services"],
        json!({"chat": {"channels": 2, "subscriptions": 3}}),
        "{s}"
    );
    assert_eq!(
        s["brokers"],
        json!({"memory": {"connected": true, "outages": 0}}),
        "{s}"
    );
    assert_eq!(s["messages"]["received"], 3, "{s}");
    assert_eq!(s["messages"]["delivered"], 6, "{s}");
    assert!(s["messages"]["in_per_s"].is_number(), "{s}");
    assert!(s["callbacks"].is_array(), "{s}");

    // The page: with the key in the query (a browser), it loads; its script reads status.json.
    assert_eq!(http_get(port, "/status").await.status, 401);
    let page = http_get(port, "/status?key=k3y").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .unwrap()
            .starts_with("text/html")
    );
    assert!(page.body.contains("status.json"), "{}", page.body);
    assert_eq!(http_get(port, "/status.json?key=k3y").await.status, 200);
    server.stop(secs(10.0)).await;
}

/// `ws.demo`: plain `GET /` on the WebSocket port is the demo page, `/socketshark.js` the
/// client; other plain requests, and every one without `ws.demo`, keep the original's `426`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_on_the_websocket_port() {
    for demo in [true, false] {
        let cfg = Config::from_json(json!({
            "broker": "memory",
            "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}, "demo": demo},
            "log": {"level": "INFO", "format": "json"},
            "api": {"port": 0},
            "services": {"demo": {"require_authentication": false}},
        }));
        let server = Server::start_config(&cfg).await;
        let api = server.api_port().await;
        let ws = server.port();
        let page = http_get(ws, "/").await;
        if demo {
            assert_eq!(page.status, 200, "{page:?}");
            assert!(
                page.header("content-type")
                    .unwrap()
                    .starts_with("text/html")
            );
            assert!(
                page.body
                    .contains(&format!("http://127.0.0.1:{api}/publish")),
                "the page publishes through this server's API"
            );
            let js = http_get(ws, "/socketshark.js").await;
            assert_eq!(js.status, 200);
            assert!(js.body.contains("class SocketShark"));
            assert_eq!(http_get(ws, "/other").await.status, 426);
        } else {
            assert_eq!(page.status, 426, "{page:?}");
        }
        // WebSocket clients are served as always.
        let mut c = Client::connect(&server.ws_url()).await;
        subscribe_ok(&mut c, "demo.room").await;
        server.stop(secs(10.0)).await;
    }
}
