//! Secrets never reach the Raft log or the state machine in the clear.
//!
//! Before a Secret write becomes a log entry, the node that accepts it
//! seals the fields that carry secret material (`data`, `stringData` and
//! the `kubectl.kubernetes.io/last-applied-configuration` annotation,
//! which kubectl fills with the whole object) into one
//! ChaCha20-Poly1305 box under the cluster key (held in memory only,
//! passed in [`super::RaftConfig::cluster_key`]). The box is bound to the
//! object's namespace/name (associated data), so it cannot be moved to
//! another Secret. Reads (`get`, `list`, watch events) open it again.
//!
//! Without a cluster key, Secret writes are refused (a typed `Backend`
//! error): the daemon must then keep Secrets elsewhere (e.g. a
//! `LocalStore` on tmpfs).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use serde_json::{Map, Value};

use crate::api::Resource;
use crate::store::{Key, StoreError};

/// The field that holds the sealed box (hex of nonce || ciphertext).
pub const SEALED: &str = "herdSealed";
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Seals and opens Secret objects with the cluster key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

fn aad(key: &Key) -> Vec<u8> {
    format!(
        "herd-secret/{}/{}",
        key.namespace.as_deref().unwrap_or(""),
        key.name
    )
    .into_bytes()
}

fn encoding(key: &Key, reason: impl Into<String>) -> StoreError {
    StoreError::Encoding {
        name: key.name.clone(),
        reason: reason.into(),
    }
}

impl Sealer {
    pub fn new(cluster_key: &[u8; 32]) -> Sealer {
        Sealer {
            cipher: ChaCha20Poly1305::new(cluster_key.into()),
        }
    }

    /// Seals a Secret's secret fields; other resources pass unchanged.
    pub fn seal(&self, key: &Key, mut object: Value) -> Result<Value, StoreError> {
        if key.resource != Resource::Secrets {
            return Ok(object);
        }
        let Some(obj) = object.as_object_mut() else {
            return Err(encoding(key, "object is not a JSON object"));
        };
        if obj.contains_key(SEALED) {
            return Err(encoding(key, format!("field {SEALED} is reserved")));
        }
        let mut inner = Map::new();
        for field in ["data", "stringData"] {
            if let Some(v) = obj.remove(field) {
                inner.insert(field.into(), v);
            }
        }
        if let Some(Value::Object(ann)) = obj
            .get_mut("metadata")
            .and_then(|m| m.get_mut("annotations"))
            && let Some(v) = ann.remove(LAST_APPLIED)
        {
            inner.insert(LAST_APPLIED.into(), v);
        }
        let plain =
            serde_json::to_vec(&Value::Object(inner)).map_err(|e| encoding(key, e.to_string()))?;
        let nonce: [u8; 12] = rand::random();
        let aad = aad(key);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &plain,
                    aad: &aad,
                },
            )
            .map_err(|_| encoding(key, "sealing failed"))?;
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&sealed);
        obj.insert(SEALED.into(), Value::String(hex::encode(blob)));
        Ok(object)
    }

    /// Opens a sealed Secret; objects without a box pass unchanged.
    pub fn open(&self, key: &Key, object: Value) -> Result<Value, StoreError> {
        open_with(Some(self), key, object)
    }
}

/// Opens a sealed object, failing with `Encoding` if it is sealed and
/// there is no key or the box does not authenticate.
pub fn open_with(
    sealer: Option<&Sealer>,
    key: &Key,
    mut object: Value,
) -> Result<Value, StoreError> {
    let Some(obj) = object.as_object_mut() else {
        return Ok(object);
    };
    let Some(blob) = obj.remove(SEALED) else {
        return Ok(object);
    };
    let Some(sealer) = sealer else {
        return Err(encoding(key, "sealed secret and no cluster key"));
    };
    let blob = blob
        .as_str()
        .and_then(|s| hex::decode(s).ok())
        .ok_or_else(|| encoding(key, "sealed secret is not hex"))?;
    if blob.len() < 12 {
        return Err(encoding(key, "sealed secret too short"));
    }
    let (nonce, ct) = blob.split_at(12);
    let aad = aad(key);
    let plain = sealer
        .cipher
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
        .map_err(|_| encoding(key, "sealed secret does not authenticate"))?;
    let inner: Map<String, Value> =
        serde_json::from_slice(&plain).map_err(|e| encoding(key, e.to_string()))?;
    for (k, v) in inner {
        if k == LAST_APPLIED {
            let meta = obj
                .entry("metadata")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(meta) = meta.as_object_mut() {
                let ann = meta
                    .entry("annotations")
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Some(ann) = ann.as_object_mut() {
                    ann.insert(k, v);
                }
            }
        } else {
            obj.insert(k, v);
        }
    }
    Ok(object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn k(name: &str) -> Key {
        Key::namespaced(Resource::Secrets, "default", name)
    }

    #[test]
    fn seal_hides_and_open_restores() {
        let s = Sealer::new(&[7u8; 32]);
        let obj = json!({"kind": "Secret", "metadata": {"name": "pw", "annotations": {
            LAST_APPLIED: "{\"data\":{\"p\":\"c2VjcmV0\"}}", "x": "y"}},
            "data": {"p": "c2VjcmV0"}, "stringData": {"q": "plain"}});
        let sealed = s.seal(&k("pw"), obj.clone()).unwrap();
        let text = sealed.to_string();
        assert!(
            !text.contains("c2VjcmV0") && !text.contains("plain"),
            "{text}"
        );
        assert_eq!(sealed["metadata"]["annotations"]["x"], "y");
        assert_eq!(s.open(&k("pw"), sealed.clone()).unwrap(), obj);
        // Bound to the name; other keys and no key fail.
        assert!(matches!(
            s.open(&k("other"), sealed.clone()),
            Err(StoreError::Encoding { .. })
        ));
        let wrong = Sealer::new(&[8u8; 32]);
        assert!(matches!(
            wrong.open(&k("pw"), sealed.clone()),
            Err(StoreError::Encoding { .. })
        ));
        assert!(matches!(
            open_with(None, &k("pw"), sealed),
            Err(StoreError::Encoding { .. })
        ));
    }

    #[test]
    fn garbage_boxes_are_errors_and_other_resources_pass() {
        let s = Sealer::new(&[1u8; 32]);
        for bad in [json!("zz"), json!("00"), json!(5)] {
            let obj = json!({"metadata": {"name": "pw"}, SEALED: bad});
            assert!(matches!(
                s.open(&k("pw"), obj),
                Err(StoreError::Encoding { .. })
            ));
        }
        let cm = Key::namespaced(Resource::ConfigMaps, "default", "c");
        let obj = json!({"metadata": {"name": "c"}, "data": {"a": "b"}});
        assert_eq!(s.seal(&cm, obj.clone()).unwrap(), obj);
        let forged = json!({"metadata": {"name": "pw"}, SEALED: "x", "data": {}});
        assert!(matches!(
            s.seal(&k("pw"), forged),
            Err(StoreError::Encoding { .. })
        ));
    }
}
