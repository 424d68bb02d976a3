//! The etcd store over TLS with client-certificate authentication, against
//! a real Debian etcd on 127.0.0.1 (`--client-cert-auth`): the
//! `--datastore-cafile/-certfile/-keyfile` options work, and a client
//! without a certificate, or trusting another CA, gets a clear error.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use herd_agent::api::Resource;
use herd_agent::cluster::pki::ClusterCa;
use herd_agent::store::etcd::{DatastoreArgs, EtcdConfig, EtcdStore};
use herd_agent::store::{Datastore, Key, StoreError};
use herd_integration::etcd::{ETCD, etcd_or_skip};
use serde_json::json;

struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

#[test]
fn tls_with_client_certificates() {
    if !etcd_or_skip("tls_with_client_certificates") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = ClusterCa::create("etcd-test").unwrap();
    let lo = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
    let server = ca.issue_node_cert("etcd-server", &lo, &[]).unwrap();
    let client = ca.issue_node_cert("herd-client", &[], &[]).unwrap();
    let other = ClusterCa::create("someone-else").unwrap();
    let ca_file = write(d, "ca.pem", ca.cert_pem());
    let other_ca = write(d, "other-ca.pem", other.cert_pem());
    let (scert, skey) = (
        write(d, "server.pem", server.cert_pem()),
        write(d, "server-key.pem", server.key_pem()),
    );
    let (ccert, ckey) = (
        write(d, "client.pem", client.cert_pem()),
        write(d, "client-key.pem", client.key_pem()),
    );
    let (cport, pport) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{cport}");
    let log = std::fs::File::create(d.join("etcd.log")).unwrap();
    let _etcd = Etcd(
        Command::new(ETCD)
            .args(["--name", "tls", "--data-dir"])
            .arg(d.join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{pport}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{pport}"),
                "--initial-cluster",
                &format!("tls=http://127.0.0.1:{pport}"),
            ])
            .arg("--cert-file")
            .arg(&scert)
            .arg("--key-file")
            .arg(&skey)
            .arg("--trusted-ca-file")
            .arg(&ca_file)
            .arg("--client-cert-auth")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    // The agent's flags, parsed as `herd agent` parses them.
    let args = DatastoreArgs {
        datastore: Some(format!("etcd://127.0.0.1:{cport}")),
        datastore_prefix: format!("/herd-tls-{}", std::process::id()),
        datastore_cafile: Some(ca_file.clone()),
        datastore_certfile: Some(ccert.clone()),
        datastore_keyfile: Some(ckey.clone()),
    };
    let cfg = args.etcd().unwrap().unwrap();
    assert_eq!(cfg.endpoints, vec![url.clone()]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let store = loop {
        match EtcdStore::connect(cfg.clone()) {
            Ok(s) => break s,
            Err(e) => {
                assert!(Instant::now() < deadline, "etcd over TLS: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    };
    let k = Key::namespaced(Resource::ConfigMaps, "default", "over-tls");
    store
        .create(
            &k,
            json!({"metadata": {"name": "over-tls", "namespace": "default"}}),
        )
        .unwrap();
    assert_eq!(store.get(&k).unwrap()["metadata"]["name"], "over-tls");

    // No client certificate: etcd refuses the handshake.
    let mut no_cert = EtcdConfig::new(vec![url.clone()], "/x");
    no_cert.ca_file = Some(ca_file.clone());
    no_cert.request_timeout = Duration::from_secs(2);
    let t = Instant::now();
    match EtcdStore::connect(no_cert) {
        Err(StoreError::Backend { reason, .. }) => {
            println!("without a client certificate: {reason}");
            assert!(reason.contains("not reachable"), "{reason}");
        }
        other => panic!("connected without a client certificate: {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // Trusting another CA: the server's certificate is refused.
    let mut wrong = cfg.clone();
    wrong.ca_file = Some(other_ca);
    wrong.request_timeout = Duration::from_secs(2);
    assert!(matches!(
        EtcdStore::connect(wrong),
        Err(StoreError::Backend { .. })
    ));
    // A missing file is a flag error before any connection.
    let bad = DatastoreArgs {
        datastore_cafile: Some(d.join("missing.pem")),
        ..args
    };
    let e = bad.etcd().unwrap_err();
    assert!(e.contains("missing.pem"), "{e}");
}
