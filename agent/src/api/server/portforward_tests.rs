//! Tests of the portforward protocol: [`Client`] plays kubectl over an
//! in-memory pipe; the "pod" is a local TCP listener (no netns).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::super::spdy::frame::{FLAG_FIN, Frame};
use super::super::spdy::test_client::Client;
use super::*;
use tokio::io::AsyncReadExt;

#[test]
fn header_values_split_and_trim() {
    let mut h = HeaderMap::new();
    h.append(
        "x-stream-protocol-version",
        "a, portforward.k8s.io".parse().unwrap(),
    );
    h.append("x-stream-protocol-version", "b".parse().unwrap());
    assert_eq!(
        header_values(&h, "x-stream-protocol-version"),
        vec!["a", PROTOCOL, "b"]
    );
}

#[tokio::test]
async fn dial_reports_refused_ports_like_the_kubelet() {
    // A port nothing listens on in this namespace.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let e = dial(None, port).await.unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!("failed to connect to localhost:{port}")),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "IPv4: dial tcp4 127.0.0.1:{port}: connect: connection refused"
        )),
        "{msg}"
    );
}

fn target() -> Target {
    Target {
        pod: "web_default".into(),
        uid: "u1".into(),
        netns: None,
    }
}

fn stream_headers(kind: &str, port: u16, request: &str) -> Headers {
    let mut h = Headers::default();
    h.insert("streamtype", kind);
    h.insert("port", &port.to_string());
    h.insert("requestid", request);
    h
}

/// Collects (stream id → data, FIN seen) until both streams finished.
async fn collect(c: &mut Client, ids: [u32; 2]) -> HashMap<u32, Vec<u8>> {
    let mut data: HashMap<u32, Vec<u8>> = HashMap::new();
    let mut fins = 0;
    while fins < ids.len() {
        match c.next().await.expect("frames until both FINs").0 {
            Frame::Data {
                stream_id,
                flags,
                data: d,
            } => {
                assert!(ids.contains(&stream_id), "{stream_id}");
                data.entry(stream_id).or_default().extend_from_slice(&d);
                if flags & FLAG_FIN != 0 {
                    fins += 1;
                }
            }
            Frame::SynReply { .. } | Frame::WindowUpdate { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    data
}

#[tokio::test]
async fn forwards_a_stream_pair_to_the_port() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let pod = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&got.to_ascii_uppercase()).await.unwrap();
    });
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve(b, target()));
    let mut c = Client::new(a);
    c.syn_with(1, &stream_headers("error", port, "0"), true)
        .await;
    c.syn_with(3, &stream_headers("data", port, "0"), false)
        .await;
    c.data(3, b"ping", true).await;
    let got = collect(&mut c, [1, 3]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"PING"[..]));
    assert!(got.get(&1).is_none_or(Vec::is_empty), "{got:?}");
    pod.await.unwrap();
}

#[tokio::test]
async fn pod_closing_first_ends_both_streams() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(b"bye").await.unwrap();
    });
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve(b, target()));
    let mut c = Client::new(a);
    c.syn_with(1, &stream_headers("error", port, "0"), true)
        .await;
    // The client never half-closes its data stream.
    c.syn_with(3, &stream_headers("data", port, "0"), false)
        .await;
    let started = std::time::Instant::now();
    let got = collect(&mut c, [1, 3]).await;
    assert_eq!(got.get(&3).map(Vec::as_slice), Some(&b"bye"[..]));
    assert!(started.elapsed() < LINGER + Duration::from_secs(3));
}

#[tokio::test]
async fn refused_port_is_reported_on_the_error_stream() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve(b, target()));
    let mut c = Client::new(a);
    // Old clients send no requestid: error stream n pairs with data n+2.
    let mut h = stream_headers("error", port, "");
    h.0.retain(|(n, _)| n != "requestid");
    c.syn_with(5, &h, true).await;
    let mut h = stream_headers("data", port, "");
    h.0.retain(|(n, _)| n != "requestid");
    c.syn_with(7, &h, false).await;
    let got = collect(&mut c, [5, 7]).await;
    let msg = String::from_utf8(got[&5].clone()).unwrap();
    assert!(
        msg.starts_with(&format!(
            "error forwarding port {port} to pod web_default, uid u1: failed to connect"
        )),
        "{msg}"
    );
    assert!(got.get(&7).is_none_or(Vec::is_empty));
}

#[tokio::test(start_paused = true)]
async fn a_lonely_stream_times_out() {
    let (a, b) = tokio::io::duplex(1 << 16);
    tokio::spawn(serve(b, target()));
    let mut c = Client::new(a);
    c.wait = 2 * PAIR_TIMEOUT;
    c.syn_with(1, &stream_headers("error", 8080, "4"), true)
        .await;
    let started = tokio::time::Instant::now();
    let mut msg = Vec::new();
    loop {
        match c.next().await.unwrap().0 {
            Frame::Data {
                stream_id: 1,
                flags,
                data,
            } => {
                msg.extend_from_slice(&data);
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            Frame::SynReply { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(started.elapsed() >= PAIR_TIMEOUT);
    assert_eq!(
        String::from_utf8(msg).unwrap(),
        "timed out waiting for the streams of request 4"
    );
}

#[tokio::test]
async fn dial_connects_on_loopback() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let (conn, acc) = tokio::join!(dial(None, port), l.accept());
    conn.unwrap();
    acc.unwrap();
}
