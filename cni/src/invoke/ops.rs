//! The verbs of [`CniInvoker`]: how each one walks the plugin list.

use std::collections::HashSet;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::cache::{CACHE_KIND, CachedAttachment};
use super::conf::{NetworkConfigList, PluginConfig};
use super::error::InvokeError;
use super::exec::{self, Call, find_plugin};
use super::version::SpecVersion;
use super::{
    Attachment, CniInvoker, GcReport, ValidAttachment, VersionInfo, check_args, check_container_id,
    check_ifname,
};

impl CniInvoker {
    /// ADD: attaches the container; returns the last plugin's result (also cached).
    pub async fn add(&self, a: &Attachment) -> Result<Value, InvokeError> {
        validate(a, true)?;
        let net = &self.network;
        self.validate().await?;
        let mut prev: Option<Value> = None;
        for p in &net.plugins {
            let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
            let stdin = stdin_for(net, p, prev.as_ref(), Some(&a.runtime_config), None);
            let call = self.call(p, &binary, "ADD", Some(a), stdin);
            let out = exec::run(&call).await?;
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v @ Value::Object(_)) => prev = Some(v),
                Ok(_) => return Err(out.bad(&call, "result is not a JSON object")),
                Err(e) => return Err(out.bad(&call, format!("result is not JSON: {e}"))),
            }
        }
        let Some(result) = prev else {
            return Err(no_plugins(net));
        };
        self.cache.write(&CachedAttachment {
            kind: CACHE_KIND.to_owned(),
            container_id: a.container_id.clone(),
            if_name: a.ifname.clone(),
            network_name: net.name.clone(),
            netns: a.netns.as_deref().map(path_str).unwrap_or_default(),
            cni_args: a.args.clone(),
            capability_args: a.runtime_config.clone(),
            config: net.raw.clone(),
            result: result.clone(),
        })?;
        Ok(result)
    }

    /// DEL: detaches the container (plugins in reverse order), then drops
    /// the cache entry. Idempotent. When `a` has no runtime config or args,
    /// those cached at ADD are used.
    pub async fn del(&self, a: &Attachment) -> Result<(), InvokeError> {
        validate(a, false)?;
        let net = &self.network;
        let cached = match self.cache.read(&net.name, &a.container_id, &a.ifname) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cni DEL: ignoring unreadable cache entry");
                None
            }
        };
        let mut a = a.clone();
        if let Some(c) = &cached {
            if a.runtime_config.is_empty() {
                a.runtime_config = c.capability_args.clone();
            }
            if a.args.is_empty() {
                a.args = c.cni_args.clone();
            }
        }
        self.del_with(net, &a, cached.as_ref().map(|c| &c.result))
            .await?;
        self.cache.remove(&net.name, &a.container_id, &a.ifname)
    }

    async fn del_with(
        &self,
        net: &NetworkConfigList,
        a: &Attachment,
        cached: Option<&Value>,
    ) -> Result<(), InvokeError> {
        let prev = cached.filter(|_| net.version.at_least(SpecVersion::V0_4_0));
        for p in net.plugins.iter().rev() {
            let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
            let stdin = stdin_for(net, p, prev, Some(&a.runtime_config), None);
            exec::run(&self.call(p, &binary, "DEL", Some(a), stdin)).await?;
        }
        Ok(())
    }

    /// CHECK: verifies the attachment against its cached result.
    pub async fn check(&self, a: &Attachment) -> Result<(), InvokeError> {
        validate(a, true)?;
        let net = &self.network;
        if !net.version.at_least(SpecVersion::V0_4_0) {
            return Err(InvokeError::CommandNotSupported {
                command: "CHECK",
                network: net.name.clone(),
                version: net.cni_version.clone(),
                needed: "0.4.0",
            });
        }
        if net.disable_check {
            return Ok(());
        }
        let cached = self
            .cache
            .read(&net.name, &a.container_id, &a.ifname)?
            .ok_or_else(|| InvokeError::NoCachedResult {
                network: net.name.clone(),
                container_id: a.container_id.clone(),
                ifname: a.ifname.clone(),
            })?;
        for p in &net.plugins {
            let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
            let stdin = stdin_for(net, p, Some(&cached.result), Some(&a.runtime_config), None);
            exec::run(&self.call(p, &binary, "CHECK", Some(a), stdin)).await?;
        }
        Ok(())
    }

    /// STATUS: whether every plugin is ready for ADDs (lists < 1.1.0: `Ok` without running anything).
    pub async fn status(&self) -> Result<(), InvokeError> {
        let net = &self.network;
        if !net.version.at_least(SpecVersion::V1_1_0) {
            return Ok(());
        }
        for p in &net.plugins {
            let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
            let stdin = stdin_for(net, p, None, None, None);
            exec::run(&self.call(p, &binary, "STATUS", None, stdin)).await?;
        }
        Ok(())
    }

    /// GC: deletes stale cached attachments, then (>= 1.1.0) lets every
    /// plugin release what does not belong to `valid`.
    pub async fn gc(&self, valid: &[ValidAttachment]) -> Result<GcReport, InvokeError> {
        let net = &self.network;
        let mut report = GcReport::default();
        if net.disable_gc {
            return Ok(report);
        }
        let keep: HashSet<(&str, &str)> = valid
            .iter()
            .map(|v| (v.container_id.as_str(), v.ifname.as_str()))
            .collect();
        let (cached, mut errors) = self.cache.list(&net.name)?;
        for entry in cached {
            if keep.contains(&(entry.container_id.as_str(), entry.if_name.as_str())) {
                continue;
            }
            match self.del_stale(net, &entry).await {
                Ok(()) => report.deleted.push(ValidAttachment {
                    container_id: entry.container_id,
                    ifname: entry.if_name,
                }),
                Err(e) => errors.push(e),
            }
        }
        if net.version.at_least(SpecVersion::V1_1_0) {
            report.plugins_gc = true;
            let list = serde_json::to_value(valid).unwrap_or(Value::Array(Vec::new()));
            for p in &net.plugins {
                let run = async {
                    let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
                    let extra = ("cni.dev/valid-attachments", list.clone());
                    let stdin = stdin_for(net, p, None, None, Some(extra));
                    exec::run(&self.call(p, &binary, "GC", None, stdin)).await
                };
                if let Err(e) = run.await {
                    errors.push(e);
                }
            }
        }
        if errors.is_empty() {
            Ok(report)
        } else {
            Err(InvokeError::Gc {
                network: net.name.clone(),
                errors,
            })
        }
    }

    /// DEL of a cached attachment with the config it was added with.
    async fn del_stale(
        &self,
        net: &NetworkConfigList,
        e: &CachedAttachment,
    ) -> Result<(), InvokeError> {
        let cached_net = NetworkConfigList::from_value(
            &self.cache.path(&net.name, &e.container_id, &e.if_name),
            e.config.clone(),
        );
        let cached_net = match cached_net {
            Ok(n) if n.name == net.name => n,
            _ => net.clone(),
        };
        // The netns may be gone by now: DEL without one (the spec allows it).
        let netns = Some(PathBuf::from(&e.netns)).filter(|p| !e.netns.is_empty() && p.exists());
        let a = Attachment {
            container_id: e.container_id.clone(),
            netns,
            ifname: e.if_name.clone(),
            args: e.cni_args.clone(),
            runtime_config: e.capability_args.clone(),
        };
        validate(&a, false)?;
        self.del_with(&cached_net, &a, Some(&e.result)).await?;
        self.cache.remove(&net.name, &e.container_id, &e.if_name)
    }

    /// VERSION of one plugin of the search path.
    pub async fn version(&self, plugin_type: &str) -> Result<VersionInfo, InvokeError> {
        let binary = find_plugin(plugin_type, &self.plugin_path)?;
        let p = PluginConfig {
            plugin_type: plugin_type.to_owned(),
            capabilities: Vec::new(),
            conf: Map::new(),
        };
        let mut stdin = Map::new();
        stdin.insert(
            "cniVersion".into(),
            Value::String(self.network.cni_version.clone()),
        );
        let stdin = serde_json::to_vec(&Value::Object(stdin)).unwrap_or_default();
        let call = self.call(&p, &binary, "VERSION", None, stdin);
        let out = exec::run(&call).await?;
        match serde_json::from_slice::<VersionInfo>(&out.stdout) {
            Ok(info) => Ok(info),
            Err(e) => Err(out.bad(&call, format!("not a VERSION reply: {e}"))),
        }
    }

    /// Checks (once per plugin binary per invoker) that every plugin supports
    /// the list's cniVersion; [`Self::add`] calls it first.
    pub async fn validate(&self) -> Result<(), InvokeError> {
        let net = &self.network;
        for p in &net.plugins {
            let binary = find_plugin(&p.plugin_type, &self.plugin_path)?;
            if self.version_known(&binary) {
                continue;
            }
            let info = self.version(&p.plugin_type).await?;
            let supported = info
                .supported_versions
                .iter()
                .any(|v| SpecVersion::parse(v) == Some(net.version));
            if !supported {
                return Err(InvokeError::UnsupportedVersion {
                    plugin: p.plugin_type.clone(),
                    binary,
                    network: net.name.clone(),
                    version: net.cni_version.clone(),
                    supported: info.supported_versions,
                });
            }
            if let Ok(mut known) = self.versions_ok.lock() {
                known.insert(binary);
            }
        }
        Ok(())
    }

    fn version_known(&self, binary: &Path) -> bool {
        self.versions_ok
            .lock()
            .map(|known| known.contains(binary))
            .unwrap_or(false)
    }

    fn call<'a>(
        &'a self,
        p: &'a PluginConfig,
        binary: &'a Path,
        command: &'static str,
        a: Option<&Attachment>,
        stdin: Vec<u8>,
    ) -> Call<'a> {
        let mut env = vec![("CNI_COMMAND", command.to_owned())];
        if let Some(a) = a {
            env.push(("CNI_CONTAINERID", a.container_id.clone()));
            env.push((
                "CNI_NETNS",
                a.netns.as_deref().map(path_str).unwrap_or_default(),
            ));
            env.push(("CNI_IFNAME", a.ifname.clone()));
            let args: Vec<String> = a.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
            env.push(("CNI_ARGS", args.join(";")));
        }
        let search: Vec<String> = self.plugin_path.iter().map(|p| path_str(p)).collect();
        env.push(("CNI_PATH", search.join(":")));
        Call {
            plugin: &p.plugin_type,
            binary,
            command,
            env,
            stdin,
            timeout: self.timeout,
            netns: self.host_netns.as_ref().map(|fd| fd.as_fd()),
        }
    }
}

