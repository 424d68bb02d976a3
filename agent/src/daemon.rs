//! `herd agent`: wiring the store, the API server and the kubelet.
//!
//! OWNED BY THE LEAD. The flags are fixed here so the CLI and the tests can
//! rely on them.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use herd_images::ImageStore;
use herd_net::BridgeConfig;
use herd_runtime::cgroups::{CgroupLayout, detect_layout};
use herd_runtime::oci::{RuntimeBinary, RuntimeKind, default_search_path, select_runtime};
use herd_runtime::pod::{PodRuntime, RuntimeConfig};

use crate::api::server::ApiState;
use crate::api::services::ServiceNetwork;
use crate::cluster::bootstrap::has_identity;
use crate::cluster::gossip::{Capacity, Tuning};
use crate::cluster::manager::ManagerConfig;
use crate::cluster::node::{ClusterConfig, ClusterNode};
use crate::kubelet::backoff::BackoffConfig;
use crate::kubelet::config::KubeletConfig;
use crate::kubelet::convert::SandboxOptions;
use crate::kubelet::events::EventRecorder;
use crate::kubelet::network::PodNetworking;
use crate::kubelet::{Ctx, Kubelet};
use crate::store::Datastore;
use crate::store::local::LocalStore;

/// `herd agent` flags (the node's configuration). The state root is the
/// global `--root-dir`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "HERD_NODE_NAME")]
    pub node_name: Option<String>,
    /// Runtime state (sandboxes, monitors; tmpfs).
    #[arg(long, default_value = "/run/herd")]
    pub run_dir: PathBuf,
    /// CRI container logs.
    #[arg(long, default_value = "/var/log/pods")]
    pub log_dir: PathBuf,
    /// The cgroup filesystem root.
    #[arg(long, default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,
    /// herd's cgroup name under the root (several agents on one machine
    /// use different ones).
    #[arg(long, default_value = "herd")]
    pub cgroup_name: String,
    /// Static pod manifests.
    #[arg(long, default_value = "/etc/herd/manifests")]
    pub manifests: PathBuf,
    /// HTTPS address of the API, authenticated (the root-only unix socket
    /// `<root>/agent.sock` is always served). `none` disables TCP.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub listen: String,
    /// Container runtime: runc, crun, youki or a path (herd's own
    /// backend: a monitor per pod drives the OCI runtime), or `containerd`
    /// (containers as containerd tasks, images in containerd's store).
    #[arg(long, default_value = "runc")]
    pub runtime: String,
    /// The per-pod monitor binary. Default: `herd-monitor` next to `herd`
    /// when it speaks this agent's protocol, else `herd monitor` (this
    /// binary re-executed, several times its memory per pod).
    #[arg(long, env = "HERD_MONITOR")]
    pub monitor_path: Option<PathBuf>,
    /// containerd's gRPC socket (with `--runtime containerd`).
    #[arg(long, default_value = "/run/containerd/containerd.sock")]
    pub containerd_address: PathBuf,
    /// containerd namespace for herd's containers and images (with
    /// `--runtime containerd`); a namespace another client uses is refused.
    #[arg(long, default_value = "herd")]
    pub containerd_namespace: String,
    /// The node's pod CIDR (bridge + IPAM).
    #[arg(long, default_value = "10.88.0.0/16")]
    pub pod_cidr: ipnet::Ipv4Net,
    /// The node bridge's name.
    #[arg(long, default_value = "herd0")]
    pub bridge: String,
    /// Masquerade pod traffic leaving the pod CIDR (nftables).
    #[arg(long)]
    pub masquerade: bool,
    /// Nameservers written to pods' resolv.conf (default: the host's).
    #[arg(long, value_delimiter = ',')]
    pub dns: Vec<String>,
    /// CrashLoopBackOff: first delay, cap, and how long a container must
    /// run before its backoff resets.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub backoff_base: std::time::Duration,
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub backoff_max: std::time::Duration,
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub backoff_reset: std::time::Duration,
    /// Hard eviction threshold on memory.available (`100Mi`, `5%`).
    #[arg(long, default_value = "100Mi")]
    pub eviction_memory_available: String,
    /// How often node pressure is checked.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub eviction_interval: std::time::Duration,
    /// Where `meminfo` is read (a root parameter, for tests).
    #[arg(long, default_value = "/proc")]
    pub proc_root: PathBuf,
    /// How often the pod lifecycle is relisted from the runtime.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub relist_interval: std::time::Duration,
    /// Create a new cluster with this node as its first member (a no-op on
    /// a node that already belongs to one). The join token is written to
    /// `<root-dir>/cluster/token`.
    #[arg(long, conflicts_with = "join")]
    pub init: bool,
    /// Join the cluster through a member's peer address (`ip[:port]`).
    #[arg(long, value_name = "ADDR", requires = "token")]
    pub join: Option<String>,
    /// The join token (`K10<hash>::<secret>`) from the first node's
    /// `<root-dir>/cluster/token`.
    #[arg(long, env = "HERD_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The address other nodes reach this one at (default: the source
    /// address of the default route).
    #[arg(long)]
    pub advertise_address: Option<IpAddr>,
    /// TCP port of the node-to-node gRPC (mutual TLS: join and Raft).
    #[arg(long, default_value_t = 7443)]
    pub peer_port: u16,
    /// UDP port of gossip.
    #[arg(long, default_value_t = 7946)]
    pub gossip_port: u16,
    /// Cluster mode: each node's pod CIDR is a block of this range,
    /// assigned by the leader (`--pod-cidr` is then ignored).
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: ipnet::Ipv4Net,
    /// Prefix length of each node's block of the cluster CIDR.
    #[arg(long, default_value_t = 24)]
    pub node_cidr_mask_size: u8,
    /// Service ClusterIPs are allocated from this range.
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: ipnet::Ipv4Net,
    /// How other nodes' pod CIDRs are reached: host-gw routes where the
    /// node is on a connected subnet and VXLAN elsewhere (auto), or one of
    /// them for every node.
    #[arg(long, value_enum, default_value = "auto")]
    pub overlay: crate::cluster::routes::Overlay,
    /// Gossip probe period: each node probes one other per period (failure
    /// detection in a few periods plus the suspicion time).
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub gossip_probe_period: std::time::Duration,
    /// Time a suspected node has to refute before it is declared down (a
    /// floor: large clusters wait longer, scaled by log10 of their size).
    #[arg(long, default_value = "1500ms", value_parser = parse_duration)]
    pub gossip_suspicion: std::time::Duration,
    /// MTU of the pod bridge and veths (default 1500, 1450 with
    /// `--overlay vxlan`: the overlay costs 50 bytes).
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    #[command(flatten)]
    pub datastore: crate::store::etcd::DatastoreArgs,
    /// With `--datastore`: TTL of the leader election's etcd lease. A
    /// leader that dies is replaced this long after its last keep-alive.
    /// etcd raises it to its own minimum (1.5 x its election timeout: 2 s
    /// with etcd's defaults).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub leader_lease_ttl: std::time::Duration,
}

