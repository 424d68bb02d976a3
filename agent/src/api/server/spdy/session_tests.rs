//! Session tests: [`Client`] drives a [`Session`] over an in-memory pipe.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::super::frame::{self, FLAG_FIN, Frame, rst};
use super::super::headers::Headers;
use super::super::test_client::{Client, WAIT};
use super::{Config, Session};

fn pair(cfg: Config) -> (Client, Session) {
    let (a, b) = tokio::io::duplex(1 << 20);
    (Client::new(a), Session::server(b, cfg))
}

#[tokio::test]
async fn accepts_replies_echoes_and_half_closes() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "error", true).await;
    c.syn(3, "data", false).await;
    let mut err = tokio::time::timeout(WAIT, s.accept())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err.headers().get("streamtype"), Some("error"));
    err.reply(Headers::default()).unwrap();
    let mut data = s.accept().await.unwrap();
    assert_eq!(data.id(), 3);
    assert_eq!(data.headers().get("port"), Some("8080"));
    data.reply(Headers::default()).unwrap();
    // The error stream came with FIN: reads end at once.
    let mut v = Vec::new();
    err.read_to_end(&mut v).await.unwrap();
    assert!(v.is_empty());

    c.data(3, b"ping", false).await;
    let mut four = [0u8; 4];
    data.read_exact(&mut four).await.unwrap();
    assert_eq!(&four, b"ping");
    data.write_all(b"pong").await.unwrap();
    data.shutdown().await.unwrap();

    let (f, h) = c.next().await.unwrap();
    assert!(matches!(f, Frame::SynReply { stream_id: 1, .. }), "{f:?}");
    assert_eq!(h, Some(Headers::default()));
    let (f, _) = c.next().await.unwrap();
    assert!(matches!(f, Frame::SynReply { stream_id: 3, .. }), "{f:?}");
    let (f, _) = c.next().await.unwrap();
    assert_eq!(
        f,
        Frame::Data {
            stream_id: 3,
            flags: 0,
            data: Bytes::from_static(b"pong")
        }
    );
    let (f, _) = c.next().await.unwrap();
    assert_eq!(
        f,
        Frame::Data {
            stream_id: 3,
            flags: FLAG_FIN,
            data: Bytes::new()
        }
    );
    // Client FIN: the server reads EOF.
    c.data(3, b"", true).await;
    let mut rest = Vec::new();
    data.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
    // Dropping the error stream half-closes it (FIN after the reply).
    drop(err);
    let (f, _) = c.next().await.unwrap();
    assert_eq!(
        f,
        Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new()
        }
    );
    drop(c);
    assert!(s.accept().await.is_none());
    s.finish().await.unwrap();
}

#[tokio::test]
async fn answers_pings_and_ignores_settings() {
    let (mut c, s) = pair(Config::default());
    c.send(Frame::Settings {
        flags: 0,
        entries: vec![(0, frame::SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20)],
    })
    .await;
    c.send(Frame::Ping { id: 7 }).await;
    assert_eq!(c.next().await.unwrap().0, Frame::Ping { id: 7 });
    drop(c);
    s.finish().await.unwrap();
}

#[tokio::test]
async fn writes_before_reply_send_an_empty_reply_first() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "data", false).await;
    let mut st = s.accept().await.unwrap();
    st.write_all(b"x").await.unwrap();
    let (f, h) = c.next().await.unwrap();
    assert!(matches!(f, Frame::SynReply { stream_id: 1, .. }));
    assert_eq!(h, Some(Headers::default()));
    assert!(matches!(c.next().await.unwrap().0, Frame::Data { .. }));
}

#[tokio::test]
async fn large_writes_are_chunked() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "data", false).await;
    let mut st = s.accept().await.unwrap();
    let big = vec![7u8; 200_000];
    let writer = tokio::spawn(async move {
        st.write_all(&big).await.unwrap();
        st.shutdown().await.unwrap();
        st
    });
    let mut got = 0usize;
    loop {
        match c.next().await.unwrap().0 {
            Frame::Data { data, flags, .. } => {
                assert!(data.len() <= super::super::stream::MAX_CHUNK);
                got += data.len();
                if flags & FLAG_FIN != 0 {
                    break;
                }
            }
            Frame::SynReply { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, 200_000);
    drop(writer.await.unwrap());
}

#[tokio::test]
async fn window_updates_follow_received_data() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "data", false).await;
    let mut st = s.accept().await.unwrap();
    st.reply(Headers::default()).unwrap();
    let chunk = vec![1u8; 16 * 1024];
    for _ in 0..2 {
        c.data(1, &chunk, false).await;
    }
    let mut sink = vec![0u8; 32 * 1024];
    st.read_exact(&mut sink).await.unwrap();
    let mut updates = Vec::new();
    while updates.len() < 2 {
        if let (Frame::WindowUpdate { stream_id, delta }, _) = c.next().await.unwrap() {
            updates.push((stream_id, delta));
        }
    }
    updates.sort();
    assert_eq!(updates, vec![(0, 32 * 1024), (1, 32 * 1024)]);
}

