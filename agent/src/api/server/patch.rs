//! PATCH (JSON, merge, strategic merge, server-side apply) and the
//! `fieldValidation` directive of every write.
//!
//! Guarantees:
//! - A patch is applied to the live object ([`crate::api::patch`]) and the
//!   result goes through the same path as an update
//!   ([`super::writes::replace`]: decoding, defaults, validation,
//!   optimistic concurrency), so a patch can do nothing an update could
//!   not. A patch that names no `metadata.resourceVersion` is retried
//!   (5 times) when a concurrent write wins; one that names it gets 409.
//! - `/status` and `/scale` are patched as their own views: the scale
//!   patch applies to the `autoscaling/v1 Scale`.
//! - Server-side apply (`application/apply-patch+yaml`) needs
//!   `fieldManager`; it creates the object when it does not exist and
//!   answers 409 on a field conflict unless `force=true`.
//! - `fieldValidation`: `Strict` (herd's default; kubectl sends it too)
//!   rejects unknown fields with 400 `strict decoding error`; `Warn` and
//!   `Ignore` drop them, `Warn` naming each in a `Warning` header (the API
//!   server's default is Warn: herd is stricter when the client does not
//!   say).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::paths::Sub;
use super::query::{Query, parse_object};
use super::writes::{create, replace};
use super::{ApiState, Failure, scale};
use crate::api::error::Reason;
use crate::api::patch::{self, PatchType};
use crate::api::services::ServiceNetwork;
use crate::api::{ApiError, Resource};
use crate::store::{Key, StoreError};

/// Attempts of a patch without a resourceVersion under write conflicts.
const PATCH_ATTEMPTS: usize = 5;

/// `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldValidation {
    Strict,
    Warn,
    Ignore,
}

impl FieldValidation {
    pub fn from_query(q: &Query) -> Result<FieldValidation, ApiError> {
        match q.get("fieldValidation") {
            None | Some("") | Some("Strict") => Ok(FieldValidation::Strict),
            Some("Warn") => Ok(FieldValidation::Warn),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(v) => Err(ApiError::bad_request(format!(
                "fieldValidation: invalid directive {v:?}: supported values: \"Ignore\", \"Warn\", \"Strict\""
            ))),
        }
    }

    /// Drops unknown fields unless strict; the dropped paths are returned
    /// (warnings, for `Warn`).
    pub fn prepare(
        self,
        resource: Resource,
        value: Value,
    ) -> Result<(Value, Vec<String>), ApiError> {
        match self {
            FieldValidation::Strict => Ok((value, Vec::new())),
            FieldValidation::Ignore => Ok((
                crate::api::manifest::strip_unknown(resource, value)?.0,
                Vec::new(),
            )),
            FieldValidation::Warn => {
                let (v, unknown) = crate::api::manifest::strip_unknown(resource, value)?;
                Ok((
                    v,
                    unknown
                        .into_iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect(),
                ))
            }
        }
    }
}

/// `resp` with one `Warning: 299 - "…"` header per warning.
pub fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append("warning", v);
        }
    }
    resp
}

/// What a PATCH request carries.
#[derive(Debug)]
pub struct PatchRequest {
    pub key: Key,
    pub sub: Sub,
    pub ty: PatchType,
    pub body: Vec<u8>,
    pub dry: bool,
    pub manager: Option<String>,
    pub force: bool,
    pub validation: FieldValidation,
}

impl PatchRequest {
    /// The patch type from the Content-Type (415 when it is none of the four).
    pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
        let ct = content_type.unwrap_or("");
        let base = ct.split(';').next().unwrap_or("").trim();
        PatchType::from_content_type(base).ok_or_else(|| {
            ApiError::new(
                Reason::UnsupportedMediaType,
                format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"
                ),
            )
        })
    }
}

fn rv_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// Runs a PATCH to the end (blocking: store calls).
pub fn run(state: &ApiState, net: &ServiceNetwork, req: PatchRequest) -> Result<Response, Failure> {
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    if req.ty == PatchType::Apply && req.manager.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
        )
        .into());
    }
    let mut last = None;
    for _ in 0..PATCH_ATTEMPTS {
        let live = match state.store.get(&req.key) {
            Ok(v) => Some(v),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) => return Err(e.into()),
        };
        let Some(live) = live else {
            if req.ty != PatchType::Apply || req.sub != Sub::Main {
                return Err(ApiError::not_found(req.key.resource, &req.key.name).into());
            }
            // Server-side apply of a new object.
            let applied = parse_object(&req.body, Some("application/yaml"))?;
            let obj = patch::apply(
                None,
                applied,
                req.manager.as_deref().unwrap_or(""),
                req.force,
                req.key.resource,
                &now,
            )?;
            let (obj, warnings) = req.validation.prepare(req.key.resource, obj)?;
            let created = create(
                state,
                net,
                req.key.resource,
                req.key.namespace.as_deref(),
                obj,
                req.dry,
            )?;
            let resp = (StatusCode::CREATED, axum::Json(created)).into_response();
            return Ok(with_warnings(resp, &warnings));
        };
        let live_rv = rv_of(&live).unwrap_or("").to_string();
        let view = match req.sub {
            Sub::Scale => scale::to_scale(&live),
            _ => live.clone(),
        };
        let mut patched = match req.ty {
            PatchType::Apply => {
                let applied = parse_object(&req.body, Some("application/yaml"))?;
                patch::apply(
                    Some(&view),
                    applied,
                    req.manager.as_deref().unwrap_or(""),
                    req.force,
                    req.key.resource,
                    &now,
                )?
            }
            ty => patch::patch(&view, &req.body, ty, req.key.resource)?,
        };
        // A patch that sets a resourceVersion makes it a precondition.
        let pinned = rv_of(&patched).is_some_and(|rv| rv != live_rv);
        if !pinned && let Some(m) = patched.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("resourceVersion".into(), live_rv.clone().into());
        }
        let result = match req.sub {
            Sub::Scale => {
                scale::put_scale(state, &req.key, patched, req.dry).map(|v| (v, Vec::new()))
            }
            sub => {
                let (patched, warnings) = req.validation.prepare(req.key.resource, patched)?;
                if let (Some(m), PatchType::Json | PatchType::Merge | PatchType::Strategic) =
                    (req.manager.as_deref(), req.ty)
                {
                    let mut p = patched;
                    patch::record_update(Some(&live), &mut p, m, &now);
                    replace(state, net, &req.key, p, sub, req.dry).map(|v| (v, warnings))
                } else {
                    replace(state, net, &req.key, patched, sub, req.dry).map(|v| (v, warnings))
                }
            }
        };
        match result {
            Ok((v, warnings)) => {
                return Ok(with_warnings(axum::Json(v).into_response(), &warnings));
            }
            Err(f) if !pinned && f.error.reason == Reason::Conflict => last = Some(f),
            Err(f) => return Err(f),
        }
    }
    Err(last.unwrap_or_else(|| ApiError::new(Reason::Conflict, "the object kept changing").into()))
}
