//! JWT authentication (issue 14, not in the original): `{"event": "auth", "method": "jwt",
//! "token": "..."}` next to the ticket method. Tokens are verified with `jsonwebtoken` (no
//! hand-written crypto): HS256/384/512 with a shared secret, RS*/PS*/ES*/EdDSA with a PEM public
//! key, or keys from a JWKS URL, fetched at start and again when a token names an unknown `kid`
//! (at most once per [`JWKS_REFRESH`]). `alg: none` cannot even be parsed, so it is refused.
//!
//! A valid token's claims become the session's auth fields through `auth_fields` and `claims`;
//! its `exp`, when present, is when the session's authentication ends (the session enforces it);
//! its `channels` claim lists subscriptions it may take without the authorizer callback.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::JwtConfig;

/// Longer token lifetimes are treated as this long (100 years).
pub const MAX_TOKEN_LIFE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The least time between two JWKS fetches caused by unknown key ids.
pub const JWKS_REFRESH: Duration = Duration::from_secs(10);

/// Why a token was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The token's `exp` has passed (the client is told `Token expired.`).
    Expired,
    /// Anything else (the client is told `Authentication failed.`); the reason is logged.
    Invalid(String),
}

/// What a valid token grants.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    /// The session's auth fields.
    pub fields: Map<String, Value>,
    /// Time left until `exp`, when the token has one.
    pub expires_in: Option<Duration>,
    /// The `channels` claim: subscriptions authorized without the authorizer callback.
    pub channels: Option<Vec<String>>,
}

/// Verifies tokens with the configured key(s).
pub struct Verifier {
    cfg: JwtConfig,
    keys: Keys,
}

enum Keys {
    /// A secret or a PEM key, with the algorithms it verifies.
    Fixed(DecodingKey, Vec<Algorithm>),
    Jwks(Jwks),
}

struct Jwks {
    url: String,
    http: reqwest::Client,
    /// kid -> key and its algorithm (from the JWK's `alg`, or any of its key type's).
    keys: std::sync::RwLock<HashMap<String, (DecodingKey, Option<Algorithm>)>>,
    /// When the last fetch started; the lock also makes fetches one at a time.
    fetched: AsyncMutex<Option<Instant>>,
}

impl Verifier {
    /// Reads the key material. A JWKS is fetched on first use (and a failure there is logged,
    /// not fatal: the identity provider may come up later).
    /// `http` fetches the JWKS (only a `jwks_url` needs it).
    pub fn new(cfg: &JwtConfig, http: Option<reqwest::Client>) -> Result<Verifier, String> {
        let keys = if let Some(secret) = &cfg.secret {
            Keys::Fixed(
                DecodingKey::from_secret(secret.as_bytes()),
                algorithms(cfg, &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512])?,
            )
        } else if let Some(pem) = cfg.public_key_pem()? {
            let pem = pem.as_bytes();
            let (key, defaults): (DecodingKey, &[Algorithm]) = if let Ok(k) =
                DecodingKey::from_rsa_pem(pem)
            {
                (
                    k,
                    &[
                        Algorithm::RS256,
                        Algorithm::RS384,
                        Algorithm::RS512,
                        Algorithm::PS256,
                        Algorithm::PS384,
                        Algorithm::PS512,
                    ],
                )
            } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
                (k, &[Algorithm::ES256, Algorithm::ES384])
            } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
                (k, &[Algorithm::EdDSA])
            } else {
                return Err(
                    "authentication.jwt.public_key: not a PEM RSA, EC or Ed25519 public key".into(),
                );
            };
            Keys::Fixed(key, algorithms(cfg, defaults)?)
        } else if let Some(url) = &cfg.jwks_url {
            Keys::Jwks(Jwks {
                url: url.clone(),
                http: http.ok_or("authentication.jwt.jwks_url: no HTTP client")?,
                keys: Default::default(),
                fetched: AsyncMutex::new(None),
            })
        } else {
            return Err(
                "authentication.jwt: one of secret, public_key, public_key_file or jwks_url is required"
                    .into(),
            );
        };
        Ok(Verifier {
            cfg: cfg.clone(),
            keys,
        })
    }

    /// Verifies `token` and maps its claims.
    pub async fn verify(&self, token: &str) -> Result<Grant, Refused> {
        let invalid = |why: String| Refused::Invalid(why);
        let header = jsonwebtoken::decode_header(token).map_err(|e| invalid(e.to_string()))?;
        let key = match &self.keys {
            Keys::Fixed(key, algs) => {
                if !algs.contains(&header.alg) {
                    return Err(invalid(format!("algorithm {:?} not allowed", header.alg)));
                }
                key.clone()
            }
            Keys::Jwks(jwks) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| invalid("the token has no kid".into()))?;
                let (key, alg) = jwks.key(kid).await.map_err(invalid)?;
                if alg.is_some_and(|a| a != header.alg) {
                    return Err(invalid(format!(
                        "algorithm {:?} is not the key's {alg:?}",
                        header.alg
                    )));
                }
                if !self.cfg.algorithms.is_empty()
                    && !self
                        .cfg
                        .algorithms
                        .iter()
                        .any(|a| *a == alg_name(header.alg))
                {
                    return Err(invalid(format!("algorithm {:?} not allowed", header.alg)));
                }
                key
            }
        };
        let mut v = Validation::new(header.alg);
        v.leeway = self.cfg.leeway.duration().as_secs();
        v.required_spec_claims.clear();
        v.validate_aud = false;
        if let Some(iss) = &self.cfg.issuer {
            v.set_issuer(&[iss]);
            v.required_spec_claims.insert("iss".into());
        }
        if let Some(aud) = &self.cfg.audience {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".into());
        }
        let data =
            jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => Refused::Expired,
                    _ => invalid(e.to_string()),
                }
            })?;
        grant(&self.cfg, data.claims).map_err(invalid)
    }
}

