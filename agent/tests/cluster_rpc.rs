//! Trust and node-to-node RPC: the cluster CA, join tokens, the Join
//! service (CA pinning, secret check, rate limit) and the Peer service
//! over mutual TLS through `GrpcTransport`. Real TLS on 127.0.0.1
//! ephemeral ports, real files in temp dirs; no root needed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use herd_agent::cluster::pki::{
    ClusterCa, ClusterSecrets, JoinToken, NodeCert, PkiError, TokenError,
};
use herd_agent::cluster::rpc::{
    GrpcTransport, JoinError, JoinLimits, JoinService, PeerService, RpcServer, TransportOptions,
    join,
};
use herd_agent::cluster::transport::{
    BoxFuture, PeerHandler, PeerTransport, RpcKind, TransportError,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
const JOIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Answers `<kind>:<payload>`, or an error for payload `fail`; counts calls.
#[derive(Default)]
struct Echo {
    calls: AtomicUsize,
}

impl PeerHandler for Echo {
    fn handle(
        &self,
        kind: RpcKind,
        payload: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, String>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if payload == b"fail" {
                return Err("handler says no".to_owned());
            }
            let mut out = format!("{}:", kind.as_str()).into_bytes();
            out.extend(payload);
            Ok(out)
        })
    }
}

/// One node holding the cluster secrets, serving Join and Peer.
struct Seed {
    secrets: Arc<ClusterSecrets>,
    echo: Arc<Echo>,
    server: RpcServer,
    addr: String,
}

async fn seed(limits: JoinLimits) -> Seed {
    let secrets = Arc::new(ClusterSecrets::create("test").unwrap());
    let node = secrets
        .ca()
        .issue_node_cert("node-a", &[LOCALHOST], &[])
        .unwrap();
    let echo = Arc::new(Echo::default());
    let members: herd_agent::cluster::rpc::MemberList =
        Arc::new(|| vec!["127.0.0.1:7946".to_owned()]);
    let server = RpcServer::start(
        SocketAddr::new(LOCALHOST, 0),
        secrets.ca().cert_pem(),
        &node,
        PeerService::new(echo.clone()),
        Some(JoinService::new(secrets.clone(), members).with_limits(limits)),
    )
    .await
    .unwrap();
    let addr = server.local_addr().to_string();
    Seed {
        secrets,
        echo,
        server,
        addr,
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn certs_of(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

#[test]
fn ca_round_trip_and_issued_certs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ClusterCa::create("prod").unwrap();
    ca.save(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join("ca.key")), 0o600);
    assert_eq!(mode(&dir.path().join("ca.crt")), 0o644);
    let loaded = ClusterCa::load(dir.path()).unwrap();
    assert_eq!(loaded.hash(), ca.hash());
    assert_eq!(loaded.cert_pem(), ca.cert_pem());

    // The loaded CA still signs: its certificates verify against the CA.
    let node = loaded
        .issue_node_cert("node-a", &[LOCALHOST], &["node-a.herd".to_owned()])
        .unwrap();
    node.save(dir.path()).unwrap();
    assert_eq!(mode(&dir.path().join("node.key")), 0o600);
    let node = NodeCert::load(dir.path(), "node-a").unwrap();
    let leaf = node.cert_der().unwrap();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert_der().clone()).unwrap();
    let roots = Arc::new(roots);
    let server = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .unwrap();
    for name in ["node-a", "node-a.herd", "127.0.0.1"] {
        let name = ServerName::try_from(name).unwrap();
        server
            .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
            .unwrap();
    }
    let wrong = ServerName::try_from("node-b").unwrap();
    assert!(
        server
            .verify_server_cert(&leaf, &[], &wrong, &[], UnixTime::now())
            .is_err()
    );
    let client = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .unwrap();
    client
        .verify_client_cert(&leaf, &[], UnixTime::now())
        .unwrap();

    // A certificate from another CA does not verify.
    let other = ClusterCa::create("other").unwrap();
    let foreign = other.issue_node_cert("node-a", &[LOCALHOST], &[]).unwrap();
    let foreign = foreign.cert_der().unwrap();
    assert!(
        client
            .verify_client_cert(&foreign, &[], UnixTime::now())
            .is_err()
    );
    assert!(matches!(
        ca.issue_node_cert("Bad_Name", &[], &[]),
        Err(PkiError::NodeName { .. })
    ));
}

