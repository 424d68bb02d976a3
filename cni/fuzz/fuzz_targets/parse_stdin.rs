//! Fuzz the CNI trust boundary: environment validation plus the stdin
//! configuration parser. Input layout: `<env block>\0<stdin>`; the env block
//! is `KEY=VALUE` lines. Without a NUL byte, the first byte picks the verb
//! and the rest is stdin. Any rejection must carry a spec code.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

const VERBS: [&str; 6] = ["ADD", "DEL", "CHECK", "STATUS", "GC", "VERSION"];

fuzz_target!(|data: &[u8]| {
    let (env, stdin): (HashMap<String, String>, &[u8]) = match data.iter().position(|&b| b == 0) {
        Some(i) => {
            let env = String::from_utf8_lossy(&data[..i])
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            (env, &data[i + 1..])
        }
        None => {
            let verb = VERBS[usize::from(data.first().copied().unwrap_or(0)) % VERBS.len()];
            let env = [
                ("CNI_COMMAND", verb),
                ("CNI_CONTAINERID", "c1"),
                ("CNI_NETNS", "/run/netns/x"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_PATH", "/usr/lib/cni"),
            ]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
            (env, data.get(1..).unwrap_or(&[]))
        }
    };
    if let Err(e) = herd_cni::plugin::parse_request(&|k| env.get(k).cloned(), stdin) {
        let c = e.code.code();
        assert!(matches!(c, 1 | 2 | 4 | 6 | 7), "unexpected code {c}: {e}");
    }
});
