//! Service proxy sync cost (root): time for `ServiceProxy::sync` to
//! program 1, 100 and 1,000 Services (2-10 endpoints each, every fourth
//! with a NodePort) into an empty table, and one endpoint change at 1,000
//! Services; each against the naive baseline measured in the same run:
//! delete the table and load the whole rule set again in one transaction
//! (`ServiceProxy::sync_full`). Everything runs in a netns made here.
//!
//! Run: `cargo bench -p herd-net --bench services` (as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::time::{Duration, Instant};

use herd_net::{NetNs, Protocol, ProxyConfig, ServicePort, ServiceProxy, ServiceSpec};

const NETNS_DIR: &str = "/run/netns";
const REPS: usize = 3;

struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = NetNs::delete(Path::new(NETNS_DIR), &self.0);
    }
}

fn services(n: usize, generation: u8) -> Vec<ServiceSpec> {
    (0..n)
        .map(|i| {
            let eps = 2 + i % 9;
            let endpoints = (0..eps)
                .map(|e| {
                    let host = (i * 10 + e) as u32;
                    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 244, 0, 0)) + host);
                    SocketAddrV4::new(ip, 8080 + u16::from(generation))
                })
                .collect();
            ServiceSpec {
                namespace: "bench".into(),
                name: format!("svc-{i}"),
                cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 0)) + 1 + i as u32),
                ports: vec![ServicePort {
                    protocol: Protocol::Tcp,
                    port: 80,
                    node_port: (i % 4 == 0).then_some(30000 + i as u16),
                    endpoints,
                }],
                affinity: None,
            }
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn row(what: &str, inc: Duration, full: Duration) {
    println!(
        "| {what:<40} | {:>11.1} | {:>11.1} | {:>6.1}x |",
        ms(inc),
        ms(full),
        full.as_secs_f64() / inc.as_secs_f64().max(1e-9)
    );
}

fn main() {
    if !rustix::process::geteuid().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "services bench needs root"
        );
        eprintln!("SKIP services bench: needs root");
        return;
    }
    let name = format!("hsbench-{}", std::process::id());
    let ns = NetNs::create(Path::new(NETNS_DIR), &name).unwrap();
    let _guard = Ns(name.clone());
    let open = || NetNs::open(&Path::new(NETNS_DIR).join(&name)).unwrap();
    drop(ns);
    let mut p = ServiceProxy::new(Some(open()), ProxyConfig::default()).unwrap();

    println!("median of {REPS} runs, milliseconds; baseline = delete table + reload all");
    println!(
        "| {:<40} | {:>11} | {:>11} | {:>7} |",
        "case", "incremental", "full reload", "ratio"
    );
    println!("|{:-<42}|{:-<13}|{:-<13}|{:-<9}|", "", "", "", "");
    for n in [1usize, 100, 1000] {
        let specs = services(n, 0);
        let (mut inc, mut full) = (Vec::new(), Vec::new());
        for _ in 0..REPS {
            p.delete_table().unwrap();
            let t = Instant::now();
            p.sync(&specs).unwrap();
            inc.push(t.elapsed());
            p.delete_table().unwrap();
            let t = Instant::now();
            p.sync_full(&specs).unwrap();
            full.push(t.elapsed());
        }
        row(
            &format!("{n} services from scratch"),
            median(inc),
            median(full),
        );
    }

    // One endpoint change at 1,000 services.
    let base = services(1000, 0);
    p.delete_table().unwrap();
    p.sync(&base).unwrap();
    let (mut inc, mut full) = (Vec::new(), Vec::new());
    let mut last = None;
    for rep in 0..REPS * 2 {
        let mut changed = base.clone();
        let port = &mut changed[500].ports[0];
        port.endpoints[0].set_port(9000 + rep as u16);
        let t = Instant::now();
        let st = p.sync(&changed).unwrap();
        inc.push(t.elapsed());
        last = Some(st);
        let t = Instant::now();
        p.sync_full(&changed).unwrap();
        full.push(t.elapsed());
    }
    row(
        "1 endpoint change at 1000 services",
        median(inc),
        median(full),
    );
    if let Some(st) = last {
        println!(
            "\nincremental change touched: {} chain(s) rewritten, {} added, {} deleted, \
             {} element(s) changed, {} chains untouched",
            st.chains_rewritten,
            st.chains_added,
            st.chains_deleted,
            st.elements_added + st.elements_deleted,
            st.chains_unchanged
        );
    }
    // A no-op sync (nothing changed) sends nothing.
    p.sync(&base).unwrap();
    let t = Instant::now();
    let st = p.sync(&base).unwrap();
    let noop = t.elapsed();
    assert!(st.is_noop(), "{st:?}");
    println!(
        "no-op sync at 1000 services: {:.3} ms (no nft call)",
        ms(noop)
    );
    p.delete_table().unwrap();
}
