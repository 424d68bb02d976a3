//! `describe pod`: kubectl's layout for a pod (containers, states,
//! probes, environment, mounts, conditions, volumes, QoS class,
//! tolerations). Pure text from a `Pod`; the events section is
//! [`super::describe::describe_events`].

use std::fmt::Write as _;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, ContainerState, ContainerStatus, Pod, Probe, Volume};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::describe::{Out, annotations, multiline_map, rfc1123z};
use super::tabwriter::align;

fn int_or_string(p: &IntOrString) -> String {
    match p {
        IntOrString::Int(i) => i.to_string(),
        IntOrString::String(s) => s.clone(),
    }
}

/// kubectl's `DescribeProbe` (defaults filled in as the API server would).
pub fn describe_probe(p: &Probe) -> String {
    let attrs = format!(
        "delay={}s timeout={}s period={}s #success={} #failure={}",
        p.initial_delay_seconds.unwrap_or(0),
        p.timeout_seconds.unwrap_or(1),
        p.period_seconds.unwrap_or(10),
        p.success_threshold.unwrap_or(1),
        p.failure_threshold.unwrap_or(3)
    );
    if let Some(e) = &p.exec {
        return format!(
            "exec [{}] {attrs}",
            e.command.clone().unwrap_or_default().join(" ")
        );
    }
    if let Some(h) = &p.http_get {
        let scheme = h
            .scheme
            .clone()
            .unwrap_or_else(|| "HTTP".into())
            .to_ascii_lowercase();
        let host = h.host.clone().unwrap_or_default();
        let port = int_or_string(&h.port);
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let path = h.path.clone().unwrap_or_default();
        return format!("http-get {scheme}://{host}:{port}{path} {attrs}");
    }
    if let Some(t) = &p.tcp_socket {
        return format!(
            "tcp-socket {}:{} {attrs}",
            t.host.clone().unwrap_or_default(),
            int_or_string(&t.port)
        );
    }
    if let Some(g) = &p.grpc {
        return format!(
            "grpc <pod>:{} {} {attrs}",
            g.port,
            g.service.clone().unwrap_or_default()
        );
    }
    format!("unknown {attrs}")
}

fn state(out: &mut Out, title: &str, s: Option<&ContainerState>) {
    let s = s.cloned().unwrap_or_default();
    let ts = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.as_ref().map(|t| rfc1123z(&t.0)).unwrap_or_default()
    };
    if let Some(r) = &s.running {
        out.w(2, &format!("{title}:\tRunning\n"));
        out.w(3, &format!("Started:\t{}\n", ts(&r.started_at)));
    } else if let Some(t) = &s.terminated {
        out.w(2, &format!("{title}:\tTerminated\n"));
        if let Some(r) = t.reason.as_deref().filter(|r| !r.is_empty()) {
            out.w(3, &format!("Reason:\t{r}\n"));
        }
        if let Some(m) = t.message.as_deref().filter(|m| !m.is_empty()) {
            out.w(3, &format!("Message:\t{m}\n"));
        }
        out.w(3, &format!("Exit Code:\t{}\n", t.exit_code));
        if let Some(sig) = t.signal.filter(|s| *s > 0) {
            out.w(3, &format!("Signal:\t{sig}\n"));
        }
        out.w(3, &format!("Started:\t{}\n", ts(&t.started_at)));
        out.w(3, &format!("Finished:\t{}\n", ts(&t.finished_at)));
    } else {
        out.w(2, &format!("{title}:\tWaiting\n"));
        if let Some(r) = s
            .waiting
            .as_ref()
            .and_then(|w| w.reason.as_deref())
            .filter(|r| !r.is_empty())
        {
            out.w(3, &format!("Reason:\t{r}\n"));
        }
    }
}

