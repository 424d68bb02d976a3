//! The results table: herd on its embedded store, herd on etcd, and etcd
//! alone side by side per measure ("-" for a side that did not run or a
//! measure it does not have).

use crate::measure::{Lat, Plan, Results};
use crate::run::{HerdRun, RawRun};

#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub plan: Option<Plan>,
    pub embedded: Option<HerdRun>,
    pub on_etcd: Option<HerdRun>,
    pub raw: Option<RawRun>,
    pub load: String,
}

fn ms(l: &Lat, q: f64) -> String {
    l.pct(q)
        .map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
        .unwrap_or_else(|| "-".into())
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn mibs(kibs: &[u64]) -> String {
    kibs.iter().map(|k| mib(*k)).collect::<Vec<_>>().join(", ")
}

fn row(what: &str, cells: [String; 6]) {
    let [a, b, c, d, e, f] = cells;
    println!("{what:<40} {a:>10} {b:>10} {c:>10} {d:>10} {e:>10} {f:>10}");
}

fn role(leads: bool) -> &'static str {
    if leads { "leader" } else { "follower" }
}

/// p50 and p99 of one measure of a side, "-" when it did not run.
fn pair(r: Option<&Results>, f: impl Fn(&Results) -> &Lat) -> [String; 2] {
    match r {
        Some(r) => [ms(f(r), 0.5), ms(f(r), 0.99)],
        None => ["-".into(), "-".into()],
    }
}

/// One value in the p50 column of a side, "-" when it did not run.
fn one(r: Option<&Results>, f: impl Fn(&Results) -> String) -> [String; 2] {
    [r.map(f).unwrap_or_else(|| "-".into()), String::new()]
}

fn cells(a: [String; 2], b: [String; 2], c: [String; 2]) -> [String; 6] {
    let [a0, a1] = a;
    let [b0, b1] = b;
    let [c0, c1] = c;
    [a0, a1, b0, b1, c0, c1]
}

impl Report {
    fn sides(&self) -> [Option<&Results>; 3] {
        [
            self.embedded.as_ref().map(|h| &h.results),
            self.on_etcd.as_ref().map(|h| &h.results),
            self.raw.as_ref().map(|r| &r.results),
        ]
    }

    fn lat_row(&self, what: &str, f: impl Fn(&Results) -> &Lat + Copy) {
        let [h, o, e] = self.sides();
        row(what, cells(pair(h, f), pair(o, f), pair(e, f)));
    }

    fn one_row(&self, what: &str, f: impl Fn(&Results) -> String + Copy) {
        let [h, o, e] = self.sides();
        row(what, cells(one(h, f), one(o, f), one(e, f)));
    }

    /// A row only the raw etcd side has.
    fn raw_row(&self, what: &str, l: Option<&Lat>) {
        let none = || ["".to_string(), "".to_string()];
        let e = match l {
            Some(l) => [ms(l, 0.5), ms(l, 0.99)],
            None => ["-".into(), "-".into()],
        };
        row(what, cells(none(), none(), e));
    }