/// The stdin of one plugin: its config plus the list's `name` and
/// `cniVersion`, `prevResult`, the `runtimeConfig` it declared capabilities
/// for, and one extra key (GC's valid attachments).
fn stdin_for(
    net: &NetworkConfigList,
    p: &PluginConfig,
    prev: Option<&Value>,
    runtime: Option<&Map<String, Value>>,
    extra: Option<(&str, Value)>,
) -> Vec<u8> {
    let mut conf = p.conf.clone();
    conf.insert("name".into(), Value::String(net.name.clone()));
    conf.insert("cniVersion".into(), Value::String(net.cni_version.clone()));
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    if let Some(runtime) = runtime {
        let granted: Map<String, Value> = p
            .capabilities
            .iter()
            .filter_map(|c| runtime.get(c).map(|v| (c.clone(), v.clone())))
            .collect();
        if !granted.is_empty() {
            conf.insert("runtimeConfig".into(), Value::Object(granted));
        }
    }
    if let Some((k, v)) = extra {
        conf.insert(k.to_owned(), v);
    }
    // Serializing a `Value` with string keys cannot fail; an empty stdin
    // would surface as the plugin's decode error anyway.
    serde_json::to_vec(&Value::Object(conf)).unwrap_or_default()
}

fn validate(a: &Attachment, needs_netns: bool) -> Result<(), InvokeError> {
    check_container_id(&a.container_id)?;
    check_ifname(&a.ifname)?;
    check_args(&a.args)?;
    match &a.netns {
        Some(p) if p.as_os_str().is_empty() || path_str(p).contains('\0') => {
            Err(InvokeError::InvalidAttachment {
                field: "netns",
                reason: format!("{p:?} is not a netns path"),
            })
        }
        None if needs_netns => Err(InvokeError::InvalidAttachment {
            field: "netns",
            reason: "required for ADD and CHECK".into(),
        }),
        _ => Ok(()),
    }
}

