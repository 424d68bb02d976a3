//! Turn "what is applied" and "what is wanted" into one nft transaction
//! that touches only what changed.
//!
//! Order inside the transaction (each step only references objects that
//! exist at that point):
//! 1. on bootstrap: add the table, the four maps and every base chain
//!    (`add` is a no-op for objects that exist with the same definition);
//! 2. delete map elements that are gone or point elsewhere;
//! 3. flush chains whose contents changed or that are going away;
//! 4. delete sets that are gone (their users were flushed in 3);
//! 5. add new sets, then new chains;
//! 6. add the rules of new and changed chains (first rule carries the
//!    content hash comment);
//! 7. add new or changed map elements;
//! 8. delete chains that are gone.
//!
//! Unchanged chains and elements are not mentioned at all, so their
//! kernel handles survive.

use std::borrow::Cow;

use nftables::expr::{Expression, Verdict};
use nftables::schema::{
    Chain, Element, FlushObject, NfCmd, NfListObject, NfObject, Rule, Set, SetFlag, SetType,
    SetTypeValue, Table,
};
use nftables::stmt::JumpTarget;
use nftables::types::{NfChainPolicy, NfFamily};
use serde_json::{Value, json};

use super::ruleset::{Applied, ChainDef, HASH_PREFIX, MapName, Ruleset};

/// Counts of what one transaction changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    pub chains_added: usize,
    pub chains_rewritten: usize,
    pub chains_deleted: usize,
    pub elements_added: usize,
    pub elements_deleted: usize,
    pub sets_added: usize,
    pub sets_deleted: usize,
    /// Chains left untouched.
    pub chains_unchanged: usize,
    /// The incremental transaction failed (kernel state differed from
    /// what was believed) and the table was rebuilt from scratch.
    pub full_reload: bool,
}

impl SyncStats {
    /// True when the transaction changes nothing.
    pub fn is_noop(&self) -> bool {
        self.chains_added == 0
            && self.chains_rewritten == 0
            && self.chains_deleted == 0
            && self.elements_added == 0
            && self.elements_deleted == 0
            && self.sets_added == 0
            && self.sets_deleted == 0
    }
}

/// One transaction: the `nftables` array of a `nft -j -f -` document.
pub(crate) struct Tx {
    pub table: String,
    pub objects: Vec<Value>,
}

impl Tx {
    fn cmd(&mut self, c: NfCmd<'static>) {
        // Serializing these plain data types cannot fail; if it ever did,
        // the null makes nft refuse the whole transaction (an error, not
        // a partial apply).
        self.objects
            .push(serde_json::to_value(NfObject::CmdObject(c)).unwrap_or(Value::Null));
    }

    /// The crate's `Map` cannot say `map: verdict` (its `SetType` lacks
    /// it), so maps are written as JSON directly.
    fn add_map(&mut self, m: MapName) {
        let key: &[&str] = if m.by_address() {
            &["ipv4_addr", "inet_proto", "inet_service"]
        } else {
            &["inet_proto", "inet_service"]
        };
        self.objects.push(json!({"add": {"map": {
            "family": "ip",
            "table": self.table,
            "name": m.as_str(),
            "type": key,
            "map": "verdict",
        }}}));
    }

    pub(crate) fn table_obj(&self) -> Table<'static> {
        Table {
            family: NfFamily::IP,
            name: Cow::Owned(self.table.clone()),
            handle: None,
        }
    }

    fn chain_obj(&self, name: &str, def: Option<&ChainDef>) -> Chain<'static> {
        let base = def.and_then(|d| d.base);
        Chain {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            newname: None,
            handle: None,
            _type: base.map(|b| b.kind),
            hook: base.map(|b| b.hook),
            prio: base.map(|b| b.prio),
            dev: None,
            policy: base.map(|_| NfChainPolicy::Accept),
        }
    }

    fn set_obj(&self, name: &str, timeout: Option<u32>) -> Set<'static> {
        Set {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: Cow::Owned(name.to_string()),
            handle: None,
            set_type: SetTypeValue::Single(SetType::Ipv4Addr),
            policy: None,
            // nft 1.0.6's JSON parser knows no `dynamic` flag; the kernel
            // needs none for `update @set` on a timeout set.
            flags: timeout.map(|_| [SetFlag::Timeout].into_iter().collect()),
            elem: None,
            timeout,
            gc_interval: None,
            size: None,
            comment: None,
        }
    }

    fn element(&self, m: MapName, key: Expression<'static>) -> Element<'static> {
        Element {
            family: NfFamily::IP,
            table: Cow::Owned(self.table.clone()),
            name: m.as_str().into(),
            elem: Cow::Owned(vec![key]),
        }
    }
}

