//! The nftables objects a set of Services needs, built in memory (no I/O).
//!
//! Layout of table `ip herd` (modelled on kube-proxy's nftables mode):
//! - maps `services` (`ipv4_addr . inet_proto . inet_service : verdict`)
//!   and `nodeports` (`inet_proto . inet_service : verdict`) point at the
//!   per-service chains; `no-endpoint-services` / `no-endpoint-nodeports`
//!   point ports without ready endpoints at `reject-chain`.
//! - base chains: `nat-prerouting` (prerouting, dstnat) and `nat-output`
//!   (output, -100) jump to `services`; `nat-postrouting` (srcnat)
//!   masquerades packets carrying the masquerade mark; `filter-input`,
//!   `filter-forward`, `filter-output` (priority filter) send new
//!   connections to ports without endpoints to `reject-chain` (TCP reset,
//!   ICMP port unreachable otherwise).
//! - `svc-<ns>/<name>/<proto>/<port>`: sessionAffinity checks, then
//!   `numgen random mod N vmap { i : goto ep-… }`.
//! - `ext-…` (NodePort): set the masquerade mark, then `goto svc-…`.
//! - `ep-…__<ip>/<port>`: mark hairpin traffic (a pod reaching itself),
//!   refresh the affinity set, `dnat to ip:port`.
//! - `aff<secs>-…__<ip>/<port>`: per-endpoint dynamic set of client
//!   addresses with the affinity timeout (the timeout is in the name, so a
//!   changed timeout is a new set and new chain contents).
//!
//! Chain names depend only on identity (service, port, endpoint), so a
//! changed endpoint list rewrites the one service chain that changed.
//! Each chain carries a content hash in its first rule's comment
//! (`herd:<hash>`), which lets a restarted proxy tell unchanged chains
//! from the kernel listing alone.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::{Ipv4Addr, SocketAddrV4};

use nftables::expr::{
    BinaryOperation, CT, Expression, Fib, FibFlag, FibResult, Meta, MetaKey, NamedExpression,
    NgMode, Numgen, Payload, PayloadField, Prefix, SetItem, Verdict,
};
use nftables::stmt::{
    JumpTarget, Mangle, Match, NAT, Operator, Reject, RejectType, Set as SetStmt, SetOp, Statement,
    VerdictMap,
};
use nftables::types::{NfChainType, NfHook, RejectCode};
use sha2::{Digest, Sha256};

use super::model::{Protocol, ServiceSpec};

/// Prefix of the content-hash comment on a chain's first rule.
pub(crate) const HASH_PREFIX: &str = "herd:";
pub(crate) const REJECT_CHAIN: &str = "reject-chain";

/// One of the four verdict maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum MapName {
    Services,
    Nodeports,
    NoEndpointServices,
    NoEndpointNodeports,
}

impl MapName {
    pub(crate) const ALL: [MapName; 4] = [
        MapName::Services,
        MapName::Nodeports,
        MapName::NoEndpointServices,
        MapName::NoEndpointNodeports,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            MapName::Services => "services",
            MapName::Nodeports => "nodeports",
            MapName::NoEndpointServices => "no-endpoint-services",
            MapName::NoEndpointNodeports => "no-endpoint-nodeports",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<MapName> {
        MapName::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Keyed by address too, or by protocol and port only.
    pub(crate) fn by_address(self) -> bool {
        matches!(self, MapName::Services | MapName::NoEndpointServices)
    }
}

/// A map element's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum ElemKey {
    Vip(Ipv4Addr, Protocol, u16),
    Port(Protocol, u16),
}

impl ElemKey {
    pub(crate) fn expr(self) -> Expression<'static> {
        let parts = match self {
            ElemKey::Vip(ip, p, port) => vec![s(ip.to_string()), s(p.as_str()), num(port)],
            ElemKey::Port(p, port) => vec![s(p.as_str()), num(port)],
        };
        Expression::Named(NamedExpression::Concat(parts))
    }
}

/// Hook of a base chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BaseHook {
    pub kind: NfChainType,
    pub hook: NfHook,
    pub prio: i32,
}

/// A chain: its hook (base chains) and rules.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ChainDef {
    pub base: Option<BaseHook>,
    pub rules: Vec<Vec<Statement<'static>>>,
    pub hash: String,
}

/// Everything the table should hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Ruleset {
    pub chains: BTreeMap<String, ChainDef>,
    /// Affinity sets: name -> timeout in seconds.
    pub sets: BTreeMap<String, u32>,
    /// (map, key) -> target chain.
    pub elems: BTreeMap<(MapName, ElemKey), String>,
}

/// What is (believed to be) in the kernel: chain hashes, set names, map
/// elements. Built from a [`Ruleset`] after a successful apply, or from
/// the kernel listing at start-up (unknown chain contents hash to "").
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Applied {
    pub chains: BTreeMap<String, String>,
    pub sets: BTreeSet<String>,
    pub elems: BTreeMap<(MapName, ElemKey), String>,
}