fn no_plugins(net: &NetworkConfigList) -> InvokeError {
    InvokeError::ConfigInvalid {
        path: net.source.clone(),
        field: "plugins".into(),
        reason: "must name at least one plugin".into(),
    }
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_filters_capabilities_and_chains() {
        let net = NetworkConfigList::from_bytes(
            Path::new("t"),
            br#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge","runtimeConfig":{"old":1}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#,
        )
        .unwrap();
        let mut rc = Map::new();
        rc.insert("portMappings".into(), serde_json::json!([{"hostPort": 80}]));
        rc.insert("bandwidth".into(), serde_json::json!({}));
        let prev = serde_json::json!({"cniVersion":"1.0.0","ips":[]});
        let s: Value = serde_json::from_slice(&stdin_for(
            &net,
            &net.plugins[1],
            Some(&prev),
            Some(&rc),
            None,
        ))
        .unwrap();
        assert_eq!(s["name"], "n");
        assert_eq!(s["cniVersion"], "1.0.0");
        assert_eq!(s["prevResult"], prev);
        assert_eq!(
            s["runtimeConfig"],
            serde_json::json!({"portMappings":[{"hostPort":80}]})
        );
        let s: Value =
            serde_json::from_slice(&stdin_for(&net, &net.plugins[0], None, Some(&rc), None))
                .unwrap();
        assert_eq!(
            s["runtimeConfig"],
            serde_json::json!({"old": 1}),
            "no capability: left as written"
        );
        assert!(s.get("prevResult").is_none());
    }
}
