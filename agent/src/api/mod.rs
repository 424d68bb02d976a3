//! The agent's API: Kubernetes' own paths and objects.
//!
//! Objects are k8s-openapi types. A write travels
//! `manifest` (decode) → `defaults` → `validation` → `store`; every error
//! on the way is an [`ApiError`], which the server renders as a Kubernetes
//! `Status` with the HTTP code the API server would use.

pub mod defaults;
pub mod error;
pub mod label_selector;
pub mod manifest;
pub mod patch;
pub mod quantity;
pub mod resource;
pub mod server;
pub mod service_ledger;
pub mod services;
pub mod validation;

pub use error::{ApiError, FieldError, FieldErrorKind};
pub use resource::Resource;