impl AgentArgs {
    fn bootstrap(&self) -> crate::cluster::bootstrap::Bootstrap {
        use crate::cluster::bootstrap::Bootstrap;
        match (&self.join, &self.token) {
            (Some(addr), Some(token)) => Bootstrap::Join {
                addr: with_port(addr, self.peer_port),
                token: token.clone(),
            },
            _ if self.init => Bootstrap::Init,
            _ => Bootstrap::Existing,
        }
    }
}

/// `addr` with `port` appended when it has none.
fn with_port(addr: &str, port: u16) -> String {
    if addr.parse::<SocketAddr>().is_ok() {
        return addr.to_string();
    }
    match addr.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => format!("[{ip}]:{port}"),
        Ok(ip) => format!("{ip}:{port}"),
        Err(_) if addr.contains(':') => addr.to_string(),
        Err(_) => format!("{addr}:{port}"),
    }
}

/// The source address of the default route (no packet is sent).
fn default_route_address() -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    let ip = s.local_addr().ok()?.ip();
    (!ip.is_unspecified() && !ip.is_loopback()).then_some(ip)
}

/// Parses `500ms`, `10s`, `5m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// The TCP listen address, `None` for `none`.
pub fn listen_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    if s == "none" {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|e| format!("invalid --listen {s:?}: {e}"))
}

