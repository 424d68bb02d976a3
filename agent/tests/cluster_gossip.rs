//! Gossip membership over real UDP sockets on 127.0.0.1 (no root needed):
//! join through a seed with metadata, metadata updates, failure detection
//! of a killed member within the bound the tuning implies, graceful leave,
//! a member with another cluster key, and forged datagrams.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use herd_agent::cluster::gossip::frame::Frame;
use herd_agent::cluster::gossip::seal::{MAGIC, Sealer, VERSION};
use herd_agent::cluster::gossip::{
    Capacity, Gossip, GossipConfig, MemberEvent, MemberState, NodeMeta, Taint, Tuning,
};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::time::Instant;

const KEY: [u8; 32] = [0x42; 32];
/// Scheduling slack on a loaded 2-core CI machine, on top of the bound the
/// tuning implies.
const SLACK: Duration = Duration::from_secs(3);
/// Time for members to converge after joining.
const CONVERGE: Duration = Duration::from_secs(10);

fn meta(name: &str) -> NodeMeta {
    NodeMeta {
        name: name.into(),
        rpc_addr: "127.0.0.1:7001".into(),
        api_addr: "127.0.0.1:6443".into(),
        pod_cidr: String::new(),
        capacity: Capacity {
            cpu_millis: 2000,
            memory_bytes: 4 << 30,
            pods: 110,
        },
        labels: vec![("kubernetes.io/hostname".into(), name.into())],
        taints: vec![Taint {
            key: "dedicated".into(),
            value: "gossip".into(),
            effect: "NoSchedule".into(),
        }],
        version: "test".into(),
    }
}

fn name(pid_tag: &str, i: usize) -> String {
    format!("{pid_tag}-{}-{i}", std::process::id())
}

async fn start(name: &str, key: [u8; 32], seeds: Vec<SocketAddr>) -> Gossip {
    let mut cfg = GossipConfig::new("127.0.0.1:0".parse().unwrap(), key, meta(name));
    cfg.seeds = seeds;
    Gossip::start(cfg).await.unwrap()
}

/// Starts `n` members, all seeded with the first, and waits until every
/// member sees every other with metadata.
async fn cluster(tag: &str, n: usize) -> Vec<Gossip> {
    let seed = start(&name(tag, 0), KEY, vec![]).await;
    let seed_addr = seed.addr();
    let mut members = vec![seed];
    for i in 1..n {
        members.push(start(&name(tag, i), KEY, vec![seed_addr]).await);
    }
    eventually(CONVERGE, "all members see each other", || {
        members.iter().all(|g| {
            let m = g.members();
            m.len() == n && m.iter().all(|x| x.state == MemberState::Alive)
        })
    })
    .await;
    members
}

async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn drain(rx: &mut broadcast::Receiver<MemberEvent>) -> Vec<MemberEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

/// Waits for `want` on `rx`, skipping other events.
async fn wait_event(
    rx: &mut broadcast::Receiver<MemberEvent>,
    limit: Duration,
    want: &MemberEvent,
) {
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(e)) if &e == want => return,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!("event stream: {e}"),
            Err(_) => panic!("no {want:?} within {limit:?}"),
        }
    }
}