/// The algorithms a fixed key verifies: the configured ones (which must suit the key), or
/// `defaults`.
fn algorithms(cfg: &JwtConfig, defaults: &[Algorithm]) -> Result<Vec<Algorithm>, String> {
    if cfg.algorithms.is_empty() {
        return Ok(defaults.to_vec());
    }
    cfg.algorithms
        .iter()
        .map(|name| {
            defaults
                .iter()
                .copied()
                .find(|a| alg_name(*a) == *name)
                .ok_or_else(|| {
                    format!("authentication.jwt.algorithms: {name:?} does not suit the key")
                })
        })
        .collect()
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

/// Maps verified claims to auth fields; every auth field's claim must be there.
fn grant(cfg: &JwtConfig, claims: Map<String, Value>) -> Result<Grant, String> {
    let mut fields = Map::new();
    for field in &cfg.auth_fields {
        let claim = cfg.claims.get(field).unwrap_or(field);
        let v = claims
            .get(claim)
            .ok_or_else(|| format!("claim {claim:?} (auth field {field:?}) missing"))?;
        fields.insert(field.clone(), v.clone());
    }
    let expires_in = match claims.get("exp") {
        None => None,
        Some(exp) => {
            let exp = exp.as_f64().ok_or("exp is not a number")?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            // Capped: an absurd `exp` (validly signed) must not overflow a timer's deadline.
            let left = (exp + cfg.leeway.0 - now).clamp(0.0, MAX_TOKEN_LIFE.as_secs_f64());
            Some(Duration::try_from_secs_f64(left).unwrap_or(MAX_TOKEN_LIFE))
        }
    };
    let channels = match claims.get("channels") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|c| c.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .ok_or("channels is not a list of strings")?,
        ),
        Some(_) => return Err("channels is not a list of strings".into()),
    };
    Ok(Grant {
        fields,
        expires_in,
        channels,
    })
}