/// The address other hosts reach the API at: `listen` with an unspecified
/// IP becomes `public` (the node's address) or 127.0.0.1.
pub fn public_api_addr(listen: SocketAddr, public: Option<IpAddr>) -> SocketAddr {
    if listen.ip().is_unspecified() {
        SocketAddr::new(
            public.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)),
            listen.port(),
        )
    } else {
        listen
    }
}

/// The CA behind the API: the cluster's, or for a single node one of its
/// own in `<root>/pki` (created on first start).
fn api_pki(
    root_dir: &Path,
    cluster: Option<&crate::cluster::node::ClusterNode>,
    listen: Option<SocketAddr>,
    public: Option<IpAddr>,
) -> anyhow::Result<crate::api::server::kubeconfig::ApiPki> {
    use crate::cluster::pki::ClusterCa;
    let ca = match cluster {
        Some(node) => {
            let ca = node.identity.secrets.ca();
            ClusterCa::from_parts(ca.cert_pem(), &ca.key_pem(), &node.identity.dir)
                .context("loading the cluster CA")?
        }
        None => {
            let dir = root_dir.join("pki");
            if dir.join(crate::cluster::pki::CA_CERT_FILE).exists() {
                ClusterCa::load(&dir).context("loading the API CA")?
            } else {
                let ca = ClusterCa::create("herd").context("creating the API CA")?;
                ca.save(&dir).context("saving the API CA")?;
                ca
            }
        }
    };
    let addr = public_api_addr(
        listen.unwrap_or(SocketAddr::from(([127, 0, 0, 1], 6443))),
        public,
    );
    Ok(crate::api::server::kubeconfig::ApiPki {
        ca: Arc::new(ca),
        server_url: format!("https://{addr}"),
    })
}

/// glibc gives every thread that allocates an arena of its own (up to 8
/// per core) and keeps each arena's high-water mark: a 10,000-pod LIST
/// rendered on one blocking thread, then another, pins a few hundred MB per
/// arena. Two arenas bound the agent's RSS (measured by `scripts/bench-api.sh`).
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called before the runtime starts any thread; mallopt only
    // changes the allocator's tuning.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Host facts the kubelet needs.
fn node_memory_bytes(proc_root: &Path) -> u64 {
    std::fs::read_to_string(proc_root.join("meminfo"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(8 << 30, |kb| kb * 1024)
}

/// The host's resolv.conf, minus loopback nameservers (pods cannot reach
/// the host's 127.0.0.53).
fn host_dns() -> (Vec<String>, Vec<String>, Vec<String>) {
    let (mut ns, mut search, mut opts) = (Vec::new(), Vec::new(), Vec::new());
    let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for line in text.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("nameserver") => {
                if let Some(a) = it.next()
                    && a.parse::<IpAddr>().is_ok_and(|ip| !ip.is_loopback())
                {
                    ns.push(a.to_string());
                }
            }
            Some("search") => search = it.map(str::to_string).collect(),
            Some("options") => opts.extend(it.map(str::to_string)),
            _ => {}
        }
    }
    (ns, search, opts)
}