#[test]
fn secrets_round_trip_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("pki");
    let secrets = ClusterSecrets::create("c1").unwrap();
    secrets.save(&state).unwrap();
    for file in ["ca.key", "cluster.key", "join-secret"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&state), 0o700);
    let loaded = ClusterSecrets::load(&state).unwrap();
    assert_eq!(loaded.cluster_key(), secrets.cluster_key());
    assert_eq!(loaded.join_secret(), secrets.join_secret());
    let token = JoinToken::parse(&loaded.join_token().to_string()).unwrap();
    assert_eq!(token, secrets.join_token());
    assert!(token.pins(secrets.ca().cert_der()));
    assert!(token.to_string().starts_with("K10"));
    assert!(!format!("{token:?}").contains(secrets.join_secret()));
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
}

#[test]
fn garbage_files_give_typed_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    assert!(matches!(ClusterCa::load(p), Err(PkiError::Read { .. })));

    std::fs::write(p.join("ca.crt"), b"not a pem at all").unwrap();
    std::fs::write(p.join("ca.key"), b"\x00\xff garbage").unwrap();
    match ClusterCa::load(p) {
        Err(PkiError::BadPem { path, .. }) => assert!(path.ends_with("ca.crt")),
        other => panic!("{other:?}"),
    }
    // A real certificate but a corrupt key block.
    let ca = ClusterCa::create("x").unwrap();
    std::fs::write(p.join("ca.crt"), ca.cert_pem()).unwrap();
    std::fs::write(
        p.join("ca.key"),
        "-----BEGIN PRIVATE KEY-----\nAAAAAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    match ClusterCa::load(p) {
        Err(PkiError::BadKey { path, .. } | PkiError::BadPem { path, .. }) => {
            assert!(path.ends_with("ca.key"))
        }
        other => panic!("{other:?}"),
    }
    // A corrupt certificate block with a good key.
    ca.save(p).unwrap();
    std::fs::write(
        p.join("ca.crt"),
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(matches!(
        ClusterCa::load(p),
        Err(PkiError::BadCert { .. } | PkiError::BadPem { .. })
    ));

    std::fs::write(p.join("node.crt"), b"").unwrap();
    std::fs::write(p.join("node.key"), b"").unwrap();
    assert!(matches!(
        NodeCert::load(p, "n"),
        Err(PkiError::BadPem { .. })
    ));
    assert!(matches!(
        NodeCert::from_pem("n", "junk", "junk"),
        Err(PkiError::BadPem { .. })
    ));

    let secrets = ClusterSecrets::create("y").unwrap();
    secrets.save(p).unwrap();
    std::fs::write(p.join("cluster.key"), b"short").unwrap();
    assert!(matches!(
        ClusterSecrets::load(p),
        Err(PkiError::BadSecret { .. })
    ));
    secrets.save(p).unwrap();
    std::fs::write(p.join("join-secret"), b"has space").unwrap();
    assert!(matches!(
        ClusterSecrets::load(p),
        Err(PkiError::BadSecret { .. })
    ));
}