#[tokio::test]
async fn strict_flow_control_resets_an_overrunning_stream() {
    let cfg = Config {
        strict_flow_control: true,
        ..Config::default()
    };
    let (mut c, mut s) = pair(cfg);
    c.syn(1, "data", false).await;
    let mut st = s.accept().await.unwrap();
    st.reply(Headers::default()).unwrap();
    c.data(1, &vec![0u8; 70 * 1024], false).await;
    let mut seen = false;
    while let Some((f, _)) = c.next().await {
        if f == (Frame::RstStream {
            stream_id: 1,
            status: rst::FLOW_CONTROL_ERROR,
        }) {
            seen = true;
            break;
        }
    }
    assert!(seen);
    let mut v = Vec::new();
    assert!(st.read_to_end(&mut v).await.is_err(), "reset, not EOF");
}

#[tokio::test]
async fn client_reset_fails_reads_and_writes() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "data", false).await;
    let mut st = s.accept().await.unwrap();
    c.send(Frame::RstStream {
        stream_id: 1,
        status: rst::CANCEL,
    })
    .await;
    let mut v = Vec::new();
    let e = st.read_to_end(&mut v).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(st.is_reset());
    assert!(st.write_all(b"late").await.is_err());
}

#[tokio::test]
async fn bad_stream_ids_reset_only_that_stream() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(2, "data", false).await; // even: server-initiated id
    c.syn(5, "data", false).await;
    c.syn(3, "data", false).await; // goes backwards
    assert_eq!(
        c.next_non_window().await.unwrap().0,
        Frame::RstStream {
            stream_id: 2,
            status: rst::PROTOCOL_ERROR
        }
    );
    assert_eq!(
        c.next_non_window().await.unwrap().0,
        Frame::RstStream {
            stream_id: 3,
            status: rst::PROTOCOL_ERROR
        }
    );
    let five = s.accept().await.unwrap();
    assert_eq!(five.id(), 5);
    // Data for a stream never opened.
    c.data(9, b"?", false).await;
    assert_eq!(
        c.next_non_window().await.unwrap().0,
        Frame::RstStream {
            stream_id: 9,
            status: rst::INVALID_STREAM
        }
    );
}

#[tokio::test]
async fn garbage_ends_the_session_with_goaway() {
    let (mut c, mut s) = pair(Config::default());
    c.syn(1, "data", false).await;
    let st = s.accept().await.unwrap();
    // SPDY/2 control frame.
    c.io.write_all(b"\x80\x02\x00\x06\x00\x00\x00\x04\x00\x00\x00\x01")
        .await
        .unwrap();
    assert_eq!(
        c.next_non_window().await.unwrap().0,
        Frame::GoAway {
            last_good_stream_id: 1,
            status: frame::goaway::PROTOCOL_ERROR
        }
    );
    assert!(st.is_reset());
    assert!(s.accept().await.is_none());
    assert!(s.finish().await.is_err());
}

#[tokio::test]
async fn corrupt_header_block_ends_the_session() {
    let (mut c, s) = pair(Config::default());
    c.send(Frame::SynStream {
        stream_id: 1,
        associated_to: 0,
        priority: 0,
        slot: 0,
        flags: 0,
        block: Bytes::from_static(b"not zlib at all"),
    })
    .await;
    assert!(matches!(c.next().await.unwrap().0, Frame::GoAway { .. }));
    assert!(matches!(
        s.finish().await,
        Err(super::super::SpdyError::Header(_))
    ));
}

#[tokio::test]
async fn random_bytes_never_panic() {
    let mut seed = 0x1234_5678_u32;
    for round in 0..50 {
        let (mut c, s) = pair(Config::default());
        let mut junk = Vec::new();
        for _ in 0..(64 + round * 7) {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            junk.push(seed as u8);
        }
        c.io.write_all(&junk).await.unwrap();
        drop(c);
        // Ends (with or without an error), never hangs or panics.
        let _ = tokio::time::timeout(WAIT, s.finish()).await.unwrap();
    }
}
