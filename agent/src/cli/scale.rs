//! `herd scale deployment|replicaset NAME --replicas N`: reads the
//! object's `/scale` subresource and writes it back with the new count
//! (with the read resourceVersion as precondition when
//! `--resource-version` is given), printing `deployment.apps/web scaled`
//! like kubectl.

use anyhow::bail;
use clap::Args;
use hyper::Method;
use serde_json::Value;

use super::Ctx;
use super::get::parse_type;
use super::params::object_path;
use crate::api::Resource;

/// `herd scale` flags.
#[derive(Debug, Args)]
pub struct ScaleArgs {
    /// The type (deployment, replicaset) or TYPE/NAME.
    pub resource: String,
    /// Object names.
    pub names: Vec<String>,
    /// The new desired number of replicas.
    #[arg(long)]
    pub replicas: i32,
    /// Scale only if the object is still at this resourceVersion.
    #[arg(long)]
    pub resource_version: Option<String>,
}

/// Runs `herd scale`.
pub async fn run(ctx: &Ctx, args: ScaleArgs) -> anyhow::Result<()> {
    let (resource, first) = parse_type(&args.resource)?;
    if !matches!(resource, Resource::Deployments | Resource::ReplicaSets) {
        bail!(
            "cannot scale {}: only deployments and replicasets have a scale subresource",
            resource.plural()
        );
    }
    if args.replicas < 0 {
        bail!(
            "The --replicas=COUNT flag is required, and COUNT must be greater than or equal to 0"
        );
    }
    let mut names: Vec<String> = first.into_iter().collect();
    names.extend(args.names.iter().cloned());
    if names.is_empty() {
        bail!("resource(s) were provided, but no name was specified");
    }
    for name in names {
        let path = format!("{}/scale", object_path(resource, &ctx.namespace, &name));
        let mut scale: Value = ctx.client.request(Method::GET, &path, None).await?;
        scale["spec"]["replicas"] = args.replicas.into();
        if let Some(m) = scale.get_mut("metadata").and_then(Value::as_object_mut) {
            match args.resource_version.as_ref() {
                Some(rv) => {
                    m.insert("resourceVersion".into(), rv.clone().into());
                }
                None => {
                    m.remove("resourceVersion");
                }
            }
        }
        let _: Value = ctx.client.request(Method::PUT, &path, Some(&scale)).await?;
        println!("{}/{name} scaled", super::printers::kind_name(resource));
    }
    Ok(())
}