#[test]
fn malformed_tokens_are_typed_errors() {
    assert_eq!(JoinToken::parse(""), Err(TokenError::Empty));
    assert_eq!(JoinToken::parse("abc"), Err(TokenError::MissingPrefix));
    assert_eq!(
        JoinToken::parse("K10abc"),
        Err(TokenError::MissingSeparator)
    );
    assert_eq!(
        JoinToken::parse("K10abc::s"),
        Err(TokenError::HashLength { len: 3 })
    );
    let hash = "g".repeat(64);
    assert_eq!(
        JoinToken::parse(&format!("K10{hash}::s")),
        Err(TokenError::HashNotHex)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_mutual_tls_peer_calls() {
    let seed = seed(JoinLimits::default()).await;
    let token = seed.secrets.join_token();
    let material = join(&seed.addr, &token, "node-b", &[LOCALHOST], JOIN_TIMEOUT)
        .await
        .unwrap();
    assert_eq!(&material.cluster_key, seed.secrets.cluster_key());
    assert_eq!(material.members, vec!["127.0.0.1:7946".to_owned()]);
    assert!(token.pins(&certs_of(&material.ca_cert_pem)[0]));
    assert_eq!(material.node.node_name(), "node-b");

    let transport = GrpcTransport::new(
        &material.ca_cert_pem,
        &material.node,
        TransportOptions::default(),
    )
    .unwrap();
    let answer = transport
        .call(&seed.addr, RpcKind::Vote, b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"vote:hello");
    // The cached channel serves the next calls; a big message passes (over
    // tonic's 4 MiB default limit).
    let big = vec![7u8; 8 << 20];
    let answer = transport
        .call(&seed.addr, RpcKind::InstallSnapshot, big.clone())
        .await
        .unwrap();
    assert_eq!(&answer[..17], b"install-snapshot:");
    assert_eq!(answer.len(), 17 + big.len());
    // A handler error comes back as Refused with its message.
    match transport
        .call(&seed.addr, RpcKind::ClientWrite, b"fail".to_vec())
        .await
    {
        Err(TransportError::Refused { kind, reason, .. }) => {
            assert_eq!(kind, "client-write");
            assert!(reason.contains("handler says no"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(seed.echo.calls.load(Ordering::SeqCst), 3);
    seed.server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_is_unauthenticated_then_rate_limited() {
    let seed = seed(JoinLimits {
        max_failures: 2,
        window: Duration::from_secs(60),
    })
    .await;
    let good = seed.secrets.join_token();
    let bad = JoinToken::new(good.ca_hash(), "not-the-secret").unwrap();
    for _ in 0..2 {
        match join(&seed.addr, &bad, "node-x", &[LOCALHOST], JOIN_TIMEOUT).await {
            Err(JoinError::Unauthenticated { .. }) => {}
            other => panic!("expected Unauthenticated, got {other:?}"),
        }
    }
    // Two failures from 127.0.0.1: even the right secret is now turned away.
    match join(&seed.addr, &good, "node-x", &[LOCALHOST], JOIN_TIMEOUT).await {
        Err(JoinError::RateLimited { .. }) => {}
        other => panic!("expected RateLimited, got {other:?}"),
    }
    assert_eq!(seed.echo.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_with_wrong_ca_hash_refuses_the_server() {
    let seed = seed(JoinLimits::default()).await;
    let good = seed.secrets.join_token();
    let mut hash = good.ca_hash();
    hash[0] ^= 1;
    let wrong = JoinToken::new(hash, good.secret()).unwrap();
    match join(&seed.addr, &wrong, "node-x", &[LOCALHOST], JOIN_TIMEOUT).await {
        Err(JoinError::UntrustedServer { reason, .. }) => {
            assert!(reason.contains("join token hash"), "{reason}")
        }
        other => panic!("expected UntrustedServer, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_refuses_clients_without_a_cluster_cert() {
    let seed = seed(JoinLimits::default()).await;

    // No client certificate at all: the TLS handshake succeeds (Join must
    // work without one) and the Peer service answers Unauthenticated.
    let tls = tonic::transport::ClientTlsConfig::new().ca_certificate(
        tonic::transport::Certificate::from_pem(seed.secrets.ca().cert_pem()),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", seed.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = herd_proto::v1::peer_client::PeerClient::new(channel);
    let status = client
        .call(herd_proto::v1::PeerRequest {
            kind: herd_proto::v1::RpcKind::Vote as i32,
            payload: b"x".to_vec(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);

    // A certificate from another CA: the server's TLS layer rejects it. In
    // TLS 1.3 the client finishes its side of the handshake first and then
    // sees the connection closed, so this surfaces as Unreachable (the peer
    // cannot be used), not as an answer from the peer.
    let other = ClusterCa::create("other").unwrap();
    let foreign = other.issue_node_cert("node-m", &[LOCALHOST], &[]).unwrap();
    let transport = GrpcTransport::new(
        seed.secrets.ca().cert_pem(),
        &foreign,
        TransportOptions::default(),
    )
    .unwrap();
    match transport
        .call(&seed.addr, RpcKind::AppendEntries, b"x".to_vec())
        .await
    {
        Err(TransportError::Unreachable { .. }) => {}
        other => panic!("expected Unreachable (handshake refused), got {other:?}"),
    }

    // A client trusting another CA refuses our server.
    let theirs =
        GrpcTransport::new(other.cert_pem(), &foreign, TransportOptions::default()).unwrap();
    match theirs.call(&seed.addr, RpcKind::Vote, b"x".to_vec()).await {
        Err(TransportError::Unreachable { reason, .. }) => {
            assert!(reason.contains("tls"), "{reason}")
        }
        other => panic!("expected Unreachable (server not trusted), got {other:?}"),
    }
    assert_eq!(seed.echo.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_or_silent_peer_is_unreachable_within_the_connect_timeout() {
    let ca = ClusterCa::create("t").unwrap();
    let node = ca.issue_node_cert("node-a", &[LOCALHOST], &[]).unwrap();
    let options = TransportOptions {
        connect_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(5),
    };
    let transport = GrpcTransport::new(ca.cert_pem(), &node, options).unwrap();

    // Nothing listens: refused at once.
    let closed = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let started = Instant::now();
    let err = transport
        .call(&closed_addr, RpcKind::Vote, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(1));

    // Listening but never answering the TLS handshake: the connect timeout.
    let silent = tokio::net::TcpListener::bind((LOCALHOST, 0)).await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = transport
        .call(&silent_addr, RpcKind::Vote, vec![])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    drop(silent);

    // A malformed address is a typed error, not a panic.
    let err = transport
        .call("not an address", RpcKind::Vote, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { .. }), "{err:?}");
}