/// Build the transaction taking `old` to `new`. With `bootstrap`, the
/// table, maps and base chains are (re)declared first.
pub(crate) fn diff(table: &str, old: &Applied, new: &Ruleset, bootstrap: bool) -> (Tx, SyncStats) {
    let mut tx = Tx {
        table: table.to_string(),
        objects: Vec::new(),
    };
    let mut st = SyncStats::default();
    if bootstrap {
        tx.cmd(NfCmd::Add(NfListObject::Table(tx.table_obj())));
        for m in MapName::ALL {
            tx.add_map(m);
        }
    }
    // 2. elements gone or changed
    for (k, target) in &old.elems {
        if new.elems.get(k) != Some(target) {
            tx.cmd(NfCmd::Delete(NfListObject::Element(
                tx.element(k.0, k.1.expr()),
            )));
            st.elements_deleted += 1;
        }
    }
    // 3. flush changed or removed chains that exist
    let mut rewrite = Vec::new();
    for (name, hash) in &old.chains {
        match new.chains.get(name) {
            Some(def) if def.hash == *hash => st.chains_unchanged += 1,
            Some(_) => {
                rewrite.push(name.clone());
                st.chains_rewritten += 1;
                let c = tx.chain_obj(name, None);
                tx.cmd(NfCmd::Flush(FlushObject::Chain(c)));
            }
            None => {
                st.chains_deleted += 1;
                let c = tx.chain_obj(name, None);
                tx.cmd(NfCmd::Flush(FlushObject::Chain(c)));
            }
        }
    }
    // 4. sets gone
    for name in &old.sets {
        if !new.sets.contains_key(name) {
            tx.cmd(NfCmd::Delete(NfListObject::Set(Box::new(
                tx.set_obj(name, None),
            ))));
            st.sets_deleted += 1;
        }
    }
    // 5. new sets, new chains (base chains always on bootstrap)
    for (name, timeout) in &new.sets {
        if !old.sets.contains(name) {
            tx.cmd(NfCmd::Add(NfListObject::Set(Box::new(
                tx.set_obj(name, Some(*timeout)),
            ))));
            st.sets_added += 1;
        }
    }
    for (name, def) in &new.chains {
        let exists = old.chains.contains_key(name);
        if !exists {
            st.chains_added += 1;
            rewrite.push(name.clone());
        }
        if !exists || (bootstrap && def.base.is_some()) {
            tx.cmd(NfCmd::Add(NfListObject::Chain(
                tx.chain_obj(name, Some(def)),
            )));
        }
    }
    // 6. rules of new and changed chains
    for name in &rewrite {
        let Some(def) = new.chains.get(name) else {
            continue;
        };
        for (i, stmts) in def.rules.iter().enumerate() {
            let rule = Rule {
                family: NfFamily::IP,
                table: Cow::Owned(tx.table.clone()),
                chain: Cow::Owned(name.clone()),
                expr: Cow::Owned(stmts.clone()),
                handle: None,
                index: None,
                comment: (i == 0).then(|| Cow::Owned(format!("{HASH_PREFIX}{}", def.hash))),
            };
            tx.cmd(NfCmd::Add(NfListObject::Rule(rule)));
        }
    }
    // 7. elements new or changed
    for (k, target) in &new.elems {
        if old.elems.get(k) != Some(target) {
            let pair = Expression::List(vec![
                k.1.expr(),
                Expression::Verdict(Verdict::Goto(JumpTarget {
                    target: Cow::Owned(target.clone()),
                })),
            ]);
            tx.cmd(NfCmd::Add(NfListObject::Element(tx.element(k.0, pair))));
            st.elements_added += 1;
        }
    }
    // 8. chains gone
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let c = tx.chain_obj(name, None);
            tx.cmd(NfCmd::Delete(NfListObject::Chain(c)));
        }
    }
    (tx, st)
}