impl Jwks {
    /// The key with this id, fetching the set when it is unknown (rate-limited).
    async fn key(&self, kid: &str) -> Result<(DecodingKey, Option<Algorithm>), String> {
        if let Some(k) = self.keys.read().unwrap().get(kid) {
            return Ok(k.clone());
        }
        {
            let mut fetched = self.fetched.lock().await;
            // Another token may have fetched the set while this one waited.
            if let Some(k) = self.keys.read().unwrap().get(kid) {
                return Ok(k.clone());
            }
            if fetched.is_none_or(|t| t.elapsed() >= JWKS_REFRESH) {
                *fetched = Some(Instant::now());
                match self.fetch().await {
                    Ok(keys) => *self.keys.write().unwrap() = keys,
                    Err(e) => tracing::warn!(
                        url = self.url.as_str(),
                        error = e.as_str(),
                        "jwks fetch failed"
                    ),
                }
            }
        }
        self.keys
            .read()
            .unwrap()
            .get(kid)
            .cloned()
            .ok_or_else(|| format!("unknown key id {kid:?}"))
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, String> {
        let set: JwkSet = self
            .http
            .get(&self.url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| e.to_string())?
            .bytes()
            .await
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    let alg = jwk
                        .common
                        .key_algorithm
                        .and_then(|a| a.to_string().parse::<Algorithm>().ok());
                    keys.insert(kid.clone(), (k, alg));
                }
                Err(e) => tracing::warn!(kid = kid.as_str(), error = %e, "unusable jwk"),
            }
        }
        tracing::info!(url = self.url.as_str(), keys = keys.len(), "jwks fetched");
        Ok(keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    fn cfg(extra: Value) -> JwtConfig {
        let mut v = json!({"auth_fields": ["session_id"], "claims": {"session_id": "sub"}});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn hs(claims: Value, secret: &str, alg: Algorithm) -> String {
        encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn hmac_tokens_map_claims_and_enforce_exp() {
        let v = Verifier::new(&cfg(json!({"secret": "s3cret"})), None).unwrap();
        let t = hs(
            json!({"sub": "u1", "exp": now() + 60, "channels": ["a.b"]}),
            "s3cret",
            Algorithm::HS384,
        );
        let g = v.verify(&t).await.unwrap();
        assert_eq!(Value::Object(g.fields), json!({"session_id": "u1"}));
        assert_eq!(g.channels, Some(vec!["a.b".to_owned()]));
        let left = g.expires_in.unwrap().as_secs();
        assert!((58..=60).contains(&left), "{left}");
        let expired = hs(
            json!({"sub": "u1", "exp": now() - 5}),
            "s3cret",
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&expired).await, Err(Refused::Expired));
        let forged = hs(json!({"sub": "u1"}), "other", Algorithm::HS256);
        assert!(matches!(v.verify(&forged).await, Err(Refused::Invalid(_))));
        let no_sub = hs(json!({"uid": "u1"}), "s3cret", Algorithm::HS256);
        assert!(matches!(v.verify(&no_sub).await, Err(Refused::Invalid(_))));
        // An absurd exp is capped, not an overflow.
        let far = hs(
            json!({"sub": "u3", "exp": 1e300}),
            "s3cret",
            Algorithm::HS256,
        );
        assert_eq!(
            v.verify(&far).await.unwrap().expires_in,
            Some(MAX_TOKEN_LIFE)
        );
        // No exp: valid, no expiry.
        let forever = hs(json!({"sub": "u2"}), "s3cret", Algorithm::HS256);
        assert_eq!(v.verify(&forever).await.unwrap().expires_in, None);
    }

    #[tokio::test]
    async fn alg_none_and_disallowed_algorithms_are_refused() {
        let v = Verifier::new(
            &cfg(json!({"secret": "s3cret", "algorithms": ["HS256"]})),
            None,
        )
        .unwrap();
        let t = hs(json!({"sub": "u1"}), "s3cret", Algorithm::HS512);
        assert!(matches!(v.verify(&t).await, Err(Refused::Invalid(_))));
        // {"alg":"none"} . {"sub":"u1"} . (no signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1MSJ9.";
        assert!(matches!(v.verify(none).await, Err(Refused::Invalid(_))));
        let e = Verifier::new(&cfg(json!({"secret": "s", "algorithms": ["RS256"]})), None)
            .err()
            .unwrap();
        assert!(e.contains("does not suit the key"), "{e}");
    }
}
