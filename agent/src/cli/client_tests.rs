//! The client against a tiny axum server on a real unix socket.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::channel::{self, Channel, ExecStatus, Protocol};
use super::client::{
    ApiClient, ClientError, Endpoint, ExecParams, ListParams, LogParams, WatchEventType,
};
use super::client_error_message;
use crate::api::{ApiError, FieldError, Resource};

fn status(e: ApiError) -> Response {
    (
        StatusCode::from_u16(e.code()).unwrap(),
        axum::Json(e.to_json()),
    )
        .into_response()
}

async fn get_pod(UrlPath((_ns, name)): UrlPath<(String, String)>) -> Response {
    if name == "web" {
        axum::Json(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "resourceVersion": "7"}}))
            .into_response()
    } else {
        status(ApiError::not_found(Resource::Pods, &name))
    }
}

async fn list_pods(RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    if q.contains("watch=true") {
        assert!(q.contains("labelSelector=app%3Dweb"), "{q}");
        assert!(q.contains("resourceVersion=7"), "{q}");
        // Lines split across chunks, then an ERROR event.
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"na")),
            Ok(Bytes::from_static(b"me\":\"a\"}}}\n{\"type\":\"DELETED\",\"object\":{}}\n")),
            Ok(Bytes::from(
                json!({"type": "ERROR", "object": ApiError::expired("too old resource version").to_json()})
                    .to_string()
                    + "\n",
            )),
        ];
        return Body::from_stream(futures_util::stream::iter(chunks)).into_response();
    }
    axum::Json(json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "7"}, "items": []}))
        .into_response()
}

async fn create_pod() -> Response {
    status(ApiError::invalid(
        Resource::Pods,
        "web",
        vec![FieldError::required("spec.containers[0].image", "")],
    ))
}

async fn log(RawQuery(q): RawQuery) -> Response {
    assert_eq!(q.as_deref(), Some("container=app&follow=true&tailLines=2"));
    let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::from_static(b"one\n")),
        Ok(Bytes::from_static(b"two\n")),
    ];
    Body::from_stream(futures_util::stream::iter(chunks)).into_response()
}