/// The naive alternative: delete the whole table and declare everything
/// again, in one transaction (the benchmark's baseline, and the recovery
/// path when an incremental transaction fails).
pub(crate) fn full(table: &str, new: &Ruleset) -> (Tx, SyncStats) {
    let (mut tx, st) = diff(table, &Applied::default(), new, true);
    let mut head = Tx {
        table: table.to_string(),
        objects: Vec::new(),
    };
    head.cmd(NfCmd::Add(NfListObject::Table(tx.table_obj())));
    head.cmd(NfCmd::Delete(NfListObject::Table(tx.table_obj())));
    head.objects.append(&mut tx.objects);
    tx.objects = head.objects;
    (tx, st)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::service::model::{Protocol, ServicePort, ServiceSpec};
    use crate::service::ruleset::build;

    fn svc(name: &str, last: u8, eps: &[u8]) -> ServiceSpec {
        ServiceSpec {
            namespace: "ns".into(),
            name: name.into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, last),
            ports: vec![ServicePort {
                protocol: Protocol::Tcp,
                port: 80,
                node_port: None,
                endpoints: eps
                    .iter()
                    .map(|e| format!("10.244.0.{e}:8080").parse().unwrap())
                    .collect(),
            }],
            affinity: None,
        }
    }

    #[test]
    fn bootstrap_declares_verdict_maps() {
        let r = build(&[svc("a", 1, &[2])], 0x4000);
        let (tx, _) = diff("herd", &Applied::default(), &r, true);
        let maps: Vec<&Value> = tx
            .objects
            .iter()
            .filter_map(|o| o["add"].get("map"))
            .collect();
        assert_eq!(maps.len(), 4);
        assert!(maps.iter().all(|m| m["map"] == "verdict"));
        assert!(tx.objects.iter().all(|o| !o.is_null()));
    }

    #[test]
    fn same_input_is_a_noop() {
        let r = build(&[svc("a", 1, &[2, 3])], 0x4000);
        let (tx, st) = diff("herd", &r.applied(), &r, false);
        assert!(st.is_noop(), "{st:?}");
        assert!(tx.objects.is_empty());
    }

    #[test]
    fn endpoint_change_touches_only_that_service() {
        let old = build(&[svc("a", 1, &[2, 3]), svc("b", 2, &[4])], 0x4000);
        let new = build(&[svc("a", 1, &[2, 5]), svc("b", 2, &[4])], 0x4000);
        let (tx, st) = diff("herd", &old.applied(), &new, false);
        // svc-a rewritten, ep 5 added, ep 3 deleted; no map element change.
        assert_eq!(st.chains_rewritten, 1, "{st:?}");
        assert_eq!(st.chains_added, 1);
        assert_eq!(st.chains_deleted, 1);
        assert_eq!(st.elements_added + st.elements_deleted, 0);
        let json = serde_json::to_string(&tx.objects).unwrap();
        assert!(!json.contains("ns/b/"), "{json}");
    }

    #[test]
    fn losing_all_endpoints_moves_the_element_to_reject() {
        let old = build(&[svc("a", 1, &[2])], 0x4000);
        let new = build(&[svc("a", 1, &[])], 0x4000);
        let (_, st) = diff("herd", &old.applied(), &new, false);
        assert_eq!(st.elements_deleted, 1);
        assert_eq!(st.elements_added, 1);
        assert_eq!(st.chains_deleted, 2);
    }
}