impl Ruleset {
    pub(crate) fn applied(&self) -> Applied {
        Applied {
            chains: self
                .chains
                .iter()
                .map(|(n, c)| (n.clone(), c.hash.clone()))
                .collect(),
            sets: self.sets.keys().cloned().collect(),
            elems: self.elems.clone(),
        }
    }
}

fn s(v: impl Into<String>) -> Expression<'static> {
    Expression::String(Cow::Owned(v.into()))
}

fn num(v: impl Into<u32>) -> Expression<'static> {
    Expression::Number(v.into())
}

fn field(protocol: &'static str, name: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: name.into(),
        },
    )))
}

fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn cmp(left: Expression<'static>, op: Operator, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match { left, right, op })
}

fn goto(target: &str) -> Statement<'static> {
    Statement::Goto(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

fn vmap_named(key: Expression<'static>, map: MapName) -> Statement<'static> {
    Statement::VerdictMap(VerdictMap {
        key,
        data: s(format!("@{}", map.as_str())),
    })
}

fn vip_key() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        field("ip", "daddr"),
        meta(MetaKey::L4proto),
        field("th", "dport"),
    ]))
}

fn port_key() -> Expression<'static> {
    Expression::Named(NamedExpression::Concat(vec![
        meta(MetaKey::L4proto),
        field("th", "dport"),
    ]))
}

/// `fib daddr type local ip daddr != 127.0.0.0/8`
fn local_not_loopback() -> Vec<Statement<'static>> {
    let fib = Expression::Named(NamedExpression::Fib(Fib {
        result: FibResult::Type,
        flags: HashSet::from([FibFlag::Daddr]),
    }));
    let lo = Expression::Named(NamedExpression::Prefix(Prefix {
        addr: Box::new(s("127.0.0.0")),
        len: 8,
    }));
    vec![
        cmp(fib, Operator::EQ, s("local")),
        cmp(field("ip", "daddr"), Operator::NEQ, lo),
    ]
}

fn ct_new() -> Statement<'static> {
    let ct = Expression::Named(NamedExpression::CT(CT {
        key: "state".into(),
        family: None,
        dir: None,
    }));
    cmp(ct, Operator::IN, s("new"))
}

fn base(kind: NfChainType, hook: NfHook, prio: i32) -> Option<BaseHook> {
    Some(BaseHook { kind, hook, prio })
}

