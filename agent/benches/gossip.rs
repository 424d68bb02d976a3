//! Gossip failure detection and dissemination (issue 6 goal: with 1,000
//! members, every member knows of a failure in under 5 s).
//!
//! `cargo bench -p herd-agent --bench gossip [-- --members 1000 --failures 10
//! --small 50 --small-failures 10 --seeds 5 --udp 60 --udp-failures 10 --baseline 1]`
//!
//! (1) Simulated network (`cluster::gossip::sim`): `--members` real foca
//! cores with real sealing, simulated time, 0.2-1.0 ms one-way latency.
//! The members start converged; `--failures` members are killed one after
//! another; for each, the simulated time from the kill until the first
//! member declares it down and until every live member does.
//! (1b) The same at `--small` members over `--seeds` seeds (the straggler
//! case: a member the epidemic missed).
//! (2) Real UDP on 127.0.0.1: `--udp` `Gossip` tasks in one tokio runtime
//! joined through one seed; `--udp-failures` members dropped (no leave)
//! one after another; wall-clock times from the drop until the first and
//! the last survivor report `Down`.
//! Each prints median/p99/max and datagrams/bytes per member per second.
//! With `--baseline 1` (the default) each runs twice: as the daemon runs
//! (down digests on) and with the down digests off (`down_digest_for` 0,
//! plain foca dissemination), the baseline.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use herd_agent::cluster::gossip::sim::{Sim, SimConfig, member_name};
use herd_agent::cluster::gossip::{
    Gossip, GossipConfig, MemberEvent, MemberState, NodeMeta, Tuning,
};

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn print_tuning(t: &Tuning) {
    println!(
        "  tuning: probe_period {} probe_rtt {} indirect {} suspicion {} gossip {} x{} max_tx {} down digests {}",
        ms(t.probe_period),
        ms(t.probe_rtt),
        t.indirect_probes,
        ms(t.suspicion()),
        ms(t.gossip_interval),
        t.gossip_fanout,
        t.max_transmissions(),
        if t.down_digest_for.is_zero() {
            "off".to_string()
        } else {
            format!("{} s", t.down_digest_for.as_secs())
        }
    );
}

struct Row {
    first: Vec<Duration>,
    all: Vec<Duration>,
}

fn report(label: &str, row: &mut Row, goal: Option<Duration>) {
    row.first.sort();
    row.all.sort();
    println!(
        "  {label:<28} first-detect median {:>8}  p99 {:>8} | everyone-knows median {:>8}  p99 {:>8}  max {:>8}{}",
        ms(pct(&row.first, 0.5)),
        ms(pct(&row.first, 0.99)),
        ms(pct(&row.all, 0.5)),
        ms(pct(&row.all, 0.99)),
        ms(pct(&row.all, 1.0)),
        goal.map(|g| format!("  (goal < {})", ms(g)))
            .unwrap_or_default()
    );
}

fn label(digests: bool) -> &'static str {
    if digests {
        "down digests on"
    } else {
        "BASELINE digests off"
    }
}

/// One simulated run; returns the detection times (first, everyone).
fn simulated(members: usize, failures: usize, digests: bool, seed: u64, verbose: bool) -> Row {
    let mut cfg = SimConfig::lan(members);
    cfg.seed = seed;
    if !digests {
        cfg.tuning.down_digest_for = Duration::ZERO;
    }
    if verbose {
        println!(
            "(1) simulated network: {members} members, latency {}-{} us, loss {}, sealing {}, {}",
            cfg.latency.as_micros(),
            (cfg.latency + cfg.jitter).as_micros(),
            cfg.loss,
            cfg.seal,
            label(digests)
        );
        print_tuning(&cfg.tuning);
    }
    let wall = Instant::now();
    let mut sim = Sim::new(cfg).unwrap();
    let warmup = Duration::from_secs(5);
    sim.run_until(warmup);
    let traffic0 = sim.traffic();
    let t_traffic0 = sim.now();
    let mut row = Row {
        first: vec![],
        all: vec![],
    };
    let mut incomplete = 0;
    for f in 0..failures {
        let victim = (f * 97 + 13) % members;
        let t0 = sim.now();
        sim.kill(victim);
        let alive = sim.alive();
        let times = sim.run_until_all_know(&member_name(victim), t0, Duration::from_secs(60));
        if times.len() < alive {
            incomplete += 1;
        }
        let last = times.last().copied().unwrap_or_default();
        if last >= Duration::from_secs(5) {
            let second = times.len().saturating_sub(2);
            println!(
                "    slow: seed {seed} failure {f} (node-{victim}): first {}, all but one {}, everyone {}, {} of {alive} know",
                ms(times.first().copied().unwrap_or_default()),
                ms(times.get(second).copied().unwrap_or_default()),
                ms(last),
                times.len()
            );
        }
        row.first.push(times.first().copied().unwrap_or_default());
        row.all.push(last);
        // Let the cluster settle before the next failure.
        let settle = sim.now() + Duration::from_secs(2);
        sim.run_until(settle);
    }
    let traffic = sim.traffic();
    let secs = (sim.now() - t_traffic0).as_secs_f64();
    let per = (members as f64) * secs;
    if !verbose {
        return row;
    }
    report(
        &format!("{failures} failures (sim time)"),
        &mut row,
        Some(Duration::from_secs(5)),
    );
    println!(
        "  traffic: {:.1} datagrams and {:.0} bytes per member per second; {} failures not known by every member within 60 s; {:.1} s wall for {:.0} s simulated",
        (traffic.datagrams - traffic0.datagrams) as f64 / per,
        (traffic.bytes - traffic0.bytes) as f64 / per,
        incomplete,
        wall.elapsed().as_secs_f64(),
        sim.now().as_secs_f64()
    );
    row
}

