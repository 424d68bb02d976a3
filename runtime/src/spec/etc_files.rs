//! Contents of the pod's `/etc/hosts` and `/etc/resolv.conf`.
//!
//! `/etc/hosts` follows the kubelet's managed format byte for byte (header,
//! loopback and IPv6 lines, the pod's own line, then host aliases);
//! `/etc/resolv.conf` follows containerd's (`search`, `nameserver` lines,
//! `options`). Entries containing whitespace (which could inject lines) are
//! left out.

use std::net::IpAddr;

use crate::types::{DnsConfig, HostAlias};

fn clean(s: &str) -> bool {
    !s.is_empty() && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The kubelet's managed `/etc/hosts`.
pub fn hosts_file(pod_ip: Option<IpAddr>, hostname: &str, aliases: &[HostAlias]) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip
        && clean(hostname)
    {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    let aliases: Vec<(IpAddr, Vec<&str>)> = aliases
        .iter()
        .map(|a| {
            let names = a.hostnames.iter().map(String::as_str).filter(|h| clean(h));
            (a.ip, names.collect::<Vec<&str>>())
        })
        .filter(|(_, names)| !names.is_empty())
        .collect();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in aliases {
            out.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    out
}

/// The pod's `/etc/resolv.conf` (empty when `dns` is empty).
pub fn resolv_conf(dns: &DnsConfig) -> String {
    let pick = |v: &[String]| -> Vec<String> { v.iter().filter(|s| clean(s)).cloned().collect() };
    let (searches, servers, options) = (
        pick(&dns.searches),
        pick(&dns.nameservers),
        pick(&dns.options),
    );
    let mut out = String::new();
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for s in &servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !options.is_empty() {
        out.push_str(&format!("options {}\n", options.join(" ")));
    }
    out
}
