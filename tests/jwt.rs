//! Issue 14, JWT authentication: `{"event": "auth", "method": "jwt", "token": ...}` with each
//! key kind (HS256 secret, RS256 / ES256 / EdDSA PEM public keys, a JWKS URL), expiry (the
//! session is told `Token expired.` and loses its subscriptions that need authentication unless
//! it sent a newer token), bad signatures and `alg: none` refused, and the `channels` claim
//! authorizing a subscription without the authorizer callback.

mod common;
use common::*;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};

const RSA_PRIVATE: &str = include_str!("fixtures/jwt/rsa.pem");
const RSA_PUBLIC: &str = include_str!("fixtures/jwt/rsa.pub");
const EC_PRIVATE: &str = include_str!("fixtures/jwt/ec.pem");
const EC_PUBLIC: &str = include_str!("fixtures/jwt/ec.pub");
const ED_PRIVATE: &str = include_str!("fixtures/jwt/ed.pem");
const ED_PUBLIC: &str = include_str!("fixtures/jwt/ed.pub");
const ED_X: &str = include_str!("fixtures/jwt/ed.x");

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The embedded broker, an open service and one that needs authentication (whose authorizer
/// is unreachable: it must not be called for a channel the token grants).
async fn server(jwt: Value) -> Server {
    let cfg = Config::from_json(json!({
        "broker": "memory",
        "ws": {"host": "127.0.0.1", "port": 0, "ping": {"interval": 0}},
        "log": {"level": "DEBUG", "format": "json"},
        "api": {"port": 0},
        "http": {"tries": 1, "timeout": 1},
        "authentication": {"jwt": jwt},
        "services": {
            "open": {"require_authentication": false},
            "private": {"require_authentication": true},
            "guarded": {"require_authentication": true, "authorizer": unreachable_url("/authorizer")},
        },
    }));
    Server::start_config(&cfg).await
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, &claims, key).unwrap()
}

async fn auth(c: &mut Client, token: &str) -> Value {
    c.request(&json!({"event": "auth", "method": "jwt", "token": token}))
        .await
}

fn ok() -> Value {
    json!({"event": "auth", "status": "ok"})
}

