//! `herd describe pod|configmap|secret|namespace|deployment|replicaset|service|node NAME…`
//! (other kinds print as YAML): kubectl's
//! `describe` layout (tab-aligned sections, container states, probes as
//! `http-get http://:8080/ delay=0s timeout=1s period=10s #success=1
//! #failure=3`, conditions, volumes, QoS class, events).
//!
//! Events come from `…/namespaces/NS/events` filtered by
//! `involvedObject.name` (also filtered here, in case the server ignores
//! that field selector); a pod without events prints `Events: <none>`.

use std::collections::BTreeMap;

use anyhow::bail;
use clap::Args;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace, Secret};
use serde_json::Value;

use crate::api::Resource;

use super::client::ListParams;
use super::duration::since;
use super::get::parse_type;
use super::tabwriter::align;
use super::{Ctx, Exit, client_error_message};

/// `herd describe` flags.
#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The type (pod, deployment, service, node, …) or TYPE/NAME.
    pub resource: String,
    /// Object names.
    pub names: Vec<String>,
}

/// kubectl's `PrefixWriter`: text with levels of two-space indent.
#[derive(Debug, Default)]
pub struct Out {
    pub text: String,
}

impl Out {
    pub(super) fn w(&mut self, level: usize, s: &str) {
        for _ in 0..level {
            self.text.push_str("  ");
        }
        self.text.push_str(s);
    }
}

/// Go's `time.RFC1123Z` in local time.
pub fn rfc1123z(t: &Timestamp) -> String {
    t.to_zoned(jiff::tz::TimeZone::system())
        .strftime("%a, %d %b %Y %H:%M:%S %z")
        .to_string()
}

pub(super) fn multiline_map(
    out: &mut Out,
    title: &str,
    map: Option<&BTreeMap<String, String>>,
    sep: &str,
) {
    out.w(0, &format!("{title}:\t"));
    let Some(m) = map.filter(|m| !m.is_empty()) else {
        out.w(0, "<none>\n");
        return;
    };
    for (i, (k, v)) in m.iter().enumerate() {
        if i != 0 {
            out.w(0, "\t");
        }
        out.w(0, &format!("{k}{sep}{v}\n"));
    }
}

pub(super) fn annotations(out: &mut Out, map: Option<&BTreeMap<String, String>>) {
    let filtered: Option<BTreeMap<String, String>> = map.map(|m| {
        m.iter()
            .filter(|(k, _)| k.as_str() != super::apply::LAST_APPLIED)
            .map(|(k, v)| (k.clone(), v.trim_end_matches('\n').to_string()))
            .collect()
    });
    multiline_map(out, "Annotations", filtered.as_ref(), ": ");
}

/// kubectl's `DescribeEvents` section (`None`: the events could not be read).
pub fn describe_events(events: Option<&[Event]>, now: Timestamp) -> String {
    let Some(events) = events else {
        return String::new();
    };
    if events.is_empty() {
        return align("Events:\t<none>\n", 0, 2);
    }
    let mut ev = events.to_vec();
    let last = |e: &Event| {
        e.last_timestamp
            .as_ref()
            .map(|t| t.0)
            .or(e.event_time.as_ref().map(|t| t.0))
            .or(e.metadata.creation_timestamp.as_ref().map(|t| t.0))
    };
    ev.sort_by_key(last);
    let mut o = Out::default();
    o.w(0, "Events:\n  Type\tReason\tAge\tFrom\tMessage\n");
    o.w(1, "----\t------\t----\t----\t-------\n");
    for e in &ev {
        let first = e
            .event_time
            .as_ref()
            .map(|t| t.0)
            .or(e.first_timestamp.as_ref().map(|t| t.0));
        let first_s = since(first.as_ref(), now);
        let count = e.count.unwrap_or(1);
        let interval = if count > 1 {
            format!(
                "{} (x{count} over {first_s})",
                since(e.last_timestamp.as_ref().map(|t| &t.0), now)
            )
        } else {
            first_s
        };
        let source = e
            .source
            .as_ref()
            .and_then(|s| s.component.clone())
            .filter(|s| !s.is_empty())
            .or(e.reporting_component.clone())
            .unwrap_or_default();
        o.w(
            1,
            &format!(
                "{}\t{}\t{interval}\t{source}\t{}\n",
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                e.message.clone().unwrap_or_default().trim()
            ),
        );
    }
    align(&o.text, 0, 2)
}

fn describe_configmap(cm: &ConfigMap) -> String {
    let mut o = Out::default();
    o.w(
        0,
        &format!("Name:\t{}\n", cm.metadata.name.clone().unwrap_or_default()),
    );
    o.w(
        0,
        &format!(
            "Namespace:\t{}\n",
            cm.metadata.namespace.clone().unwrap_or_default()
        ),
    );
    multiline_map(&mut o, "Labels", cm.metadata.labels.as_ref(), "=");
    annotations(&mut o, cm.metadata.annotations.as_ref());
    o.w(0, "\nData\n====\n");
    for (k, v) in cm.data.iter().flatten() {
        o.w(0, &format!("{k}:\n----\n{v}\n\n"));
    }
    o.w(0, "\nBinaryData\n====\n");
    for (k, v) in cm.binary_data.iter().flatten() {
        o.w(0, &format!("{k}: {} bytes\n", v.0.len()));
    }
    o.w(0, "\n");
    align(&o.text, 0, 2)
}