async fn exec(ws: WebSocketUpgrade, RawQuery(q): RawQuery) -> Response {
    let q = q.unwrap_or_default();
    assert_eq!(
        q,
        "command=sh&command=-c&command=cat%20-&container=app&stdin=true&stdout=true&stderr=true"
    );
    ws.protocols(["v5.channel.k8s.io", "v4.channel.k8s.io"])
        .on_upgrade(|mut socket| async move {
            // Echo stdin to stdout until the client closes stdin, then exit 3.
            while let Some(Ok(msg)) = socket.recv().await {
                let WsMessage::Binary(b) = msg else { continue };
                match b.first() {
                    Some(0) => {
                        let mut out = b.to_vec();
                        out[0] = 1;
                        let _ = socket.send(WsMessage::Binary(out.into())).await;
                    }
                    Some(255) => break,
                    _ => {}
                }
            }
            let st = json!({"status": "Failure", "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "3"}]}});
            let mut frame = vec![3u8];
            frame.extend(st.to_string().into_bytes());
            let _ = socket.send(WsMessage::Binary(frame.into())).await;
            let _ = socket.send(WsMessage::Close(None)).await;
        })
}

async fn serve(dir: &Path) -> ApiClient {
    let sock = dir.join("agent.sock");
    let app = Router::new()
        .route("/api/v1/namespaces/{ns}/pods/{name}", get(get_pod))
        .route(
            "/api/v1/namespaces/{ns}/pods",
            get(list_pods).post(create_pod),
        )
        .route("/api/v1/namespaces/{ns}/pods/{name}/log", get(log))
        .route("/api/v1/namespaces/{ns}/pods/{name}/exec", get(exec));
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    ApiClient::from_flags(dir, None).unwrap()
}

#[tokio::test]
async fn get_list_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = serve(dir.path()).await;
    let pod: Value = c.get(Resource::Pods, "default", "web").await.unwrap();
    assert_eq!(pod["metadata"]["resourceVersion"], "7");
    let list: Value = c
        .list(Resource::Pods, Some("default"), &ListParams::default())
        .await
        .unwrap();
    assert_eq!(list["kind"], "PodList");

    let err = c
        .get::<Value>(Resource::Pods, "default", "nope")
        .await
        .unwrap_err();
    assert!(err.is_not_found());
    assert_eq!(
        client_error_message(&err),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    let err = c
        .create::<Value>(Resource::Pods, "default", &json!({"kind": "Pod"}))
        .await
        .unwrap_err();
    assert_eq!(
        client_error_message(&err),
        "The Pod \"web\" is invalid: spec.containers[0].image: Required value"
    );
}

#[tokio::test]
async fn watch_streams_events_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let c = serve(dir.path()).await;
    let params = ListParams {
        label_selector: Some("app=web".into()),
        field_selector: None,
    };
    let mut w = c
        .watch(Resource::Pods, Some("default"), &params, Some("7"))
        .await
        .unwrap();
    let e = w.next().await.unwrap().unwrap();
    assert_eq!(e.kind, WatchEventType::Added);
    assert_eq!(e.object["metadata"]["name"], "a");
    assert_eq!(
        w.next().await.unwrap().unwrap().kind,
        WatchEventType::Deleted
    );
    let err = w.next().await.unwrap().unwrap_err();
    assert_eq!(err.api().unwrap().code, 410);
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn logs_stream_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let c = serve(dir.path()).await;
    let params = LogParams {
        container: Some("app".into()),
        follow: true,
        tail_lines: Some(2),
        ..Default::default()
    };
    let mut s = c.logs("default", "web", &params).await.unwrap();
    let mut all = Vec::new();
    while let Some(chunk) = s.next_chunk().await {
        all.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(all, b"one\ntwo\n");
}

#[tokio::test]
async fn exec_websocket_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let c = serve(dir.path()).await;
    let params = ExecParams {
        container: Some("app".into()),
        command: vec!["sh".into(), "-c".into(), "cat -".into()],
        stdin: true,
        stdout: true,
        stderr: true,
        tty: false,
    };
    let mut s = c.exec("default", "web", &params).await.unwrap();
    assert_eq!(s.protocol, Protocol::V5);
    s.ws.send(Message::Binary(
        channel::encode(Channel::Stdin, b"hi\n").into(),
    ))
    .await
    .unwrap();
    s.ws.send(Message::Binary(channel::close_stdin().into()))
        .await
        .unwrap();
    let mut out = Vec::new();
    let mut status = None;
    while let Some(Ok(msg)) = s.ws.next().await {
        let Message::Binary(b) = msg else { continue };
        match channel::decode(&b).unwrap() {
            (Channel::Stdout, p) => out.extend_from_slice(p),
            (Channel::Error, p) => status = Some(channel::exec_status(p).unwrap()),
            _ => {}
        }
    }
    assert_eq!(out, b"hi\n");
    assert_eq!(status, Some(ExecStatus::ExitCode(3)));
}

#[tokio::test]
async fn unreachable_agent_names_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let c = ApiClient::from_flags(dir.path(), None).unwrap();
    let err = c
        .get::<Value>(Resource::Pods, "default", "web")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }));
    let msg = err.to_string();
    assert!(msg.starts_with("the agent is not running at "), "{msg}");
    assert!(msg.contains(&dir.path().join("agent.sock").display().to_string()));
}

#[test]
fn server_flag_forms() {
    let root = Path::new("/r");
    let ep = |s: Option<&str>| ApiClient::from_flags(root, s).map(|c| c.endpoint().clone());
    assert_eq!(ep(None).unwrap(), Endpoint::Unix("/r/agent.sock".into()));
    assert_eq!(
        ep(Some("http://127.0.0.1:6443")).unwrap(),
        Endpoint::Tcp("127.0.0.1:6443".into())
    );
    assert_eq!(
        ep(Some("localhost")).unwrap(),
        Endpoint::Tcp("localhost:80".into())
    );
    assert!(ep(Some("https://x:1")).is_err());
    assert!(ep(Some("http://x:1/api")).is_err());
}
