//! Authentication of API requests that arrive over TCP (HTTPS).
//!
//! Guarantees:
//! - A request is served only with an identity: a client certificate
//!   verified against the cluster CA ([`super::tls::Peer`]: `CN` is the
//!   user, each `O` a group), or a bearer token. Anything else gets `401
//!   Unauthorized` as a `Status` and nothing else, except the bare health
//!   probes `/healthz`, `/livez`, `/readyz` (they answer `ok`).
//! - Bearer tokens are Kubernetes bootstrap tokens: `<id>.<secret>`
//!   (`[a-z0-9]{6}.[a-z0-9]{16}`) backed by the Secret
//!   `kube-system/bootstrap-token-<id>` of type
//!   `bootstrap.kubernetes.io/token` with `usage-bootstrap-authentication:
//!   "true"` and an optional RFC 3339 `expiration`. The secret part is
//!   compared in constant time. The user is `system:bootstrap:<id>`, the
//!   groups `system:bootstrappers` plus `auth-extra-groups`. The Secret is
//!   replicated, so a token works on every node.
//! - There is no authorization: every authenticated user may do
//!   everything (as `system:masters`). The unix socket is root-only (0600)
//!   and is not authenticated.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::tls::Peer;
use super::{ApiState, Failure};
use crate::api::error::Reason;
use crate::api::{ApiError, Resource};
use crate::store::Key;

/// The authenticated user of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

/// The Secret type of bootstrap tokens.
pub const BOOTSTRAP_TOKEN_TYPE: &str = "bootstrap.kubernetes.io/token";
/// The name prefix of bootstrap token Secrets.
pub const BOOTSTRAP_TOKEN_PREFIX: &str = "bootstrap-token-";

fn unauthorized() -> Response {
    Failure::from(ApiError::new(Reason::Unauthorized, "Unauthorized")).into_response()
}

/// The middleware of the TCP router.
pub async fn authenticate(State(state): State<ApiState>, mut req: Request, next: Next) -> Response {
    if matches!(req.uri().path(), "/healthz" | "/livez" | "/readyz") {
        return next.run(req).await;
    }
    let peer = req.extensions().get::<Peer>().cloned().unwrap_or_default();
    let user = match peer.cert_user {
        Some((name, groups)) => Some(User { name, groups }),
        None => match bearer(req.headers()) {
            Some(token) => {
                let store = state.store.clone();
                let token = token.to_string();
                tokio::task::spawn_blocking(move || token_user(store.as_ref(), &token))
                    .await
                    .ok()
                    .flatten()
            }
            None => None,
        },
    };
    match user {
        Some(u) => {
            req.extensions_mut().insert(u);
            next.run(req).await
        }
        None => {
            tracing::debug!(remote = ?peer.remote, path = %req.uri().path(), "unauthenticated request");
            unauthorized()
        }
    }
}

fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Splits `<id>.<secret>` when it has the bootstrap token shape.
pub fn parse_token(token: &str) -> Option<(&str, &str)> {
    let (id, secret) = token.split_once('.')?;
    let ok = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    (ok(id, 6) && ok(secret, 16)).then_some((id, secret))
}

fn data_field(secret: &Value, key: &str) -> Option<String> {
    let bytes: k8s_openapi::ByteString =
        serde_json::from_value(secret.pointer(&format!("/data/{key}"))?.clone()).ok()?;
    String::from_utf8(bytes.0).ok()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The user a bootstrap token authenticates, if it is valid now.
pub fn token_user(store: &dyn crate::store::Datastore, token: &str) -> Option<User> {
    let (id, secret) = parse_token(token)?;
    let key = Key::namespaced(
        Resource::Secrets,
        "kube-system",
        &format!("{BOOTSTRAP_TOKEN_PREFIX}{id}"),
    );
    let obj = store.get(&key).ok()?;
    if obj["type"].as_str() != Some(BOOTSTRAP_TOKEN_TYPE)
        || obj.pointer("/metadata/deletionTimestamp").is_some()
    {
        return None;
    }
    let stored = data_field(&obj, "token-secret")?;
    if data_field(&obj, "token-id").as_deref() != Some(id)
        || !constant_time_eq(stored.as_bytes(), secret.as_bytes())
        || data_field(&obj, "usage-bootstrap-authentication").as_deref() != Some("true")
    {
        return None;
    }
    if let Some(exp) = data_field(&obj, "expiration") {
        let exp: jiff::Timestamp = exp.parse().ok()?;
        if exp <= jiff::Timestamp::now() {
            return None;
        }
    }
    let mut groups = vec!["system:bootstrappers".to_string()];
    if let Some(extra) = data_field(&obj, "auth-extra-groups") {
        groups.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(str::to_string),
        );
    }
    Some(User {
        name: format!("system:bootstrap:{id}"),
        groups,
    })
}

/// A new random bootstrap token, `<id>.<secret>`.
pub fn generate_token() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    format!("{}.{}", pick(6), pick(16))
}

/// The Secret that backs `token` (see the module docs).
pub fn token_secret(token: &str, description: &str, extra_groups: &[&str]) -> Option<Value> {
    let (id, secret) = parse_token(token)?;
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        let b = k8s_openapi::ByteString(v.as_bytes().to_vec());
        data.insert(k.to_string(), serde_json::to_value(b).unwrap_or_default());
    };
    put("token-id", id);
    put("token-secret", secret);
    put("usage-bootstrap-authentication", "true");
    put("description", description);
    if !extra_groups.is_empty() {
        put("auth-extra-groups", &extra_groups.join(","));
    }
    Some(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{BOOTSTRAP_TOKEN_PREFIX}{id}"), "namespace": "kube-system"},
        "type": BOOTSTRAP_TOKEN_TYPE,
        "data": data,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn token_shape() {
        let t = generate_token();
        let (id, secret) = parse_token(&t).unwrap();
        assert_eq!((id.len(), secret.len()), (6, 16));
        for bad in [
            "",
            "abcdef",
            "abcdef.",
            "ABCDEF.0123456789abcdef",
            "abcde.0123456789abcdef",
            "abcdef.0123456789abcdeff",
            "abcdef.0123456789abcde!",
        ] {
            assert!(parse_token(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn secret_round_trip() {
        let t = "abcdef.0123456789abcdef";
        let s = token_secret(t, "test", &["system:masters"]).unwrap();
        assert_eq!(s["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(data_field(&s, "token-secret").unwrap(), "0123456789abcdef");
        assert_eq!(
            data_field(&s, "auth-extra-groups").unwrap(),
            "system:masters"
        );
    }

    #[test]
    fn bearer_header() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert("authorization", "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