fn describe_secret(s: &Secret) -> String {
    let mut o = Out::default();
    o.w(
        0,
        &format!("Name:\t{}\n", s.metadata.name.clone().unwrap_or_default()),
    );
    o.w(
        0,
        &format!(
            "Namespace:\t{}\n",
            s.metadata.namespace.clone().unwrap_or_default()
        ),
    );
    multiline_map(&mut o, "Labels", s.metadata.labels.as_ref(), "=");
    annotations(&mut o, s.metadata.annotations.as_ref());
    o.w(
        0,
        &format!(
            "\nType:\t{}\n",
            s.type_.clone().unwrap_or_else(|| "Opaque".into())
        ),
    );
    o.w(0, "\nData\n====\n");
    for (k, v) in s.data.iter().flatten() {
        o.w(0, &format!("{k}:\t{} bytes\n", v.0.len()));
    }
    align(&o.text, 0, 2)
}

fn describe_namespace(ns: &Namespace) -> String {
    let mut o = Out::default();
    o.w(
        0,
        &format!("Name:\t{}\n", ns.metadata.name.clone().unwrap_or_default()),
    );
    multiline_map(&mut o, "Labels", ns.metadata.labels.as_ref(), "=");
    annotations(&mut o, ns.metadata.annotations.as_ref());
    let phase = ns
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Active".into());
    o.w(0, &format!("Status:\t{phase}\n"));
    o.w(0, "\nNo resource quota.\n\nNo LimitRange resource.\n");
    align(&o.text, 0, 2)
}

async fn events_for(ctx: &Ctx, namespace: &str, name: &str) -> Option<Vec<Event>> {
    let params = ListParams {
        label_selector: None,
        field_selector: Some(format!("involvedObject.name={name}")),
    };
    let list: Value = match ctx
        .client
        .list(Resource::Events, Some(namespace), &params)
        .await
    {
        Ok(l) => l,
        Err(e) if e.api().is_some_and(|f| f.code == 400) => ctx
            .client
            .list(Resource::Events, Some(namespace), &ListParams::default())
            .await
            .ok()?,
        Err(_) => return None,
    };
    let events: Vec<Event> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_value::<Event>(v.clone()).ok())
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
        .collect();
    Some(events)
}

/// `ip:port` of a Service's Endpoints (`None`: none could be read).
async fn service_endpoints(ctx: &Ctx, name: &str) -> Option<Vec<String>> {
    let ep: k8s_openapi::api::core::v1::Endpoints = ctx
        .client
        .get(Resource::Endpoints, &ctx.namespace, name)
        .await
        .ok()?;
    let mut out = Vec::new();
    for s in ep.subsets.iter().flatten() {
        for p in s.ports.iter().flatten() {
            for a in s.addresses.iter().flatten() {
                out.push(format!("{}:{}", a.ip, p.port));
            }
        }
    }
    Some(out)
}

/// Runs `herd describe`.
pub async fn run(ctx: &Ctx, args: DescribeArgs) -> anyhow::Result<()> {
    let (resource, first) = parse_type(&args.resource)?;
    let mut names: Vec<String> = first.into_iter().collect();
    names.extend(args.names.iter().cloned());
    if names.is_empty() {
        bail!(
            "herd describe needs a name: herd describe {} NAME",
            resource.kind().to_ascii_lowercase()
        );
    }
    let mut failed = false;
    for (i, name) in names.iter().enumerate() {
        let obj: Value = match ctx.client.get(resource, &ctx.namespace, name).await {
            Ok(v) => v,
            Err(e) => {
                eprintln!("{}", client_error_message(&e));
                failed = true;
                continue;
            }
        };
        let now = Timestamp::now();
        let body = match resource {
            Resource::Pods => super::describe_pod::describe_pod(&serde_json::from_value(obj)?, now),
            Resource::ConfigMaps => describe_configmap(&serde_json::from_value(obj)?),
            Resource::Secrets => describe_secret(&serde_json::from_value(obj)?),
            Resource::Namespaces => describe_namespace(&serde_json::from_value(obj)?),
            Resource::Deployments => {
                super::describe_kinds::describe_deployment(&serde_json::from_value(obj)?)
            }
            Resource::ReplicaSets => {
                super::describe_kinds::describe_replica_set(&serde_json::from_value(obj)?)
            }
            Resource::Services => {
                let eps = service_endpoints(ctx, name).await;
                super::describe_kinds::describe_service(
                    &serde_json::from_value(obj)?,
                    eps.as_deref(),
                )
            }
            Resource::Nodes => {
                super::describe_kinds::describe_node(&serde_json::from_value(obj)?, now)
            }
            _ => super::printers::to_yaml(&obj),
        };
        let events = if resource.namespaced() && resource != Resource::Events {
            describe_events(events_for(ctx, &ctx.namespace, name).await.as_deref(), now)
        } else {
            String::new()
        };
        if i > 0 {
            println!();
            println!();
        }
        print!("{body}{events}");
    }
    if failed {
        return Err(Exit { code: 1 }.into());
    }
    Ok(())
}
