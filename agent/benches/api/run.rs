//! The three sides, run one after another so they never compete for the
//! CPUs: each starts its processes, fills and measures them, and stops
//! them (cluster [`Drop`]: agents, etcd members, namespaces) before the
//! next one starts.
//!
//! - `embedded`: 3 herd nodes on the embedded Raft store.
//! - `etcd`: the same 3 herd nodes, every one started with `--datastore
//!   etcd://… --datastore-prefix …` on a 3-member etcd that runs in the
//!   cluster's bridge namespace ([`ClusterOpts::etcd`]).
//! - `raw`: a 3-member etcd on 127.0.0.1 alone (the floor), filled through
//!   its gRPC-gateway JSON API with the pod JSON the last herd side stored
//!   (generated pod JSON when no herd side ran); plus `etcdctl`.
//!
//! All etcds here come from the same fixture
//! ([`herd_integration::etcd::EtcdCluster`]): same version, flags
//! (`--heartbeat-interval 50 --election-timeout 500`, fsync on) and
//! temp-dir filesystem.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use herd_integration::agent::cluster::{Cluster, ClusterOpts};
use herd_integration::etcd::{EtcdCluster, EtcdOpts};
use tokio::runtime::Runtime;

use crate::client::{Target, tls_from_kubeconfig};
use crate::etcdctl::{self, Etcdctl};
use crate::herd::{Herd, pod};
use crate::measure::{self, Lat, Plan, Results, Rng, Side, rss_kib};

/// Which store serves the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// herd on its embedded Raft store.
    Embedded,
    /// herd with `--datastore etcd://…`.
    Etcd,
    /// etcd alone, through its JSON gateway.
    Raw,
}

impl Kind {
    /// `embedded,etcd,raw` (any subset, any order) into the run order
    /// embedded, etcd, raw.
    pub fn parse_list(s: &str) -> Result<Vec<Kind>> {
        let mut kinds = vec![];
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let k = match name {
                "embedded" => Kind::Embedded,
                "etcd" => Kind::Etcd,
                "raw" => Kind::Raw,
                other => bail!("--sides: {other:?} is not embedded, etcd or raw"),
            };
            if !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        if kinds.is_empty() {
            bail!("--sides: no side given");
        }
        kinds.sort();
        Ok(kinds)
    }
}

/// One herd side's results.
#[derive(Clone, Debug, Default)]
pub struct HerdRun {
    pub results: Results,
    /// Node 0 leads: the Raft leader (embedded) or the scheduler/controllers
    /// leader through the etcd lease (on etcd).
    pub node0_leads: bool,
    pub rss_before: u64,
    pub rss_filled: u64,
    pub rss_after: u64,
    /// Every node's agent after the reads.
    pub rss_nodes: Vec<u64>,
    /// On etcd: the datastore's members before the pods and after the reads.
    pub etcd_rss_before: Vec<u64>,
    pub etcd_rss_after: Vec<u64>,
    /// The etcd member that leads (on etcd).
    pub etcd_leader: Option<usize>,
    /// The stored version of every pod (what raw etcd is filled with).
    pub stored: Vec<Bytes>,
    /// Cluster start (and etcd start) to all nodes ready.
    pub start_secs: f64,
}

fn etcd_rss(e: Option<&EtcdCluster>) -> Vec<u64> {
    e.map(|e| (0..e.len()).filter_map(|i| e.pid(i)).map(rss_kib).collect())
        .unwrap_or_default()
}