    pub fn print(&self) {
        let Some(p) = self.plan else { return };
        let mut ran = vec![];
        if self.embedded.is_some() {
            ran.push("herd 3 nodes (netns) on its embedded Raft store");
        }
        if self.on_etcd.is_some() {
            ran.push("herd 3 nodes on etcd 3.4 (3 members in the cluster's bridge netns)");
        }
        if self.raw.is_some() {
            ran.push("etcd 3.4 alone, 3 members (127.0.0.1)");
        }
        println!("\nAPI benchmark: {} pods; {}", p.objects, ran.join(" | "));
        let mut to = vec![];
        if let Some(h) = &self.embedded {
            to.push(format!(
                "herd embedded node 0 ({}, up in {:.1} s)",
                role(h.node0_leads),
                h.start_secs
            ));
        }
        if let Some(h) = &self.on_etcd {
            to.push(format!(
                "herd-on-etcd node 0 ({} of the etcd lease; etcd leader e{}, up in {:.1} s)",
                role(h.node0_leads),
                h.etcd_leader.map(|l| l.to_string()).unwrap_or("?".into()),
                h.start_secs
            ));
        }
        if let Some(r) = &self.raw {
            to.push(format!(
                "etcd member ({}), gRPC-gateway HTTP/JSON, {}",
                role(r.member_leads),
                if r.herd_values {
                    "values as herd stored them"
                } else {
                    "generated pod JSON (no herd side ran)"
                }
            ));
        }
        println!(
            "client (HTTP/1.1 keep-alive; herd: HTTPS + client cert) -> {}",
            to.join("; ")
        );
        println!(
            "samples: GET/update {}, LIST {}, watch {}; sides run one after another; load at end: {}",
            p.get_samples,
            p.list_samples,
            p.watch_samples,
            self.load.trim()
        );
        println!("command: {}\n", self.command);
        row(
            "measure",
            [
                "embed p50",
                "embed p99",
                "h/etcd p50",
                "h/etcd p99",
                "etcd p50",
                "etcd p99",
            ]
            .map(String::from),
        );
        let rate = |r: f64| format!("{r:.0}/s");
        self.one_row(
            &format!("create, 1 writer ({} objs)", p.serial.min(p.objects)),
            |r| rate(r.creates_serial),
        );
        self.one_row(
            &format!(
                "create, {} writers ({} objs)",
                p.writers,
                p.objects.saturating_sub(p.serial)
            ),
            |r| rate(r.creates_concurrent),
        );
        self.lat_row("GET one pod | range one key", |r| &r.get);
        self.raw_row(
            "  etcd range one key, serializable",
            self.raw.as_ref().map(|r| &r.serializable_get),
        );
        self.lat_row(&format!("LIST all {} | range prefix", p.objects), |r| {
            &r.list
        });
        self.one_row("  LIST body size", |r| {
            format!("{} KiB", r.list_bytes / 1024)
        });
        self.lat_row("LIST limit=500 | range limit 500", |r| &r.page);
        self.lat_row("update (PUT), sequential | put", |r| &r.update);
        self.lat_row("watch: event after write returned", |r| {
            &r.watch_after_return
        });
        self.lat_row("watch: event after write sent", |r| &r.watch_after_send);
        let ctl = self.raw.as_ref().map(|r| &r.etcdctl);
        self.raw_row("etcdctl get (process per op)", ctl.map(|c| &c.get));
        self.raw_row(
            "etcdctl get --prefix --limit 500 (proc)",
            ctl.map(|c| &c.page),
        );
        self.raw_row("etcdctl put (process per op)", ctl.map(|c| &c.put));
        println!();
        self.print_rss();
    }

    fn print_rss(&self) {
        let timeline = |r: &Results| {
            r.rss
                .iter()
                .map(|(phase, k)| format!("{phase} {}", mib(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        for (name, h) in [("embedded", &self.embedded), ("on etcd", &self.on_etcd)] {
            let Some(h) = h else { continue };
            println!(
                "RSS herd ({name}) node 0: {} before pods, {} after creates, {} after its reads; all nodes after reads: {}",
                mib(h.rss_before),
                mib(h.rss_filled),
                mib(h.rss_after),
                mibs(&h.rss_nodes)
            );
            if !h.etcd_rss_before.is_empty() {
                println!(
                    "RSS etcd members under herd: {} before pods; {} after herd's reads",
                    mibs(&h.etcd_rss_before),
                    mibs(&h.etcd_rss_after)
                );
            }
            println!(
                "RSS after each phase, herd ({name}) node 0: {}",
                timeline(&h.results)
            );
        }
        if let Some(r) = &self.raw {
            println!(
                "RSS etcd alone, members: {} before its fill; {} after its reads",
                mibs(&r.rss_before),
                mibs(&r.rss_after)
            );
            println!(
                "RSS after each phase, etcd alone, member measured: {}",
                timeline(&r.results)
            );
        }
    }
}