fn runtime_binary(args: &AgentArgs, hybrid_or_v1: bool) -> anyhow::Result<RuntimeBinary> {
    let state_root = args.run_dir.join("runtime");
    if args.runtime.contains('/') {
        let path = PathBuf::from(&args.runtime);
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("runc");
        return Ok(RuntimeBinary {
            kind: RuntimeKind::parse(name).unwrap_or(RuntimeKind::Runc),
            path,
            root: state_root,
        });
    }
    let kind = RuntimeKind::parse(&args.runtime).with_context(|| {
        format!(
            "unknown --runtime {:?} (runc, crun, youki or a path)",
            args.runtime
        )
    })?;
    let (bin, skipped) = select_runtime(kind, &default_search_path(), &state_root, hybrid_or_v1)?;
    for s in skipped {
        tracing::warn!("runtime {} skipped: {}", s.kind.name(), s.reason);
    }
    Ok(bin)
}

/// `herd agent`: runs until SIGTERM/SIGINT. Pods keep running when it
/// stops (their monitors hold them); the next start re-adopts them.
pub fn run(root_dir: &Path, args: AgentArgs) -> anyhow::Result<()> {
    limit_malloc_arenas();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("herd-agent")
        .build()
        .context("starting the async runtime")?;
    rt.block_on(run_async(root_dir, args))
}

/// The store and, in cluster mode, the cluster node behind it.
struct Backing {
    store: Arc<dyn Datastore>,
    cluster: Option<Arc<ClusterNode>>,
}

