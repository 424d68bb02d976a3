//! PATCH and server-side apply: pure functions from the live object and the
//! request body to the new object.
//!
//! - [`patch`] applies a JSON patch, a JSON merge patch or a strategic merge
//!   patch ([`PatchType`], chosen by the request's `Content-Type`).
//! - [`apply`] is server-side apply: it merges an applied configuration,
//!   tracks which manager owns which field in `metadata.managedFields`
//!   (FieldsV1), and refuses with 409 to change a field another manager owns
//!   unless `force` is set.
//! - [`record_update`] records an `Update` entry for plain writes, so a later
//!   apply sees who set what.
//!
//! Nothing here touches the store or validates the result: the caller
//! decodes, defaults and validates the returned object as for any write.
//! Malformed bodies are 400 `BadRequest`; patches that cannot apply to the
//! live object are 422 `Invalid` with the API server's message; no input
//! panics (nesting deeper than [`MAX_DEPTH`] is refused).

mod apply;
mod fields;
mod json;
pub mod keys;
mod merge;
mod strategic;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_apply;
#[cfg(test)]
mod tests_oracle;

use serde_json::Value;

use super::error::{FieldErrorKind, Reason};
use super::{ApiError, FieldError, Resource};

pub use apply::{apply, record_update};

/// The deepest nesting accepted in a patch or an applied configuration.
pub const MAX_DEPTH: usize = 100;

/// The kind of a PATCH body, from its `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json` (RFC 6902).
    Json,
    /// `application/merge-patch+json` (RFC 7386).
    Merge,
    /// `application/strategic-merge-patch+json`.
    Strategic,
    /// `application/apply-patch+yaml` (server-side apply).
    Apply,
}

impl PatchType {
    /// Parses a `Content-Type` value (parameters such as `charset` ignored).
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let media = ct.split(';').next().unwrap_or_default().trim();
        match media.to_ascii_lowercase().as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    /// The `Content-Type` kubectl sends.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::Strategic => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Why a patch failed, before it becomes an [`ApiError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not a patch of its type (400).
    #[error("{0}")]
    Malformed(String),
    /// The patch is well formed but does not apply (422); `path` is where.
    #[error("{path}: {detail}")]
    Unprocessable { path: String, detail: String },
}

impl From<PatchError> for ApiError {
    fn from(e: PatchError) -> ApiError {
        match e {
            PatchError::Malformed(m) => ApiError::bad_request(m),
            PatchError::Unprocessable { path, detail } => {
                // The API server answers NewGenericServerResponse(422): this
                // fixed message, the detail in a cause.
                let mut err = ApiError::new(
                    Reason::Invalid,
                    "the server rejected our request due to an error in our request",
                );
                err.causes = vec![FieldError {
                    kind: FieldErrorKind::Invalid,
                    field: path,
                    value: None,
                    detail,
                }];
                err
            }
        }
    }
}

/// Refuses values nested deeper than [`MAX_DEPTH`] (iteratively: the check
/// itself cannot overflow the stack).
pub fn check_depth(v: &Value) -> Result<(), PatchError> {
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        if d > MAX_DEPTH {
            return Err(PatchError::Malformed(format!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(m) => stack.extend(m.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    Ok(())
}

/// Reads a server-side apply body (`application/apply-patch+yaml`: YAML or
/// JSON, one object) into the value [`apply`] takes.
pub fn parse_apply_body(body: &[u8]) -> Result<Value, ApiError> {
    let text =
        std::str::from_utf8(body).map_err(|_| ApiError::bad_request("apply body is not UTF-8"))?;
    let mut docs = super::manifest::parse_documents(text, "apply body")
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    match (docs.pop(), docs.is_empty()) {
        (Some(v), true) => {
            check_depth(&v)?;
            Ok(v)
        }
        _ => Err(ApiError::bad_request(
            "apply body must hold exactly one object",
        )),
    }
}

/// Applies a JSON, merge or strategic merge patch to `live`.
///
/// `ty` must not be [`PatchType::Apply`] (that is [`apply`]); it is refused
/// with 415 if it is. The result keeps `managedFields` as the patch leaves
/// them; call [`record_update`] to account the change to a manager.
pub fn patch(
    live: &Value,
    body: &[u8],
    ty: PatchType,
    resource: Resource,
) -> Result<Value, ApiError> {
    let parse = || -> Result<Value, PatchError> {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| PatchError::Malformed(format!("invalid patch body: {e}")))?;
        check_depth(&v)?;
        Ok(v)
    };
    let out = match ty {
        PatchType::Json => json::apply(live, body)?,
        PatchType::Merge => {
            let p = parse()?;
            if !p.is_object() {
                return Err(ApiError::bad_request("merge patch must be a JSON object"));
            }
            let mut out = live.clone();
            merge::merge_into(&mut out, &p);
            out
        }
        PatchType::Strategic => strategic::apply(live, parse()?, resource)?,
        PatchType::Apply => {
            return Err(ApiError::new(
                Reason::UnsupportedMediaType,
                "apply patches go through server-side apply",
            ));
        }
    };
    if !out.is_object() {
        return Err(PatchError::Unprocessable {
            path: "/".into(),
            detail: "the patched object is not a JSON object".into(),
        }
        .into());
    }
    Ok(out)
}