fn state_of(g: &Gossip, name: &str) -> Option<MemberState> {
    g.members()
        .into_iter()
        .find(|m| m.name == name)
        .map(|m| m.state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_join_through_one_seed_with_metadata_and_updates_propagate() {
    let members = cluster("join", 4).await;
    for g in &members {
        for m in g.members() {
            assert_eq!(
                m.meta,
                meta(&m.name),
                "metadata of {} as seen by a peer",
                m.name
            );
        }
    }
    let mut rx = members[0].subscribe();
    let target = name("join", 2);
    let mut updated = meta(&target);
    updated.pod_cidr = "10.244.2.0/24".into();
    updated.labels.push(("zone".into(), "b".into()));
    members[2].set_meta(updated.clone()).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the metadata update reaches everyone",
        || {
            members
                .iter()
                .all(|g| g.members().iter().any(|m| m.meta == updated))
        },
    )
    .await;
    wait_event(
        &mut rx,
        Duration::from_secs(2),
        &MemberEvent::Updated(updated),
    )
    .await;
    for g in &members {
        let s = g.stats();
        assert!(s.accepted > 0 && s.sent > 0, "{s:?}");
        assert_eq!((s.dropped_auth, s.dropped_decode), (0, 0), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_is_declared_down_and_leaving_member_is_left() {
    let mut members = cluster("kill", 4).await;
    let tuning = Tuning::default();
    let bound = tuning.detection_bound(4) + SLACK;
    let mut rxs: Vec<_> = members.iter().map(|g| g.subscribe()).collect();

    let victim = name("kill", 3);
    drop(members.pop());
    rxs.pop();
    let took = eventually(
        bound,
        "every survivor declares the killed member down",
        || {
            members
                .iter()
                .all(|g| state_of(g, &victim) == Some(MemberState::Down))
        },
    )
    .await;
    eprintln!("killed member declared down everywhere after {took:?} (bound {bound:?})");
    for rx in &mut rxs {
        let events = drain(rx);
        assert!(
            events.contains(&MemberEvent::Down(victim.clone())),
            "{events:?}"
        );
        assert!(
            !events.contains(&MemberEvent::Left(victim.clone())),
            "{events:?}"
        );
    }

    let leaver = name("kill", 2);
    let g = members.pop().unwrap();
    rxs.pop();
    g.leave().await.unwrap();
    eventually(Duration::from_secs(2), "the leave is seen as Left", || {
        members
            .iter()
            .all(|g| state_of(g, &leaver) == Some(MemberState::Left))
    })
    .await;
    for rx in &mut rxs {
        let events = drain(rx);
        assert!(
            events.contains(&MemberEvent::Left(leaver.clone())),
            "{events:?}"
        );
        assert!(
            !events.contains(&MemberEvent::Down(leaver.clone())),
            "{events:?}"
        );
    }
    // The two survivors still see each other alive.
    for g in &members {
        let alive = g
            .members()
            .iter()
            .filter(|m| m.state == MemberState::Alive)
            .count();
        assert_eq!(alive, 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_with_another_key_cannot_join() {
    let members = cluster("key", 2).await;
    let intruder_name = name("key", 9);
    let intruder = start(&intruder_name, [0x13; 32], vec![members[0].addr()]).await;
    // The intruder re-announces while alone; wait until the seed refused a few.
    eventually(
        Duration::from_secs(5),
        "the seed drops the intruder's datagrams",
        || members[0].stats().dropped_auth >= 2,
    )
    .await;
    assert_eq!(intruder.members().len(), 1, "the intruder sees only itself");
    assert!(intruder.stats().accepted == 0, "{:?}", intruder.stats());
    for g in &members {
        assert_eq!(g.members().len(), 2);
        assert!(state_of(g, &intruder_name).is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_datagrams_are_dropped_and_counted() {
    let members = cluster("forge", 2).await;
    let target = members[0].addr();
    let before = members[0].stats();
    let raw = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sealer = Sealer::new(&KEY, 1500);
    let other = Sealer::new(&[0x99; 32], 1500);

    let mut random = vec![0u8; 200];
    rand::fill(&mut random[..]);
    let mut header_garbage = vec![MAGIC, VERSION];
    header_garbage.extend_from_slice(&random[..80]);
    let request = Frame::MetaRequest {
        reply_to: raw.local_addr().unwrap(),
    }
    .encode()
    .unwrap();
    let wrong_key = other.seal(&request).unwrap();
    let good = sealer.seal(&request).unwrap();
    let truncated = good[..good.len() - 3].to_vec();
    let short = good[..10].to_vec();
    let mut oversized = vec![MAGIC, VERSION];
    oversized.resize(4000, 7);
    let auth_failures = [
        random.clone(),
        header_garbage,
        wrong_key,
        truncated,
        short,
        oversized,
    ];
    // Opened fine but not decodable: unknown kind, garbage foca packet,
    // garbage metadata record.
    let decode_failures = [
        sealer.seal(&[9, 1, 2, 3]).unwrap(),
        sealer.seal(&[0, 0xff, 0xfe, 0xfd, 0x01]).unwrap(),
        sealer.seal(&[2, 0xff, 0xff, 0xff]).unwrap(),
    ];
    for d in auth_failures.iter().chain(decode_failures.iter()) {
        raw.send_to(d, target).await.unwrap();
    }
    eventually(
        Duration::from_secs(5),
        "every forged datagram is counted",
        || {
            let s = members[0].stats();
            s.dropped_auth - before.dropped_auth == auth_failures.len() as u64
                && s.dropped_decode - before.dropped_decode == decode_failures.len() as u64
        },
    )
    .await;

    // The one valid sealed datagram (a metadata request) is answered.
    raw.send_to(&good, target).await.unwrap();
    let mut buf = [0u8; 2048];
    let (len, _) = tokio::time::timeout(Duration::from_secs(5), raw.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = sealer.open(&buf[..len]).unwrap();
    match Frame::decode(&reply).unwrap() {
        Frame::Meta(record) => assert_eq!(record.meta, meta(&name("forge", 0))),
        other => panic!("unexpected reply {other:?}"),
    }

    for g in &members {
        let m = g.members();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|x| x.state == MemberState::Alive), "{m:?}");
    }
}