fn ports(c: &Container, host: bool) -> String {
    c.ports
        .iter()
        .flatten()
        .map(|p| {
            let proto = p.protocol.clone().unwrap_or_else(|| "TCP".into());
            let n = if host {
                p.host_port.unwrap_or(0)
            } else {
                p.container_port
            };
            format!("{n}/{proto}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn container(out: &mut Out, c: &Container, st: Option<&ContainerStatus>) {
    out.w(1, &format!("{}:\n", c.name));
    if let Some(s) = st {
        out.w(
            2,
            &format!(
                "Container ID:\t{}\n",
                s.container_id.clone().unwrap_or_default()
            ),
        );
    }
    out.w(
        2,
        &format!("Image:\t{}\n", c.image.clone().unwrap_or_default()),
    );
    if let Some(s) = st {
        out.w(2, &format!("Image ID:\t{}\n", s.image_id));
    }
    for (host, one, many) in [(false, "Port", "Ports"), (true, "Host Port", "Host Ports")] {
        let p = ports(c, host);
        if p.contains(',') {
            out.w(2, &format!("{many}:\t{p}\n"));
        } else {
            let p = if p.is_empty() { "<none>".into() } else { p };
            out.w(2, &format!("{one}:\t{p}\n"));
        }
    }
    if let Some(rp) = &c.restart_policy {
        out.w(2, &format!("Restart Policy:\t{rp}\n"));
    }
    for (title, list) in [("Command", &c.command), ("Args", &c.args)] {
        if let Some(l) = list.as_ref().filter(|l| !l.is_empty()) {
            out.w(2, &format!("{title}:\n"));
            for a in l {
                for line in a.split('\n') {
                    out.w(3, &format!("{line}\n"));
                }
            }
        }
    }
    if let Some(s) = st {
        state(out, "State", s.state.as_ref());
        if s.last_state
            .as_ref()
            .is_some_and(|l| l.terminated.is_some())
        {
            state(out, "Last State", s.last_state.as_ref());
        }
        out.w(
            2,
            &format!("Ready:\t{}\n", if s.ready { "True" } else { "False" }),
        );
        out.w(2, &format!("Restart Count:\t{}\n", s.restart_count));
    }
    if let Some(r) = &c.resources {
        for (title, m) in [("Limits", &r.limits), ("Requests", &r.requests)] {
            if let Some(m) = m.as_ref().filter(|m| !m.is_empty()) {
                out.w(2, &format!("{title}:\n"));
                for (k, q) in m {
                    out.w(3, &format!("{k}:\t{}\n", q.0));
                }
            }
        }
    }
    for (title, p) in [
        ("Liveness", &c.liveness_probe),
        ("Readiness", &c.readiness_probe),
        ("Startup", &c.startup_probe),
    ] {
        if let Some(p) = p {
            out.w(2, &format!("{title}:\t{}\n", describe_probe(p)));
        }
    }
    if let Some(ef) = c.env_from.as_ref().filter(|e| !e.is_empty()) {
        out.w(2, "Environment Variables from:\n");
        for e in ef {
            let (from, name, optional) = if let Some(r) = &e.config_map_ref {
                ("ConfigMap", r.name.clone(), r.optional.unwrap_or(false))
            } else if let Some(r) = &e.secret_ref {
                ("Secret", r.name.clone(), r.optional.unwrap_or(false))
            } else {
                ("", String::new(), false)
            };
            match e.prefix.as_deref().filter(|p| !p.is_empty()) {
                None => out.w(3, &format!("{name}\t{from}\tOptional: {optional}\n")),
                Some(p) => out.w(
                    3,
                    &format!("{name}\t{from} with prefix '{p}'\tOptional: {optional}\n"),
                ),
            }
        }
    }
    env(out, c);
    let mut mounts = c.volume_mounts.clone().unwrap_or_default();
    if mounts.is_empty() {
        out.w(2, "Mounts:\t<none>\n");
    } else {
        out.w(2, "Mounts:\n");
    }
    mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    for m in mounts {
        let mut flags = vec![
            if m.read_only == Some(true) {
                "ro"
            } else {
                "rw"
            }
            .to_string(),
        ];
        if let Some(sp) = m.sub_path.filter(|s| !s.is_empty()) {
            flags.push(format!("path={sp:?}"));
        }
        out.w(
            3,
            &format!("{} from {} ({})\n", m.mount_path, m.name, flags.join(",")),
        );
    }
}

fn env(out: &mut Out, c: &Container) {
    let envs = c.env.clone().unwrap_or_default();
    if envs.is_empty() {
        out.w(2, "Environment:\t<none>\n");
        return;
    }
    out.w(2, "Environment:\n");
    for e in envs {
        let Some(from) = &e.value_from else {
            for (i, line) in e.value.clone().unwrap_or_default().split('\n').enumerate() {
                if i == 0 {
                    out.w(3, &format!("{}:\t{line}\n", e.name));
                } else {
                    out.w(3, &format!("\t{line}\n"));
                }
            }
            continue;
        };
        if let Some(f) = &from.field_ref {
            let v = f.api_version.clone().unwrap_or_else(|| "v1".into());
            out.w(3, &format!("{}:\t ({v}:{})\n", e.name, f.field_path));
        } else if let Some(r) = &from.resource_field_ref {
            out.w(3, &format!("{}:\t ({})\n", e.name, r.resource));
        } else if let Some(s) = &from.secret_key_ref {
            out.w(
                3,
                &format!(
                    "{}:\t<set to the key '{}' in secret '{}'>\tOptional: {}\n",
                    e.name,
                    s.key,
                    s.name,
                    s.optional.unwrap_or(false)
                ),
            );
        } else if let Some(s) = &from.config_map_key_ref {
            out.w(
                3,
                &format!(
                    "{}:\t<set to the key '{}' of config map '{}'>\tOptional: {}\n",
                    e.name,
                    s.key,
                    s.name,
                    s.optional.unwrap_or(false)
                ),
            );
        }
    }
}

fn volume(out: &mut Out, v: &Volume) {
    out.w(1, &format!("{}:\n", v.name));
    if let Some(h) = &v.host_path {
        out.w(2, "Type:\tHostPath (bare host directory volume)\n");
        out.w(2, &format!("Path:\t{}\n", h.path));
        out.w(
            2,
            &format!("HostPathType:\t{}\n", h.type_.clone().unwrap_or_default()),
        );
    } else if let Some(e) = &v.empty_dir {
        out.w(
            2,
            "Type:\tEmptyDir (a temporary directory that shares a pod's lifetime)\n",
        );
        out.w(
            2,
            &format!("Medium:\t{}\n", e.medium.clone().unwrap_or_default()),
        );
        let limit = e
            .size_limit
            .as_ref()
            .map(|q| q.0.clone())
            .filter(|q| q != "0")
            .unwrap_or_else(|| "<unset>".into());
        out.w(2, &format!("SizeLimit:\t{limit}\n"));
    } else if let Some(s) = &v.secret {
        out.w(2, "Type:\tSecret (a volume populated by a Secret)\n");
        out.w(
            2,
            &format!(
                "SecretName:\t{}\n",
                s.secret_name.clone().unwrap_or_default()
            ),
        );
        out.w(2, &format!("Optional:\t{}\n", s.optional.unwrap_or(false)));
    } else if let Some(c) = &v.config_map {
        out.w(2, "Type:\tConfigMap (a volume populated by a ConfigMap)\n");
        out.w(2, &format!("Name:\t{}\n", c.name));
        out.w(2, &format!("Optional:\t{}\n", c.optional.unwrap_or(false)));
    } else if let Some(p) = &v.projected {
        out.w(
            2,
            "Type:\tProjected (a volume that contains injected data from multiple sources)\n",
        );
        for s in p.sources.iter().flatten() {
            if let Some(sec) = &s.secret {
                out.w(2, &format!("SecretName:\t{}\n", sec.name));
                out.w(
                    2,
                    &format!("SecretOptionalName:\t{}\n", sec.optional.unwrap_or(false)),
                );
            } else if s.downward_api.is_some() {
                out.w(2, "DownwardAPI:\ttrue\n");
            } else if let Some(cm) = &s.config_map {
                out.w(2, &format!("ConfigMapName:\t{}\n", cm.name));
                out.w(
                    2,
                    &format!("ConfigMapOptional:\t{}\n", cm.optional.unwrap_or(false)),
                );
            } else if let Some(t) = &s.service_account_token {
                out.w(
                    2,
                    &format!(
                        "TokenExpirationSeconds:\t{}\n",
                        t.expiration_seconds.unwrap_or(3607)
                    ),
                );
            }
        }
    } else if let Some(d) = &v.downward_api {
        out.w(
            2,
            "Type:\tDownwardAPI (a volume populated by information about the pod)\n",
        );
        out.w(2, "Items:\n");
        for i in d.items.iter().flatten() {
            if let Some(f) = &i.field_ref {
                out.w(3, &format!("{} -> {}\n", f.field_path, i.path));
            }
            if let Some(r) = &i.resource_field_ref {
                out.w(3, &format!("{} -> {}\n", r.resource, i.path));
            }
        }
    } else {
        out.w(1, "<unknown>\n");
    }
}

/// The pod's QoS class (`status.qosClass`, else computed as the API does).
pub fn qos_class(pod: &Pod) -> String {
    if let Some(q) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return q;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let limits = r.limits.unwrap_or_default();
        let requests = r.requests.unwrap_or_default();
        for res in ["cpu", "memory"] {
            let l = limits.get(res).map(|q| q.0.clone());
            let q = requests.get(res).map(|q| q.0.clone()).or(l.clone());
            if l.is_some() || q.is_some() {
                any = true;
            }
            let same = match (&l, &q) {
                (Some(l), Some(q)) => {
                    crate::api::quantity::parse(l).ok() == crate::api::quantity::parse(q).ok()
                }
                _ => false,
            };
            if !same {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort".into()
    } else if guaranteed {
        "Guaranteed".into()
    } else {
        "Burstable".into()
    }
}

/// The text of `describe pod`, events excluded.
pub fn describe_pod(pod: &Pod, now: Timestamp) -> String {
    let mut o = Out::default();
    let meta = &pod.metadata;
    let spec = pod.spec.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    o.w(
        0,
        &format!("Name:\t{}\n", meta.name.clone().unwrap_or_default()),
    );
    o.w(
        0,
        &format!(
            "Namespace:\t{}\n",
            meta.namespace.clone().unwrap_or_default()
        ),
    );
    o.w(0, &format!("Priority:\t{}\n", spec.priority.unwrap_or(0)));
    if let Some(pc) = spec
        .priority_class_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        o.w(0, &format!("Priority Class Name:\t{pc}\n"));
    }
    if let Some(sa) = spec
        .service_account_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        o.w(0, &format!("Service Account:\t{sa}\n"));
    }
    match spec.node_name.as_deref().filter(|s| !s.is_empty()) {
        None => o.w(0, "Node:\t<none>\n"),
        Some(n) => o.w(
            0,
            &format!(
                "Node:\t{n}/{}\n",
                status.host_ip.clone().unwrap_or_default()
            ),
        ),
    }
    if let Some(t) = &status.start_time {
        o.w(0, &format!("Start Time:\t{}\n", rfc1123z(&t.0)));
    }
    multiline_map(&mut o, "Labels", meta.labels.as_ref(), "=");
    annotations(&mut o, meta.annotations.as_ref());
    let phase = status.phase.clone().unwrap_or_default();
    match &meta.deletion_timestamp {
        Some(t) if phase != "Failed" && phase != "Succeeded" => {
            let left = super::duration::human(t.0.as_second() - now.as_second());
            o.w(0, &format!("Status:\tTerminating (lasts {left})\n"));
            o.w(
                0,
                &format!(
                    "Termination Grace Period:\t{}s\n",
                    meta.deletion_grace_period_seconds.unwrap_or(0)
                ),
            );
        }
        _ => o.w(0, &format!("Status:\t{phase}\n")),
    }
    if let Some(r) = status.reason.as_deref().filter(|s| !s.is_empty()) {
        o.w(0, &format!("Reason:\t{r}\n"));
    }
    if let Some(m) = status.message.as_deref().filter(|s| !s.is_empty()) {
        o.w(0, &format!("Message:\t{m}\n"));
    }
    o.w(
        0,
        &format!("IP:\t{}\n", status.pod_ip.clone().unwrap_or_default()),
    );
    match status.pod_ips.as_ref().filter(|i| !i.is_empty()) {
        None => o.w(0, "IPs:\t<none>\n"),
        Some(ips) => {
            o.w(0, "IPs:\n");
            for ip in ips {
                o.w(1, &format!("IP:\t{}\n", ip.ip));
            }
        }
    }
    if let Some(n) = status
        .nominated_node_name
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        o.w(0, &format!("NominatedNodeName:\t{n}\n"));
    }
    let find = |list: &Option<Vec<ContainerStatus>>, name: &str| {
        list.iter().flatten().find(|s| s.name == name).cloned()
    };
    if let Some(inits) = spec.init_containers.as_ref().filter(|i| !i.is_empty()) {
        o.w(0, "Init Containers:\n");
        for c in inits {
            container(
                &mut o,
                c,
                find(&status.init_container_statuses, &c.name).as_ref(),
            );
        }
    }
    if spec.containers.is_empty() {
        o.w(0, "Containers: <none>\n");
    } else {
        o.w(0, "Containers:\n");
    }
    for c in &spec.containers {
        container(
            &mut o,
            c,
            find(&status.container_statuses, &c.name).as_ref(),
        );
    }
    if let Some(conds) = status.conditions.as_ref().filter(|c| !c.is_empty()) {
        o.w(0, "Conditions:\n  Type\tStatus\n");
        for c in conds {
            o.w(1, &format!("{} \t{} \n", c.type_, c.status));
        }
    }
    match spec.volumes.as_ref().filter(|v| !v.is_empty()) {
        None => o.w(0, "Volumes:\t<none>\n"),
        Some(vols) => {
            o.w(0, "Volumes:\n");
            for v in vols {
                volume(&mut o, v);
            }
        }
    }
    o.w(0, &format!("QoS Class:\t{}\n", qos_class(pod)));
    multiline_map(&mut o, "Node-Selectors", spec.node_selector.as_ref(), "=");
    o.w(0, "Tolerations:\t");
    let tols = spec.tolerations.clone().unwrap_or_default();
    if tols.is_empty() {
        o.w(0, "<none>\n");
    }
    for (i, t) in tols.iter().enumerate() {
        if i != 0 {
            o.w(0, "\t");
        }
        let mut s = t.key.clone().unwrap_or_default();
        let value = t.value.clone().unwrap_or_default();
        if !value.is_empty() {
            let _ = write!(s, "={value}");
        }
        if let Some(e) = t.effect.as_deref().filter(|e| !e.is_empty()) {
            let _ = write!(s, ":{e}");
        }
        if t.operator.as_deref() == Some("Exists") && value.is_empty() {
            if s.is_empty() {
                s.push_str("op=Exists");
            } else {
                s.push_str(" op=Exists");
            }
        }
        if let Some(secs) = t.toleration_seconds {
            let _ = write!(s, " for {secs}s");
        }
        o.w(0, &format!("{s}\n"));
    }
    align(&o.text, 0, 2)
}