/// Many failures at a small size over several seeds: the worst case.
fn simulated_small(members: usize, failures: usize, seeds: u64, digests: bool) {
    println!(
        "(1b) simulated, {members} members, {seeds} seeds x {failures} failures, {}:",
        label(digests)
    );
    let mut all = Row {
        first: vec![],
        all: vec![],
    };
    for seed in 1..=seeds {
        let row = simulated(members, failures, digests, seed, false);
        all.first.extend(row.first);
        all.all.extend(row.all);
    }
    let slow = all
        .all
        .iter()
        .filter(|d| **d >= Duration::from_secs(5))
        .count();
    report(
        &format!("{} failures (sim time)", all.all.len()),
        &mut all,
        Some(Duration::from_secs(5)),
    );
    println!("  failures known by everyone only after 5 s or more: {slow}");
}

fn meta(name: &str) -> NodeMeta {
    NodeMeta {
        name: name.into(),
        rpc_addr: "127.0.0.1:7001".into(),
        api_addr: "127.0.0.1:6443".into(),
        pod_cidr: "10.244.0.0/24".into(),
        version: "bench".into(),
        ..NodeMeta::default()
    }
}

async fn real_udp(n: usize, failures: usize, digests: bool) {
    let mut tuning = Tuning::lan(u32::try_from(n).unwrap());
    if !digests {
        tuning.down_digest_for = Duration::ZERO;
    }
    println!(
        "(2) real UDP on 127.0.0.1: {n} members, one tokio runtime (2 worker threads), {}",
        label(digests)
    );
    print_tuning(&tuning);
    let key = [7u8; 32];
    let mk = |i: usize, seeds| {
        let mut cfg = GossipConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            key,
            meta(&format!("udp-{i}")),
        );
        cfg.seeds = seeds;
        cfg.tuning = tuning.clone();
        cfg
    };
    let t_join = Instant::now();
    let seed = Gossip::start(mk(0, vec![])).await.unwrap();
    let seed_addr = seed.addr();
    let mut members: Vec<Option<Gossip>> = vec![Some(seed)];
    for i in 1..n {
        members.push(Some(Gossip::start(mk(i, vec![seed_addr])).await.unwrap()));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !members.iter().flatten().all(|g| {
        g.members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count()
            == n
    }) {
        assert!(
            Instant::now() < deadline,
            "members did not converge in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "  join: {n} members converged (all see all with metadata) in {}",
        ms(t_join.elapsed())
    );

    let stats0: Vec<_> = members.iter().flatten().map(|g| g.stats()).collect();
    let t_stats0 = Instant::now();
    let mut row = Row {
        first: vec![],
        all: vec![],
    };
    for f in 0..failures {
        let victim = 1 + (f * 7) % (n - 1);
        if members[victim].is_none() {
            continue;
        }
        let victim_name = format!("udp-{victim}");
        let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
        let mut watchers = Vec::new();
        for g in members.iter().flatten() {
            if g.members()[0].name == victim_name {
                continue;
            }
            let mut rx = g.subscribe();
            let seen = seen.clone();
            let want = MemberEvent::Down(victim_name.clone());
            watchers.push(tokio::spawn(async move {
                while let Ok(e) = rx.recv().await {
                    if e == want {
                        seen.lock().unwrap().push(Instant::now());
                        return;
                    }
                }
            }));
        }
        let survivors = watchers.len();
        let t0 = Instant::now();
        members[victim] = None;
        let deadline = t0 + Duration::from_secs(60);
        while seen.lock().unwrap().len() < survivors && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for w in watchers {
            w.abort();
        }
        let mut times: Vec<Duration> = seen.lock().unwrap().iter().map(|t| *t - t0).collect();
        times.sort();
        if times.len() < survivors {
            println!(
                "  failure {f}: only {}/{survivors} survivors reported it in 60 s",
                times.len()
            );
        }
        row.first.push(times.first().copied().unwrap_or_default());
        row.all.push(times.last().copied().unwrap_or_default());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let secs = t_stats0.elapsed().as_secs_f64();
    let (mut sent, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
    let mut counted = 0usize;
    for (g, s0) in members.iter().zip(stats0.iter()) {
        if let Some(g) = g {
            let s = g.stats();
            sent += s.sent - s0.sent;
            bytes += s.sent_bytes - s0.sent_bytes;
            dropped += s.dropped_auth + s.dropped_decode;
            counted += 1;
        }
    }
    report(&format!("{failures} failures (wall clock)"), &mut row, None);
    let per = counted as f64 * secs;
    println!(
        "  traffic: {:.1} datagrams and {:.0} bytes per member per second; {dropped} datagrams dropped",
        sent as f64 / per,
        bytes as f64 / per
    );
}

fn main() {
    let members = arg("--members", 1000);
    let failures = arg("--failures", 10);
    let small = arg("--small", 50);
    let small_failures = arg("--small-failures", 10);
    let seeds = arg("--seeds", 5) as u64;
    let udp = arg("--udp", 60);
    let udp_failures = arg("--udp-failures", 10);
    let modes: &[bool] = if arg("--baseline", 1) == 1 {
        &[true, false]
    } else {
        &[true]
    };
    println!("gossip failure detection benchmark");
    for &digests in modes {
        if members > 0 {
            simulated(members, failures, digests, 1, true);
        }
    }
    for &digests in modes {
        if small > 0 {
            simulated_small(small, small_failures, seeds, digests);
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for &digests in modes {
        if udp > 0 {
            rt.block_on(real_udp(udp.max(3), udp_failures, digests));
        }
    }
}