fn hash_of(base: Option<BaseHook>, rules: &[Vec<Statement<'static>>]) -> String {
    let mut h = Sha256::new();
    if let Some(b) = base {
        h.update(format!("{:?}/{:?}/{}", b.kind, b.hook, b.prio).as_bytes());
    }
    // Serializing these types cannot fail (no maps with non-string keys);
    // an error would only make the hash weaker, never wrong.
    h.update(serde_json::to_vec(rules).unwrap_or_default());
    let d = h.finalize();
    d[..8].iter().map(|b| format!("{b:02x}")).collect()
}

struct Builder {
    out: Ruleset,
}

impl Builder {
    fn chain(&mut self, name: String, base: Option<BaseHook>, rules: Vec<Vec<Statement<'static>>>) {
        let hash = hash_of(base, &rules);
        self.out.chains.insert(name, ChainDef { base, rules, hash });
    }
}

/// The full ruleset for `specs` (already validated) with masquerade mark
/// `mark`.
pub(crate) fn build(specs: &[ServiceSpec], mark: u32) -> Ruleset {
    let mut b = Builder {
        out: Ruleset::default(),
    };
    base_chains(&mut b, mark);
    for spec in specs {
        service(&mut b, spec);
    }
    b.out
}

fn base_chains(b: &mut Builder, mark: u32) {
    use NfChainType::{Filter, NAT as Nat};
    let mark_expr = || meta(MetaKey::Mark);
    b.chain(
        "nat-prerouting".into(),
        base(Nat, NfHook::Prerouting, -100),
        vec![vec![jump("services")]],
    );
    b.chain(
        "nat-output".into(),
        base(Nat, NfHook::Output, -100),
        vec![vec![jump("services")]],
    );
    let masked =
        Expression::BinaryOperation(Box::new(BinaryOperation::AND(mark_expr(), num(mark))));
    b.chain(
        "nat-postrouting".into(),
        base(Nat, NfHook::Postrouting, 100),
        vec![
            vec![
                cmp(masked, Operator::EQ, num(0u32)),
                Statement::Return(None),
            ],
            vec![Statement::Mangle(Mangle {
                key: mark_expr(),
                value: Expression::BinaryOperation(Box::new(BinaryOperation::XOR(
                    mark_expr(),
                    num(mark),
                ))),
            })],
            vec![Statement::Masquerade(None)],
        ],
    );
    b.chain(
        "mark-for-masquerade".into(),
        None,
        vec![vec![Statement::Mangle(Mangle {
            key: mark_expr(),
            value: Expression::BinaryOperation(Box::new(BinaryOperation::OR(vec![
                mark_expr(),
                num(mark),
            ]))),
        })]],
    );
    let mut nodeport_rule = local_not_loopback();
    nodeport_rule.push(vmap_named(port_key(), MapName::Nodeports));
    b.chain(
        "services".into(),
        None,
        vec![
            vec![vmap_named(vip_key(), MapName::Services)],
            nodeport_rule,
        ],
    );
    b.chain(
        REJECT_CHAIN.into(),
        None,
        vec![
            vec![
                cmp(meta(MetaKey::L4proto), Operator::EQ, s("tcp")),
                Statement::Reject(Some(Reject::new(Some(RejectType::TCPReset), None))),
            ],
            vec![Statement::Reject(Some(Reject::new(
                Some(RejectType::ICMP),
                Some(RejectCode::PortUnreach),
            )))],
        ],
    );
    b.chain(
        "service-endpoints-check".into(),
        None,
        vec![vec![vmap_named(vip_key(), MapName::NoEndpointServices)]],
    );
    let mut np_check = local_not_loopback();
    np_check.push(vmap_named(port_key(), MapName::NoEndpointNodeports));
    b.chain("nodeport-endpoints-check".into(), None, vec![np_check]);
    let checks = |both: bool| {
        let mut r = vec![vec![ct_new(), jump("service-endpoints-check")]];
        if both {
            r.push(vec![ct_new(), jump("nodeport-endpoints-check")]);
        }
        r
    };
    b.chain(
        "filter-input".into(),
        base(Filter, NfHook::Input, 0),
        checks(true),
    );
    b.chain(
        "filter-forward".into(),
        base(Filter, NfHook::Forward, 0),
        checks(false),
    );
    b.chain(
        "filter-output".into(),
        base(Filter, NfHook::Output, 0),
        checks(true),
    );
}

fn ep_suffix(ep: &SocketAddrV4) -> String {
    format!("__{}/{}", ep.ip(), ep.port())
}

fn service(b: &mut Builder, spec: &ServiceSpec) {
    let affinity = spec
        .affinity
        .map(|t| t.as_secs().min(u64::from(u32::MAX)) as u32);
    for p in &spec.ports {
        let id = format!("{}/{}/{}/{}", spec.namespace, spec.name, p.protocol, p.port);
        let vip = ElemKey::Vip(spec.cluster_ip, p.protocol, p.port);
        let np = p.node_port.map(|n| ElemKey::Port(p.protocol, n));
        if p.endpoints.is_empty() {
            b.out
                .elems
                .insert((MapName::NoEndpointServices, vip), REJECT_CHAIN.into());
            if let Some(np) = np {
                b.out
                    .elems
                    .insert((MapName::NoEndpointNodeports, np), REJECT_CHAIN.into());
            }
            continue;
        }
        let svc_chain = format!("svc-{id}");
        let mut svc_rules = Vec::new();
        let mut picks = Vec::new();
        for (i, ep) in p.endpoints.iter().enumerate() {
            let ep_chain = format!("ep-{id}{}", ep_suffix(ep));
            let mut rules = vec![vec![
                cmp(field("ip", "saddr"), Operator::EQ, s(ep.ip().to_string())),
                jump("mark-for-masquerade"),
            ]];
            if let Some(secs) = affinity {
                let set = format!("aff{secs}-{id}{}", ep_suffix(ep));
                svc_rules.push(vec![
                    cmp(field("ip", "saddr"), Operator::EQ, s(format!("@{set}"))),
                    goto(&ep_chain),
                ]);
                rules.push(vec![Statement::Set(SetStmt {
                    op: SetOp::Update,
                    elem: field("ip", "saddr"),
                    set: Cow::Owned(format!("@{set}")),
                })]);
                b.out.sets.insert(set, secs);
            }
            rules.push(vec![
                cmp(meta(MetaKey::L4proto), Operator::EQ, s(p.protocol.as_str())),
                Statement::DNAT(Some(NAT {
                    addr: Some(s(ep.ip().to_string())),
                    family: None,
                    port: Some(num(ep.port())),
                    flags: None,
                })),
            ]);
            let idx = u32::try_from(i).unwrap_or(u32::MAX);
            picks.push(SetItem::Mapping(
                num(idx),
                Expression::Verdict(Verdict::Goto(JumpTarget {
                    target: Cow::Owned(ep_chain.clone()),
                })),
            ));
            b.chain(ep_chain, None, rules);
        }
        let n = u32::try_from(picks.len()).unwrap_or(u32::MAX);
        svc_rules.push(vec![Statement::VerdictMap(VerdictMap {
            key: Expression::Named(NamedExpression::Numgen(Numgen {
                mode: NgMode::Random,
                ng_mod: n,
                offset: None,
            })),
            data: Expression::Named(NamedExpression::Set(picks)),
        })]);
        b.chain(svc_chain.clone(), None, svc_rules);
        b.out
            .elems
            .insert((MapName::Services, vip), svc_chain.clone());
        if let Some(np) = np {
            let ext = format!("ext-{id}");
            b.chain(
                ext.clone(),
                None,
                vec![vec![jump("mark-for-masquerade")], vec![goto(&svc_chain)]],
            );
            b.out.elems.insert((MapName::Nodeports, np), ext);
        }
    }
}