async fn open_backing(
    root_dir: &Path,
    args: &AgentArgs,
    node_name: &str,
    node_memory: u64,
) -> anyhow::Result<Backing> {
    let cluster_dir = root_dir.join("cluster");
    let cluster_mode = args.init || args.join.is_some() || has_identity(&cluster_dir);
    let etcd = args.datastore.etcd().map_err(anyhow::Error::msg)?;
    if etcd.is_some() && !cluster_mode {
        anyhow::bail!(
            "--datastore needs cluster mode: start the first node with --init, the others with --join ADDR --token T"
        );
    }
    if args.leader_lease_ttl < Duration::from_secs(1) || args.leader_lease_ttl.subsec_nanos() != 0 {
        anyhow::bail!(
            "--leader-lease-ttl {:?}: etcd leases are whole seconds, at least 1s",
            args.leader_lease_ttl
        );
    }
    if cluster_mode {
        check_datastore_record(&cluster_dir, etcd.as_ref())?;
    }
    if !cluster_mode {
        let store = LocalStore::open(
            &root_dir.join("store.redb"),
            &args.run_dir.join("secrets.redb"),
        )
        .context("opening the store")?;
        return Ok(Backing {
            store: Arc::new(store),
            cluster: None,
        });
    }
    let advertise = match args.advertise_address.or_else(default_route_address) {
        Some(ip) => ip,
        None => anyhow::bail!(
            "cannot find this node's address (no default route): pass --advertise-address"
        ),
    };
    if args.gossip_probe_period < Duration::from_millis(50) {
        anyhow::bail!(
            "--gossip-probe-period {:?} is too short (at least 50ms)",
            args.gossip_probe_period
        );
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let node = ClusterNode::start(ClusterConfig {
        dir: cluster_dir,
        raft_dir: root_dir.join("raft"),
        node_name: node_name.to_string(),
        advertise,
        peer_port: args.peer_port,
        gossip_port: args.gossip_port,
        bootstrap: args.bootstrap(),
        capacity: Capacity {
            cpu_millis: cpus * 1000,
            memory_bytes: node_memory,
            pods: crate::kubelet::node::MAX_PODS,
        },
        tuning: Tuning {
            probe_period: args.gossip_probe_period,
            probe_rtt: (args.gossip_probe_period * 2 / 5).min(Duration::from_millis(200)),
            min_suspicion: args.gossip_suspicion,
            ..Tuning::default()
        },
        etcd: etcd.map(|e| (e, args.leader_lease_ttl)),
    })
    .await
    .context("starting the cluster node")?;
    let node = Arc::new(node);
    tracing::info!(node = %node_name, raft_id = node.id, %advertise, "waiting to be a member of the cluster");
    node.wait_member(Duration::from_secs(120))
        .await
        .context("joining the raft group")?;
    Ok(Backing {
        store: node.store.clone(),
        cluster: Some(node),
    })
}

/// Which store a cluster node's state is in, recorded in
/// `<root>/cluster/datastore` at each start: a node that used etcd and is
/// restarted without `--datastore` would otherwise come up on an empty
/// embedded store. Switching from the embedded store to etcd is allowed
/// (the migration path: `herd datastore export`, `import` into etcd, restart
/// every node with `--datastore`).
fn check_datastore_record(
    cluster_dir: &Path,
    etcd: Option<&crate::store::etcd::EtcdConfig>,
) -> anyhow::Result<()> {
    let file = cluster_dir.join("datastore");
    let now = match etcd {
        Some(e) => format!("etcd {}", e.prefix),
        None => "embedded".to_string(),
    };
    let before = std::fs::read_to_string(&file).unwrap_or_default();
    let before = before.trim();
    if before.starts_with("etcd") && etcd.is_none() {
        anyhow::bail!(
            "this node's cluster state is in etcd ({before}, recorded in {}): pass --datastore; to start over on the embedded store remove that file and {}",
            file.display(),
            cluster_dir.display()
        );
    }
    if before == "embedded" && etcd.is_some() {
        tracing::warn!(
            "switching this node from the embedded store to etcd: the embedded store is no longer used (move its objects with `herd datastore export` / `import`)"
        );
    }
    if before != now {
        std::fs::create_dir_all(cluster_dir)
            .and_then(|()| std::fs::write(&file, format!("{now}\n")))
            .with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}

/// Waits until the leader has given this node's Node object a pod CIDR.
async fn wait_pod_cidr(
    store: &Arc<dyn Datastore>,
    node_name: &str,
    timeout: Duration,
) -> anyhow::Result<ipnet::Ipv4Net> {
    let key = crate::store::Key::cluster(crate::api::Resource::Nodes, node_name);
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Ok(n) = store.get(&key)
            && let Some(cidr) = n.pointer("/spec/podCIDR").and_then(|v| v.as_str())
        {
            return cidr
                .parse()
                .with_context(|| format!("node {node_name}: invalid spec.podCIDR {cidr:?}"));
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("node {node_name} got no pod CIDR from the leader within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run_async(root_dir: &Path, args: AgentArgs) -> anyhow::Result<()> {
    let tcp = listen_addr(&args.listen).map_err(anyhow::Error::msg)?;
    let node_name = match &args.node_name {
        Some(n) => n.clone(),
        None => rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_ascii_lowercase(),
    };
    for d in [root_dir, &args.run_dir, &args.log_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let layout = detect_layout(&args.cgroup_root).context("detecting the cgroup layout")?;
    let containerd = args.runtime == "containerd";
    let runtime_bin = if containerd {
        // The shim drives runc (crun refuses hybrid hosts, as herd's own
        // selection knows).
        let mut a = args.clone();
        a.runtime = "runc".into();
        runtime_binary(&a, layout != CgroupLayout::Unified)?
    } else {
        runtime_binary(&args, layout != CgroupLayout::Unified)?
    };
    let node_memory = node_memory_bytes(&args.proc_root);
    let exe = std::env::current_exe().context("finding the herd binary")?;
    let monitor = herd_runtime::monitor::choose_monitor(args.monitor_path.as_deref(), &exe)
        .context("choosing the per-pod monitor")?;
    match &monitor.skipped {
        None => tracing::info!(exe = %monitor.command.exe.display(), "per-pod monitor"),
        Some(why) => tracing::info!(
            exe = %monitor.command.exe.display(),
            skipped = %why,
            "per-pod monitor: herd re-executed"
        ),
    }
    let cfg = RuntimeConfig {
        run_dir: args.run_dir.clone(),
        log_dir: args.log_dir.clone(),
        cgroup_root: args.cgroup_root.clone(),
        cgroup_base: args.cgroup_name.clone(),
        runtime: runtime_bin.clone(),
        monitor_exe: monitor.command.exe,
        monitor_args: monitor.command.args,
        node_memory_bytes: node_memory,
    };
    let runtime = if containerd {
        let cfg_c = herd_runtime::containerd::ContainerdConfig::new(
            &args.containerd_address,
            &args.containerd_namespace,
        );
        let client =
            tokio::task::spawn_blocking(move || herd_runtime::containerd::Client::connect(cfg_c))
                .await
                .context("connecting to containerd")??;
        tracing::info!(
            version = client.version(),
            namespace = client.namespace(),
            "containerd backend"
        );
        crate::kubelet::status::set_runtime("containerd", client.version().to_string());
        let images = herd_runtime::containerd::images::ContainerdImages::new(
            client,
            &root_dir.join("containerd-staging"),
        )
        .context("opening the containerd image store")?;
        let backend = herd_runtime::containerd::tasks::ContainerdBackend::new(
            images,
            exe,
            runtime_bin.path.clone(),
        );
        PodRuntime::with_backend(cfg, Box::new(backend))
    } else {
        let images =
            ImageStore::open(&root_dir.join("images")).context("opening the image store")?;
        crate::kubelet::status::set_runtime("herd", env!("CARGO_PKG_VERSION").to_string());
        PodRuntime::new(cfg, images)
    }
    .context("starting the pod runtime")?;
    let runtime = Arc::new(runtime);
    let Backing { store, cluster } = open_backing(root_dir, &args, &node_name, node_memory).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut background = Vec::new();
    // Cluster mode: the node registers first (through the leader), the
    // leader assigns its pod CIDR, then the pod network comes up on it.
    let pod_cidr = match &cluster {
        Some(node) => {
            let mcfg = ManagerConfig {
                cluster_cidr: args.cluster_cidr,
                node_prefix: args.node_cidr_mask_size,
                ..ManagerConfig::default()
            };
            background.push(tokio::spawn(crate::cluster::manager::run(
                node.clone(),
                mcfg,
                stop_rx.clone(),
            )));
            let (s, n, ip, proc_root) = (
                store.clone(),
                node_name.clone(),
                node.peer_addr.ip(),
                args.proc_root.clone(),
            );
            tokio::task::spawn_blocking(move || {
                crate::kubelet::node::register(
                    &*s,
                    &n,
                    Some(ip),
                    &proc_root,
                    jiff::Timestamp::now(),
                )
            })
            .await
            .context("registering this node")?
            .context("registering this node's Node object")?;
            let cidr = wait_pod_cidr(&store, &node_name, Duration::from_secs(60)).await?;
            if let Ok(obj) = store.get(&crate::store::Key::cluster(
                crate::api::Resource::Nodes,
                &node_name,
            )) {
                node.publish_node(
                    &obj,
                    tcp.map(|a| public_api_addr(a, Some(node.peer_addr.ip()))),
                )
                .await;
            }
            cidr
        }
        None => args.pod_cidr,
    };
    let vxlan_only = cluster.is_some() && args.overlay == crate::cluster::routes::Overlay::Vxlan;
    let network = PodNetworking::new(
        BridgeConfig {
            name: args.bridge.clone(),
            subnet: pod_cidr,
            masquerade: args.masquerade,
            // Pod-to-pod and pod-to-service traffic keeps its source.
            masquerade_exclude: match &cluster {
                Some(_) => vec![args.cluster_cidr, args.service_cidr],
                None => Vec::new(),
            },
            mtu: args.pod_mtu.unwrap_or(if vxlan_only {
                1500 - herd_net::vxlan::VXLAN_OVERHEAD
            } else {
                1500
            }),
            ..BridgeConfig::default()
        },
        &args.run_dir.join("net"),
    )
    .await
    .context("setting up the pod network")?;
    let network = Arc::new(network);
    if cluster.is_some()
        && let std::net::IpAddr::V4(gw) = network.gateway()
    {
        let conn = herd_net::connect_in(None)
            .await
            .context("netlink for the service route")?;
        if let Err(e) = crate::cluster::routes::ensure_service_route(
            conn.handle(),
            args.service_cidr,
            &args.bridge,
            gw,
        )
        .await
        {
            tracing::warn!(error = %e, "no route to the service CIDR; ClusterIPs need a default route on this node");
        }
    }
    let host_ip = match &cluster {
        Some(node) => Some(node.peer_addr.ip()),
        None => Some(network.gateway()),
    };
    let (dns_ns, dns_search, dns_opts) = if args.dns.is_empty() {
        host_dns()
    } else {
        (args.dns.clone(), Vec::new(), Vec::new())
    };
    let ctx = Ctx {
        cfg: KubeletConfig {
            node_name: node_name.clone(),
            pods_dir: root_dir.join("pods"),
            manifests_dir: Some(args.manifests.clone()),
            static_scan_interval: Duration::from_millis(250),
            backoff: BackoffConfig {
                base: args.backoff_base,
                max: args.backoff_max,
                reset: args.backoff_reset,
            },
            relist_interval: args.relist_interval,
            sandbox: SandboxOptions {
                dns_nameservers: dns_ns,
                dns_searches: dns_search,
                dns_options: dns_opts,
                default_pids_limit: None,
            },
            node_memory_bytes: node_memory,
            node_cpu_millis: std::thread::available_parallelism()
                .map_or(1000, |n| n.get() as u64 * 1000),
            eviction_memory_available: args.eviction_memory_available.clone(),
            eviction_interval: args.eviction_interval,
            proc_root: args.proc_root.clone(),
        },
        runtime: runtime.clone(),
        host_ip,
        network: Some(network),
        events: EventRecorder::start(store.clone(), node_name.clone()),
        store: store.clone(),
    };
    let state = ApiState {
        store: store.clone(),
        runtime: Some(runtime),
        node_name: node_name.clone(),
        // In a cluster the scheduler binds pods.
        bind_unscheduled: cluster.is_none(),
    };
    let socket = root_dir.join("agent.sock");
    let services = ServiceNetwork {
        cidr: args.service_cidr,
        ..ServiceNetwork::default()
    };
    let mut router = crate::api::server::router_with(state.clone(), services.clone());
    if let Some(node) = &cluster {
        let node = node.clone();
        router = router.merge(axum::Router::new().route(
            "/debug/cluster",
            axum::routing::get(move || {
                let node = node.clone();
                async move { axum::Json(node.status()) }
            }),
        ));
    }
    if let (Some(node), Some(addr)) = (&cluster, tcp) {
        let proxy = crate::api::server::nodeproxy::NodeProxy::new(
            node.identity.secrets.ca().cert_pem(),
            node.identity.node.cert_pem(),
            node.identity.node.key_pem(),
            addr.port(),
        )
        .map_err(|e| anyhow::anyhow!("setting up the proxy to other nodes: {e}"))?;
        router = router.layer(axum::Extension(proxy));
    }
    let public_ip = cluster.as_ref().map(|n| n.peer_addr.ip());
    let pki = api_pki(root_dir, cluster.as_deref(), tcp, public_ip)?;
    let unix_router = router.clone().merge(crate::api::server::local_routes(
        state.clone(),
        services.clone(),
        pki.clone(),
    ));
    let tcp = match tcp {
        Some(addr) => {
            let addresses: Vec<IpAddr> = public_ip.into_iter().chain(host_ip).collect();
            let first_service_ip = args.service_cidr.hosts().next().map(IpAddr::V4);
            let tls = pki
                .server_config(&node_name, &addresses, first_service_ip)
                .context("setting up the API's TLS")?;
            Some(crate::api::server::TcpServing {
                addr,
                tls,
                router: crate::api::server::authenticated(router, state.clone()),
            })
        }
        None => None,
    };
    let server = {
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            crate::api::server::serve(unix_router, &socket, tcp, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
        })
    };
    let mut kubelet = {
        let mut rx = stop_rx.clone();
        tokio::spawn(Kubelet::new(ctx).run(async move {
            let _ = rx.wait_for(|s| *s).await;
        }))
    };
    background.push(tokio::spawn(crate::proxy::run(
        store.clone(),
        herd_net::ProxyConfig::default(),
        stop_rx.clone(),
    )));
    match &cluster {
        Some(node) => {
            match node.peer_addr.ip() {
                std::net::IpAddr::V4(local) => {
                    background.push(tokio::spawn(crate::cluster::routes::run(
                        store.clone(),
                        crate::cluster::routes::RouteConfig {
                            me: node_name.clone(),
                            overlay: args.overlay,
                            local,
                            pod_cidr,
                        },
                        stop_rx.clone(),
                    )));
                }
                std::net::IpAddr::V6(_) => {
                    tracing::warn!(
                        "IPv6 node address: routes between nodes are IPv4-only; none set"
                    )
                }
            }
            let n = node.clone();
            background.push(tokio::spawn(crate::cluster::leader::run(
                move || n.leader_store(),
                node.leadership(),
                crate::controllers::all,
                crate::scheduler::run::RunConfig::default(),
                stop_rx.clone(),
            )));
        }
        None => {
            // A single node is its own leader: it registers its Node and
            // runs the controllers; the API binds unscheduled pods to it.
            crate::kubelet::node::register(
                &*store,
                &node_name,
                host_ip,
                &args.proc_root,
                jiff::Timestamp::now(),
            )
            .context("registering this node's Node object")?;
            background.push(crate::controllers::runner::run(
                store.clone(),
                crate::controllers::all(),
                stop_rx.clone(),
            ));
            let sched = crate::scheduler::run::run(
                store.clone(),
                crate::scheduler::run::RunConfig::default(),
                stop_rx.clone(),
            );
            background.push(tokio::spawn(async move {
                if let Err(e) = sched.await {
                    tracing::warn!("scheduler: {e}");
                }
            }));
        }
    }
    let mut server = server;
    tracing::info!(node = %node_name, "herd agent running");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    // Either half failing on its own stops the agent (pods keep running).
    let failed = tokio::select! {
        _ = term.recv() => None,
        _ = tokio::signal::ctrl_c() => None,
        k = &mut kubelet => Some(match k {
            Ok(Ok(())) => anyhow::anyhow!("the kubelet stopped"),
            Ok(Err(e)) => anyhow::Error::new(e).context("kubelet"),
            Err(e) => anyhow::anyhow!("kubelet task: {e}"),
        }),
        s = &mut server => Some(match s {
            Ok(Ok(())) => anyhow::anyhow!("the api server stopped"),
            Ok(Err(e)) => anyhow::Error::new(e).context("api server"),
            Err(e) => anyhow::anyhow!("api server task: {e}"),
        }),
    };
    tracing::info!("stopping (pods keep running)");
    let _ = stop_tx.send(true);
    if let Some(e) = failed {
        if let Some(node) = &cluster {
            node.shutdown().await;
        }
        return Err(e);
    }
    // Open watch and log streams would hold a graceful shutdown forever.
    match tokio::time::timeout(Duration::from_secs(2), &mut server).await {
        Ok(Ok(Err(e))) => tracing::warn!("api server: {e}"),
        Ok(_) => {}
        Err(_) => server.abort(),
    }
    let k = kubelet.await;
    if let Ok(Err(e)) = k {
        tracing::warn!("kubelet: {e}");
    }
    for task in background {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("a background task did not stop within 5 s");
        }
    }
    if let Some(node) = &cluster {
        node.shutdown().await;
    }
    Ok(())
}
