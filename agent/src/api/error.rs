//! API errors, rendered as Kubernetes `Status` objects.
//!
//! Every failure a client can see goes through [`ApiError`]: the HTTP code,
//! the `reason` and the message are the API server's, and validation errors
//! list one cause per field (`spec.containers[0].image: Required value`), so
//! `kubectl` and `herd` print what they print against a real cluster.

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Status, StatusCause, StatusDetails};

use super::Resource;

/// `metav1.StatusReason` values used by the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Conflict,
    Invalid,
    BadRequest,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    Expired,
    Gone,
    Unauthorized,
    Forbidden,
    Timeout,
    ServiceUnavailable,
    InternalError,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::Expired => "Expired",
            Reason::Gone => "Gone",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::Timeout => "Timeout",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::InternalError => "InternalError",
        }
    }

    /// The HTTP status code the API server answers with.
    pub fn code(self) -> u16 {
        match self {
            Reason::NotFound => 404,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Invalid => 422,
            Reason::BadRequest => 400,
            Reason::MethodNotAllowed => 405,
            Reason::NotAcceptable => 406,
            Reason::UnsupportedMediaType => 415,
            Reason::Expired | Reason::Gone => 410,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::Timeout => 504,
            Reason::ServiceUnavailable => 503,
            Reason::InternalError => 500,
        }
    }
}

/// `field.ErrorType` of apimachinery's validation package.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    TooLong,
    TooMany,
    Forbidden,
    NotFound,
    /// Server-side apply: another manager owns the field.
    ManagerConflict,
}

impl FieldErrorKind {
    /// The `reason` of a `StatusCause` (`FieldValueRequired`, …).
    pub fn cause_reason(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::TooMany => "FieldValueTooMany",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::ManagerConflict => "FieldManagerConflict",
        }
    }
}