fn failed(text: &str) -> Value {
    json!({"event": "auth", "status": "error", "error": text})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_kind_verifies_its_tokens() {
    let cases = [
        (
            "HS256",
            json!({"secret": "s3cret"}),
            Algorithm::HS256,
            EncodingKey::from_secret(b"s3cret"),
            EncodingKey::from_secret(b"wrong"),
        ),
        (
            "RS256",
            json!({"public_key": RSA_PUBLIC}),
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            "ES256",
            json!({"public_key": EC_PUBLIC}),
            Algorithm::ES256,
            EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap(),
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
        ),
        (
            "EdDSA",
            json!({"public_key": ED_PUBLIC}),
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap(),
            EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap(),
        ),
    ];
    for (name, mut key_cfg, alg, key, other) in cases {
        key_cfg["auth_fields"] = json!(["session_id"]);
        key_cfg["claims"] = json!({"session_id": "sub"});
        let s = server(key_cfg).await;
        let mut c = Client::connect(&s.ws_url()).await;
        // Before: the private service refuses.
        let r = c
            .request(&json!({"event": "subscribe", "subscription": "private.a"}))
            .await;
        assert_eq!(r["error"], "Authentication required.", "{name}: {r}");
        let claims = json!({"sub": "u1", "exp": now() + 60});
        let token = sign(alg, &key, None, claims.clone());
        assert_eq!(auth(&mut c, &token).await, ok(), "{name}");
        subscribe_ok(&mut c, "private.a").await;
        // A token signed by another key, and one with alg none, are refused.
        let mut c2 = Client::connect(&s.ws_url()).await;
        let other_alg = match name {
            "HS256" => Algorithm::HS256,
            "RS256" => Algorithm::ES256,
            "ES256" => Algorithm::EdDSA,
            _ => Algorithm::RS256,
        };
        let forged = sign(other_alg, &other, None, claims.clone());
        assert_eq!(
            auth(&mut c2, &forged).await,
            failed("Authentication failed."),
            "{name}"
        );
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9.";
        assert_eq!(
            auth(&mut c2, none).await,
            failed("Authentication failed."),
            "{name}"
        );
        let expired = sign(alg, &key, None, json!({"sub": "u1", "exp": now() - 10}));
        assert_eq!(
            auth(&mut c2, &expired).await,
            failed("Token expired."),
            "{name}"
        );
        let r = c2.request(&json!({"event": "auth", "method": "jwt"})).await;
        assert_eq!(r, failed("Must specify token."), "{name}");
        // The token never reaches the log.
        s.wait_log(|l| is_event(l, "client event"), secs(5.0)).await;
        assert!(
            !s.stderr_text().contains(&token[token.len() - 20..]),
            "{name}"
        );
        s.stop(secs(10.0)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_token_ends_the_authenticated_subscriptions_unless_refreshed() {
    let s = server(
        json!({"secret": "s", "auth_fields": ["session_id"], "claims": {"session_id": "sub"}}),
    )
    .await;
    let key = EncodingKey::from_secret(b"s");
    let short = |sub: &str| {
        sign(
            Algorithm::HS256,
            &key,
            None,
            json!({"sub": sub, "exp": now() + 2}),
        )
    };
    let mut c = Client::connect(&s.ws_url()).await;
    assert_eq!(auth(&mut c, &short("u1")).await, ok());
    subscribe_ok(&mut c, "private.a").await;
    subscribe_ok(&mut c, "open.b").await;
    let mut refreshed = Client::connect(&s.ws_url()).await;
    assert_eq!(auth(&mut refreshed, &short("u2")).await, ok());
    subscribe_ok(&mut refreshed, "private.a").await;
    let long = sign(
        Algorithm::HS256,
        &key,
        None,
        json!({"sub": "u2", "exp": now() + 60}),
    );
    assert_eq!(auth(&mut refreshed, &long).await, ok());

    let got = c.recv_n(2).await;
    assert_eq!(got[0], failed("Token expired."));
    assert_eq!(
        got[1],
        json!({"event": "unsubscribe", "subscription": "private.a", "error": "Token expired."})
    );
    // The open subscription stays; the session is no longer authenticated.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "private.c"}))
        .await;
    assert_eq!(r["error"], "Authentication required.", "{r}");
    let r = c
        .request(&json!({"event": "unsubscribe", "subscription": "open.b"}))
        .await;
    assert_eq!(r["status"], "ok", "{r}");
    refreshed.expect_silence(ms(1500)).await;
    s.stop(secs(10.0)).await;
}

/// A token valid for years (beyond what the timer wheel can hold) authenticates, and the server
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_valid_for_years_is_fine() {
    let s = server(
        json!({"secret": "s", "auth_fields": ["session_id"], "claims": {"session_id": "sub"}}),
    )
    .await;
    let key = EncodingKey::from_secret(b"s");
    let years = sign(
        Algorithm::HS256,
        &key,
        None,
        json!({"sub": "u1", "exp": now() + 5 * 365 * 24 * 3600}),
    );
    let mut c = Client::connect(&s.ws_url()).await;
    assert_eq!(auth(&mut c, &years).await, ok());
    subscribe_ok(&mut c, "private.a").await;
    let mut d = Client::connect(&s.ws_url()).await;
    assert_eq!(d.request(&json!({"event": "ping"})).await["event"], "pong");
    assert!(s.is_running());
    s.stop(secs(10.0)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_claim_skips_the_authorizer() {
    let s = server(
        json!({"secret": "s", "auth_fields": ["session_id"], "claims": {"session_id": "sub"}}),
    )
    .await;
    let key = EncodingKey::from_secret(b"s");
    let mut c = Client::connect(&s.ws_url()).await;
    let t = sign(
        Algorithm::HS256,
        &key,
        None,
        json!({"sub": "u1", "channels": ["guarded.mine"]}),
    );
    assert_eq!(auth(&mut c, &t).await, ok());
    subscribe_ok(&mut c, "guarded.mine").await;
    // Any other channel of the service goes to the (unreachable) authorizer.
    let r = c
        .request(&json!({"event": "subscribe", "subscription": "guarded.other"}))
        .await;
    assert_eq!(r["status"], "error", "{r}");
    s.stop(secs(10.0)).await;
}

/// A JWKS served over HTTP: keys by `kid`, fetched on first use; an unknown kid is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_from_a_jwks_url() {
    let jwks = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED_X.trim(), "kid": "k1", "alg": "EdDSA", "use": "sig"}]});
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let body = jwks.to_string();
            async move { ([("content-type", "application/json")], body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let s = server(json!({
        "jwks_url": format!("http://127.0.0.1:{port}/jwks.json"),
        "auth_fields": ["session_id"],
        "claims": {"session_id": "sub"},
    }))
    .await;
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let claims = json!({"sub": "u1", "exp": now() + 60});
    let mut c = Client::connect(&s.ws_url()).await;
    let t = sign(Algorithm::EdDSA, &key, Some("k1"), claims.clone());
    assert_eq!(auth(&mut c, &t).await, ok());
    subscribe_ok(&mut c, "private.a").await;
    let unknown = sign(Algorithm::EdDSA, &key, Some("k2"), claims.clone());
    assert_eq!(
        auth(&mut c, &unknown).await,
        failed("Authentication failed.")
    );
    let no_kid = sign(Algorithm::EdDSA, &key, None, claims);
    assert_eq!(
        auth(&mut c, &no_kid).await,
        failed("Authentication failed.")
    );
    s.wait_log(|l| is_event(l, "jwks fetched"), secs(5.0)).await;
    sleep_ms(200).await;
    assert_eq!(
        s.count_log("jwks fetched"),
        1,
        "fetched once, within the refresh interval"
    );
    s.stop(secs(10.0)).await;
}
