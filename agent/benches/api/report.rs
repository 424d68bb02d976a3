//! The results table: herd and etcd side by side per measure.

use crate::etcdctl::Etcdctl;
use crate::measure::{Lat, Plan, Results};

#[derive(Debug, Default)]
pub struct Report {
    pub command: String,
    pub plan: Option<Plan>,
    pub herd_leads: bool,
    pub etcd_member_leads: bool,
    pub herd: Results,
    pub etcd: Results,
    pub etcd_serializable_get: Lat,
    pub etcdctl: Etcdctl,
    pub herd_rss_before: u64,
    pub herd_rss_filled: u64,
    pub herd_rss_after: u64,
    /// After the etcd phase (herd idle meanwhile).
    pub herd_rss_end: u64,
    pub herd_rss_nodes: Vec<u64>,
    pub etcd_rss_before: Vec<u64>,
    pub etcd_rss_after: Vec<u64>,
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

fn row(what: &str, h: [String; 2], e: [String; 2]) {
    println!(
        "{what:<46} {:>11} {:>11} {:>11} {:>11}",
        h[0], h[1], e[0], e[1]
    );
}

fn lat_row(what: &str, h: &Lat, e: &Lat) {
    row(what, [ms(h, 0.5), ms(h, 0.99)], [ms(e, 0.5), ms(e, 0.99)]);
}

impl Report {
    pub fn print(&self) {
        let Some(p) = self.plan else { return };
        let (h, e) = (&self.herd, &self.etcd);
        let role = |leads: bool| if leads { "leader" } else { "follower" };
        println!(
            "\nAPI benchmark: {} pods, herd 3 nodes (netns) vs etcd 3.4 3 members (127.0.0.1)",
            p.objects
        );
        println!(
            "client -> herd node 0 ({}), HTTPS + client cert; -> etcd member ({}), gRPC-gateway HTTP/JSON",
            role(self.herd_leads),
            role(self.etcd_member_leads)
        );
        println!(
            "samples: GET/update {}, LIST {}, watch {}; load at end: {}",
            p.get_samples,
            p.list_samples,
            p.watch_samples,
            self.load.trim()
        );
        println!("command: {}\n", self.command);
        row(
            "measure",
            ["herd p50".into(), "herd p99".into()],
            ["etcd p50".into(), "etcd p99".into()],
        );
        let rate = |r: f64| format!("{r:.0}/s");
        row(
            &format!("create, 1 writer ({} objs)", p.serial.min(p.objects)),
            [rate(h.creates_serial), String::new()],
            [rate(e.creates_serial), String::new()],
        );
        row(
            &format!(
                "create, {} writers ({} objs)",
                p.writers,
                p.objects.saturating_sub(p.serial)
            ),
            [rate(h.creates_concurrent), String::new()],
            [rate(e.creates_concurrent), String::new()],
        );
        lat_row("GET one pod | range one key", &h.get, &e.get);
        row(
            "  etcd range one key, serializable",
            ["".into(), "".into()],
            [
                ms(&self.etcd_serializable_get, 0.5),
                ms(&self.etcd_serializable_get, 0.99),
            ],
        );
        lat_row(
            &format!("LIST all {} | range prefix", p.objects),
            &h.list,
            &e.list,
        );
        row(
            "  LIST body size",
            [format!("{} KiB", h.list_bytes / 1024), String::new()],
            [format!("{} KiB", e.list_bytes / 1024), String::new()],
        );
        lat_row("LIST limit=500 | range limit 500", &h.page, &e.page);
        lat_row("update (PUT), sequential | put", &h.update, &e.update);
        lat_row(
            "watch: event after write returned",
            &h.watch_after_return,
            &e.watch_after_return,
        );
        lat_row(
            "watch: event after write sent",
            &h.watch_after_send,
            &e.watch_after_send,
        );
        let c = &self.etcdctl;
        lat_row("etcdctl get (process per op)", &Lat::default(), &c.get);
        lat_row(
            "etcdctl get --prefix --limit 500 (process)",
            &Lat::default(),
            &c.page,
        );
        lat_row("etcdctl put (process per op)", &Lat::default(), &c.put);
        println!();
        println!(
            "RSS herd node 0: {} before pods, {} after creates, {} after its reads, {} after the etcd phase (idle); all nodes after reads: {}",
            mib(self.herd_rss_before),
            mib(self.herd_rss_filled),
            mib(self.herd_rss_after),
            mib(self.herd_rss_end),
            self.herd_rss_nodes
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "RSS etcd members: {} before its fill; {} at end",
            self.etcd_rss_before
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", "),
            self.etcd_rss_after
                .iter()
                .map(|k| mib(*k))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let timeline = |r: &Results| {
            r.rss
                .iter()
                .map(|(phase, k)| format!("{phase} {}", mib(*k)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("RSS after each phase, herd node 0: {}", timeline(h));
        println!("RSS after each phase, etcd member: {}", timeline(e));
    }
}