/// One invalid field, as apimachinery's `field.Error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    /// The JSON path: `spec.containers[0].ports[1].containerPort`.
    pub field: String,
    /// The offending value, if any (rendered as the API server renders it).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Required,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn invalid(
        field: impl Into<String>,
        value: impl fmt::Display,
        detail: impl Into<String>,
    ) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Invalid,
            field: field.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn not_supported(
        field: impl Into<String>,
        value: impl fmt::Display,
        supported: &[&str],
    ) -> FieldError {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            field: field.into(),
            value: Some(value.to_string()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn duplicate(field: impl Into<String>, value: impl fmt::Display) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Duplicate,
            field: field.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError {
            kind: FieldErrorKind::Forbidden,
            field: field.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn too_long(field: impl Into<String>, max: usize) -> FieldError {
        FieldError {
            kind: FieldErrorKind::TooLong,
            field: field.into(),
            value: None,
            detail: format!("must have at most {max} bytes"),
        }
    }
}

impl fmt::Display for FieldError {
    /// apimachinery's `field.Error.Error()`: `spec.x: Invalid value: "v": detail`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::NotSupported => "Unsupported value",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::TooMany => "Too many",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::NotFound => "Not found",
            FieldErrorKind::ManagerConflict => "Conflict",
        };
        write!(f, "{}: {what}", self.field)?;
        if let Some(v) = &self.value {
            write!(f, ": \"{v}\"")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// An API failure: the Kubernetes `Status` a client receives.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    /// `details.kind` / `details.name`, when about one object.
    pub kind: Option<String>,
    pub name: Option<String>,
    pub causes: Vec<FieldError>,
    /// `details.retryAfterSeconds`.
    pub retry_after_seconds: Option<i32>,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> ApiError {
        ApiError {
            reason,
            message: message.into(),
            kind: None,
            name: None,
            causes: Vec::new(),
            retry_after_seconds: None,
        }
    }

    fn about(mut self, resource: Resource, name: &str) -> ApiError {
        self.kind = Some(resource.plural().to_string());
        self.name = Some(name.to_string());
        self
    }

    /// `pods "web" not found`
    pub fn not_found(resource: Resource, name: &str) -> ApiError {
        ApiError::new(
            Reason::NotFound,
            format!("{} \"{name}\" not found", resource.plural()),
        )
        .about(resource, name)
    }

    /// `pods "web" already exists`
    pub fn already_exists(resource: Resource, name: &str) -> ApiError {
        ApiError::new(
            Reason::AlreadyExists,
            format!("{} \"{name}\" already exists", resource.plural()),
        )
        .about(resource, name)
    }

    /// An optimistic-concurrency failure (stale resourceVersion).
    pub fn conflict(resource: Resource, name: &str, detail: &str) -> ApiError {
        ApiError::new(
            Reason::Conflict,
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                resource.plural()
            ),
        )
        .about(resource, name)
    }

    /// `Pod "web" is invalid: [spec.containers[0].image: Required value, …]`
    pub fn invalid(resource: Resource, name: &str, causes: Vec<FieldError>) -> ApiError {
        let list: Vec<String> = causes.iter().map(ToString::to_string).collect();
        let message = if list.len() == 1 {
            format!("{} \"{name}\" is invalid: {}", resource.kind(), list[0])
        } else {
            format!(
                "{} \"{name}\" is invalid: [{}]",
                resource.kind(),
                list.join(", ")
            )
        };
        let mut e = ApiError::new(Reason::Invalid, message);
        e.kind = Some(resource.kind().to_string());
        e.name = Some(name.to_string());
        e.causes = causes;
        e
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::BadRequest, message)
    }

    pub fn method_not_allowed(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::MethodNotAllowed, message)
    }

    /// A watch asked for a resourceVersion older than the retained window.
    pub fn expired(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::Expired, message)
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::InternalError, message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(Reason::ServiceUnavailable, message)
    }

    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The `Status` object sent on the wire.
    pub fn to_status(&self) -> Status {
        let details = if self.kind.is_some()
            || self.name.is_some()
            || !self.causes.is_empty()
            || self.retry_after_seconds.is_some()
        {
            Some(StatusDetails {
                kind: self.kind.clone(),
                name: self.name.clone(),
                causes: (!self.causes.is_empty()).then(|| {
                    self.causes
                        .iter()
                        .map(|c| StatusCause {
                            field: Some(c.field.clone()),
                            message: Some(
                                c.to_string()
                                    .strip_prefix(&format!("{}: ", c.field))
                                    .map(str::to_string)
                                    .unwrap_or_else(|| c.to_string()),
                            ),
                            reason: Some(c.kind.cause_reason().to_string()),
                        })
                        .collect()
                }),
                retry_after_seconds: self.retry_after_seconds,
                ..Default::default()
            })
        } else {
            None
        };
        Status {
            code: Some(i32::from(self.code())),
            details,
            message: Some(self.message.clone()),
            metadata: Default::default(),
            reason: Some(self.reason.as_str().to_string()),
            status: Some("Failure".to_string()),
        }
    }

    /// The `Status` as JSON with `kind`/`apiVersion` set.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self.to_status()).unwrap_or_default();
        if let Some(m) = v.as_object_mut() {
            m.insert("kind".into(), "Status".into());
            m.insert("apiVersion".into(), "v1".into());
        }
        v
    }

    /// Reads a `Status` a server sent back (the CLI's side).
    pub fn from_status_json(code: u16, body: &[u8]) -> ApiError {
        let status: Option<Status> = serde_json::from_slice(body).ok();
        let Some(s) = status else {
            let text = String::from_utf8_lossy(body);
            return ApiError::new(
                Reason::InternalError,
                format!("server answered {code}: {}", text.trim()),
            );
        };
        let reason = s
            .reason
            .as_deref()
            .and_then(|r| {
                [
                    Reason::NotFound,
                    Reason::AlreadyExists,
                    Reason::Conflict,
                    Reason::Invalid,
                    Reason::BadRequest,
                    Reason::MethodNotAllowed,
                    Reason::NotAcceptable,
                    Reason::UnsupportedMediaType,
                    Reason::Expired,
                    Reason::Gone,
                    Reason::Unauthorized,
                    Reason::Forbidden,
                    Reason::Timeout,
                    Reason::ServiceUnavailable,
                    Reason::InternalError,
                ]
                .into_iter()
                .find(|x| x.as_str() == r)
            })
            .unwrap_or(Reason::InternalError);
        let mut e = ApiError::new(reason, s.message.unwrap_or_default());
        if let Some(d) = s.details {
            e.kind = d.kind;
            e.name = d.name;
            e.retry_after_seconds = d.retry_after_seconds;
        }
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_every_field() {
        let e = ApiError::invalid(
            Resource::Pods,
            "web",
            vec![
                FieldError::required("spec.containers[0].image", ""),
                FieldError::invalid("metadata.name", "Web", "a lowercase RFC 1123 subdomain"),
            ],
        );
        assert_eq!(e.code(), 422);
        assert_eq!(
            e.message,
            "Pod \"web\" is invalid: [spec.containers[0].image: Required value, \
             metadata.name: Invalid value: \"Web\": a lowercase RFC 1123 subdomain]"
        );
        let j = e.to_json();
        assert_eq!(j["kind"], "Status");
        assert_eq!(j["reason"], "Invalid");
        assert_eq!(
            j["details"]["causes"][0]["field"],
            "spec.containers[0].image"
        );
        assert_eq!(j["details"]["causes"][0]["reason"], "FieldValueRequired");
        let back = ApiError::from_status_json(422, j.to_string().as_bytes());
        assert_eq!(back.reason, Reason::Invalid);
        assert_eq!(back.message, e.message);
    }

    #[test]
    fn not_found_matches_api_server() {
        let e = ApiError::not_found(Resource::Pods, "nope");
        assert_eq!(e.to_string(), "pods \"nope\" not found");
        assert_eq!(e.code(), 404);
    }
}