/// Starts a 3-node herd cluster (on etcd with `on_etcd`), measures node
/// 0's API, and tears the cluster down.
pub fn herd(herd_bin: &str, rt: &Runtime, plan: &Plan, on_etcd: bool) -> Result<HerdRun> {
    let opts = ClusterOpts {
        etcd: on_etcd.then(EtcdOpts::default),
        ..ClusterOpts::default()
    };
    let name = if on_etcd { "benchapietcd" } else { "benchapi" };
    let t0 = Instant::now();
    let cluster = Cluster::start(herd_bin, name, 3, opts)
        .with_context(|| format!("start the herd cluster (on etcd: {on_etcd})"))?;
    let start_secs = t0.elapsed().as_secs_f64();
    let node0 = cluster.node(0);
    let target = Target {
        addr: ([127, 0, 0, 1], 6443).into(),
        netns: Some(node0.netns().to_path_buf()),
        tls: Some(tls_from_kubeconfig(&node0.kubeconfig()?)?),
    };
    let pid = node0.pid().context("node 0 not running")?;
    let mut run = HerdRun {
        node0_leads: cluster.leader()? == 0,
        rss_before: rss_kib(pid),
        etcd_rss_before: etcd_rss(cluster.etcd()),
        etcd_leader: cluster.etcd().map(EtcdCluster::leader).transpose()?,
        start_secs,
        ..HerdRun::default()
    };
    let side = Arc::new(Herd::new(target, pid, plan.objects));
    rt.block_on(async {
        side.create_namespace().await?;
        measure::fill(&side, plan, &mut run.results).await?;
        run.rss_filled = rss_kib(pid);
        measure::reads(&side, plan, &mut run.results).await
    })?;
    run.rss_after = rss_kib(pid);
    run.rss_nodes = (0..cluster.len())
        .filter_map(|i| cluster.node(i).pid())
        .map(rss_kib)
        .collect();
    run.etcd_rss_after = etcd_rss(cluster.etcd());
    run.stored = side
        .stored
        .lock()
        .map_err(|_| anyhow::anyhow!("stored pods lock poisoned"))?
        .clone();
    drop(side);
    drop(cluster);
    Ok(run)
}

/// The raw etcd side's results.
#[derive(Clone, Debug, Default)]
pub struct RawRun {
    pub results: Results,
    pub member_leads: bool,
    pub serializable_get: Lat,
    pub etcdctl: Etcdctl,
    pub rss_before: Vec<u64>,
    pub rss_after: Vec<u64>,
    /// The values came from a herd side (else generated pod JSON).
    pub herd_values: bool,
}

fn gateway(endpoint: &str) -> Result<Target> {
    let addr: SocketAddr = endpoint
        .strip_prefix("http://")
        .with_context(|| format!("etcd endpoint {endpoint} is not http://"))?
        .parse()
        .with_context(|| format!("etcd endpoint {endpoint}"))?;
    Ok(Target {
        addr,
        netns: None,
        tls: None,
    })
}

/// Starts a 3-member etcd on 127.0.0.1, measures the member with the role
/// `leader` (leader or a follower) through its JSON gateway and with
/// `etcdctl`, and stops it. `values`: herd's stored pods, if a herd side
/// ran.
pub fn raw(
    rt: &Runtime,
    plan: &Plan,
    values: Option<Vec<Bytes>>,
    leader: bool,
    etcdctl_samples: usize,
) -> Result<RawRun> {
    let herd_values = values.is_some();
    let values = Arc::new(values.unwrap_or_else(|| {
        (0..plan.objects)
            .map(|i| Bytes::from(pod(i).to_string()))
            .collect()
    }));
    let etcds = EtcdCluster::start(EtcdOpts::default()).context("start raw etcd")?;
    let lead = etcds.leader()?;
    let member = if leader {
        lead
    } else {
        (lead + 1) % etcds.len()
    };
    let mut run = RawRun {
        member_leads: member == lead,
        rss_before: etcd_rss(Some(&etcds)),
        herd_values,
        ..RawRun::default()
    };
    let side = |serializable| -> Result<Arc<crate::etcd::Etcd>> {
        Ok(Arc::new(crate::etcd::Etcd {
            target: gateway(&etcds.endpoint(member))?,
            pid: etcds.pid(member).context("etcd member not running")?,
            values: values.clone(),
            serializable,
        }))
    };
    let linear = side(false)?;
    rt.block_on(async {
        measure::fill(&linear, plan, &mut run.results).await?;
        measure::reads(&linear, plan, &mut run.results).await
    })?;
    let local = side(true)?;
    run.serializable_get = rt.block_on(async {
        let mut c = local.conn().await?;
        let mut lat = Lat::default();
        let mut rng = Rng::new(7);
        for _ in 0..plan.get_samples {
            let i = rng.below(plan.objects);
            let t0 = Instant::now();
            local.get(&mut c, i).await?;
            lat.0.push(t0.elapsed());
        }
        anyhow::Ok(lat)
    })?;
    run.rss_after = etcd_rss(Some(&etcds));
    run.etcdctl = etcdctl::measure(
        &etcds.endpoint(member),
        &values,
        plan.objects,
        etcdctl_samples,
    )?;
    drop(etcds);
    Ok(run)
}
