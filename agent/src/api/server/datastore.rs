//! `herd datastore export` / `import` against a running agent:
//! `GET /herd/v1/datastore/export` and `POST /herd/v1/datastore/import`,
//! routed on the root-only unix socket only (never over TCP): the export
//! holds Secrets in plain text, and the import writes objects as they are,
//! past admission and validation, as a restore must.
//!
//! Guarantees (the format and the rest in [`crate::store::migrate`]):
//! - Export (`?skipEvents=true` leaves Events out) reads the whole store
//!   before answering: a store failure is an error `Status`, never a
//!   partial file. The file is then streamed in chunks; a failure while
//!   streaming aborts the response, so the client sees an incomplete body
//!   rather than a short file that looks whole.
//! - Import (`?overwrite=true` replaces existing objects) reads the body
//!   (at most [`IMPORT_MAX_BODY`] bytes, 413 beyond), validates all of it,
//!   then writes it and answers the [`Summary`] as JSON. An invalid file is
//!   400 naming the line, objects already there 409 `AlreadyExists`
//!   listing them (nothing written in both cases); a store failure keeps
//!   the store's code (504 when a write may still complete, else 500).

use std::io::{self, Write};

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::routes::blocking;
use super::{ApiResult, ApiState, Failure};
use crate::api::ApiError;
use crate::api::error::Reason;
use crate::store::StoreError;
use crate::store::migrate::{self, ExportOptions, ImportOptions, MigrateError, Summary};

/// Largest import body accepted (the file and its parsed objects are held
/// in memory while it is validated).
pub const IMPORT_MAX_BODY: usize = 256 << 20;
/// Bytes per streamed chunk of an export.
const CHUNK: usize = 64 << 10;

/// Query of `GET /herd/v1/datastore/export`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportQuery {
    #[serde(default)]
    pub skip_events: bool,
}

/// Query of `POST /herd/v1/datastore/import`.
#[derive(Debug, Deserialize)]
pub struct ImportQuery {
    #[serde(default)]
    pub overwrite: bool,
}

/// The one place a [`MigrateError`] becomes a `Status`.
fn failure(e: MigrateError) -> Failure {
    let message = e.to_string();
    let reason = match &e {
        MigrateError::Invalid { .. } | MigrateError::Read { .. } => Reason::BadRequest,
        MigrateError::Exists { .. } => Reason::AlreadyExists,
        MigrateError::Store { source, .. } | MigrateError::Write { source, .. } => match source {
            StoreError::Timeout { .. } => Reason::Timeout,
            StoreError::Conflict { .. } => Reason::Conflict,
            _ => Reason::InternalError,
        },
        MigrateError::Output(_) => Reason::InternalError,
    };
    Failure::from(ApiError::new(reason, message))
}

/// The export handler (unix socket only).
pub async fn export(State(state): State<ApiState>, Query(q): Query<ExportQuery>) -> ApiResult {
    let opts = ExportOptions {
        skip_events: q.skip_events,
    };
    let store = state.store.clone();
    let snapshot =
        blocking(move || migrate::snapshot(store.as_ref(), &opts).map_err(failure)).await?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(4);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = snapshot.write_to(&mut w) {
            tracing::debug!(error = %e, "datastore export stream ended early");
            // Aborts the response: the client must not take it as whole.
            let _ = w.tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok(([(header::CONTENT_TYPE, "application/jsonl")], body).into_response())
}

/// Hands what is written to the response body, [`CHUNK`] bytes at a time.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// The import handler (unix socket only).
pub async fn import(
    State(state): State<ApiState>,
    Query(q): Query<ImportQuery>,
    body: Body,
) -> ApiResult {
    let bytes = read_limited(body).await?;
    let opts = ImportOptions {
        overwrite: q.overwrite,
    };
    let store = state.store.clone();
    let summary: Summary =
        blocking(move || migrate::import(store.as_ref(), &mut &bytes[..], &opts).map_err(failure))
            .await?;
    Ok(axum::Json(summary).into_response())
}

async fn read_limited(mut body: Body) -> Result<Bytes, Failure> {
    let mut buf = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame =
            frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > IMPORT_MAX_BODY {
            return Err(Failure {
                error: ApiError::bad_request(format!(
                    "Request entity too large: limit is {IMPORT_MAX_BODY}"
                )),
                code: Some(413),
            });
        }
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}
