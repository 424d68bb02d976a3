//! Network configuration lists, loaded from a directory such as
//! `/etc/cni/net.d`.
//!
//! Files ending in `.conflist`, `.conf` and `.json` are read in lexical order
//! of their names (other files are ignored). A file with a `plugins` array is
//! a configuration list; any other (`.conf` style) is one plugin
//! configuration, turned into a list of that one plugin with its `name` and
//! `cniVersion`, as libcni does. Loading is strict: the first invalid file
//! fails with an error naming the file and the field, so a typo never
//! silently selects another network.
//!
//! The version used is `cniVersion`, or, when the list has `cniVersions`
//! (spec 1.1.0), the highest entry this invoker knows (<= 1.1.0).

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::InvokeError;
use super::version::SpecVersion;

/// Highest spec version this invoker speaks.
pub const MAX_VERSION: SpecVersion = SpecVersion::V1_1_0;

/// Largest config file read (a config is a few hundred bytes).
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// One plugin of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginConfig {
    /// The plugin's `type`: the name of the binary.
    pub plugin_type: String,
    /// Capabilities the plugin declares as enabled (`"capabilities": {"portMappings": true}`).
    pub capabilities: Vec<String>,
    /// The plugin's configuration object as written.
    pub conf: Map<String, Value>,
}

/// A network configuration list, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network's name (also the cache key prefix).
    pub name: String,
    /// The spec version used with every plugin of the list.
    pub cni_version: String,
    /// Parsed form of [`Self::cni_version`].
    pub version: SpecVersion,
    /// `disableCheck`: CHECK succeeds without running plugins.
    pub disable_check: bool,
    /// `disableGC`: GC does nothing.
    pub disable_gc: bool,
    /// The plugins, in ADD order.
    pub plugins: Vec<PluginConfig>,
    /// Where it was read from (`<memory>` for [`Self::from_bytes`] without a path).
    pub source: PathBuf,
    /// The list as JSON (a `.conf` is stored in its list form), kept in the result cache.
    pub raw: Value,
}

impl NetworkConfigList {
    /// Parses a list or a single-plugin config; `source` names it in errors.
    pub fn from_bytes(source: &Path, bytes: &[u8]) -> Result<Self, InvokeError> {
        let value: Value = serde_json::from_slice(bytes).map_err(|e| InvokeError::ConfigParse {
            path: source.to_owned(),
            source: e,
        })?;
        Self::from_value(source, value)
    }

    /// Validates a list (or single-plugin config) given as JSON.
    pub fn from_value(source: &Path, value: Value) -> Result<Self, InvokeError> {
        let bad = |field: &str, reason: &str| InvokeError::ConfigInvalid {
            path: source.to_owned(),
            field: field.to_owned(),
            reason: reason.to_owned(),
        };
        let Value::Object(top) = value else {
            return Err(bad("(top level)", "must be a JSON object"));
        };
        let name = match top.get("name") {
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad("name", "must be a string")),
            None => return Err(bad("name", "missing")),
        };
        if let Err(reason) = check_name(&name) {
            return Err(bad("name", &reason));
        }
        let (cni_version, version) = pick_version(&top).map_err(|(f, r)| bad(f, &r))?;
        let (plugins, raw) = match top.get("plugins") {
            Some(Value::Array(list)) => {
                if list.is_empty() {
                    return Err(bad("plugins", "must name at least one plugin"));
                }
                let mut plugins = Vec::with_capacity(list.len());
                for (i, p) in list.iter().enumerate() {
                    plugins
                        .push(plugin(p, &format!("plugins[{i}]")).map_err(|(f, r)| bad(&f, &r))?);
                }
                (plugins, Value::Object(top.clone()))
            }
            Some(_) => return Err(bad("plugins", "must be an array")),
            None => {
                let p = plugin(&Value::Object(top.clone()), "").map_err(|(f, r)| bad(&f, &r))?;
                let mut list = Map::new();
                list.insert("cniVersion".into(), Value::String(cni_version.clone()));
                list.insert("name".into(), Value::String(name.clone()));
                list.insert(
                    "plugins".into(),
                    Value::Array(vec![Value::Object(top.clone())]),
                );
                (vec![p], Value::Object(list))
            }
        };
        if plugins.len() > 1 && !version.at_least(SpecVersion::V0_3_0) {
            return Err(bad(
                "cniVersion",
                "chaining several plugins needs cniVersion 0.3.0 or later",
            ));
        }
        Ok(NetworkConfigList {
            name,
            cni_version,
            version,
            disable_check: flag(&top, "disableCheck").map_err(|r| bad("disableCheck", &r))?,
            disable_gc: flag(&top, "disableGC").map_err(|r| bad("disableGC", &r))?,
            plugins,
            source: source.to_owned(),
            raw,
        })
    }

    /// Reads every config in `dir`, in lexical order of file names.
    pub fn load_dir(dir: &Path) -> Result<Vec<Self>, InvokeError> {
        let mut files = Vec::new();
        for entry in fs::read_dir(dir).map_err(InvokeError::io("read config dir", dir))? {
            let entry = entry.map_err(InvokeError::io("read config dir", dir))?;
            let path = entry.path();
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
            if matches!(ext, "conflist" | "conf" | "json") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut lists = Vec::with_capacity(files.len());
        for path in files {
            let bytes = read_bounded(&path)?;
            lists.push(Self::from_bytes(&path, &bytes)?);
        }
        Ok(lists)
    }

    /// The network called `name` in `dir`, or the first one when `name` is `None`.
    pub fn find(dir: &Path, name: Option<&str>) -> Result<Self, InvokeError> {
        let lists = Self::load_dir(dir)?;
        let found = match name {
            Some(n) => lists.into_iter().find(|l| l.name == n),
            None => lists.into_iter().next(),
        };
        found.ok_or_else(|| InvokeError::NoNetwork {
            dir: dir.to_owned(),
            name: name.map(str::to_owned),
        })
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, InvokeError> {
    let meta = fs::metadata(path).map_err(InvokeError::io("stat config", path))?;
    if meta.len() > MAX_CONFIG_BYTES {
        return Err(InvokeError::ConfigInvalid {
            path: path.to_owned(),
            field: "(file)".into(),
            reason: format!(
                "{} bytes is over the {MAX_CONFIG_BYTES}-byte limit",
                meta.len()
            ),
        });
    }
    fs::read(path).map_err(InvokeError::io("read config", path))
}

/// Network names: an alphanumeric first character, then alphanumerics, `_`, `.`, `-`.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    match chars.next() {
        None => return Err("must not be empty".into()),
        Some(c) if !c.is_ascii_alphanumeric() => {
            return Err(format!("{name:?} must start with a letter or digit"));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(format!(
            "{name:?} contains {c:?} (allowed: letters, digits, _ . -)"
        ));
    }
    Ok(())
}

fn pick_version(top: &Map<String, Value>) -> Result<(String, SpecVersion), (&'static str, String)> {
    if let Some(v) = top.get("cniVersions") {
        let Value::Array(items) = v else {
            return Err(("cniVersions", "must be an array of strings".into()));
        };
        let mut best: Option<(String, SpecVersion)> = None;
        for item in items {
            let Value::String(s) = item else {
                return Err(("cniVersions", "must be an array of strings".into()));
            };
            let parsed = SpecVersion::parse(s)
                .ok_or_else(|| ("cniVersions", format!("{s:?} is not a version")))?;
            if parsed <= MAX_VERSION && best.as_ref().is_none_or(|(_, b)| parsed > *b) {
                best = Some((s.clone(), parsed));
            }
        }
        if let Some(best) = best {
            return Ok(best);
        }
    }
    match top.get("cniVersion") {
        Some(Value::String(s)) => {
            let v = SpecVersion::parse(s)
                .ok_or_else(|| ("cniVersion", format!("{s:?} is not a version")))?;
            Ok((s.clone(), v))
        }
        Some(_) => Err(("cniVersion", "must be a string".into())),
        None => Err(("cniVersion", "missing".into())),
    }
}

fn plugin(v: &Value, at: &str) -> Result<PluginConfig, (String, String)> {
    let field = |f: &str| {
        if at.is_empty() {
            f.to_owned()
        } else {
            format!("{at}.{f}")
        }
    };
    let Value::Object(conf) = v else {
        return Err((at.to_owned(), "must be a JSON object".into()));
    };
    let plugin_type = match conf.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err((field("type"), "must be a string".into())),
        None => return Err((field("type"), "missing".into())),
    };
    if plugin_type.is_empty()
        || plugin_type == "."
        || plugin_type == ".."
        || plugin_type.contains(['/', '\0'])
    {
        return Err((
            field("type"),
            format!("{plugin_type:?} is not a plugin binary name"),
        ));
    }
    let mut capabilities = Vec::new();
    match conf.get("capabilities") {
        None | Some(Value::Null) => {}
        Some(Value::Object(caps)) => {
            for (k, v) in caps {
                match v {
                    Value::Bool(true) => capabilities.push(k.clone()),
                    Value::Bool(false) => {}
                    _ => {
                        return Err((
                            field(&format!("capabilities.{k}")),
                            "must be a boolean".into(),
                        ));
                    }
                }
            }
        }
        Some(_) => return Err((field("capabilities"), "must be an object".into())),
    }
    Ok(PluginConfig {
        plugin_type,
        capabilities,
        conf: conf.clone(),
    })
}

/// `disableCheck` / `disableGC`: a boolean, or the strings "true"/"false" (as libcni accepts).
fn flag(top: &Map<String, Value>, key: &str) -> Result<bool, String> {
    match top.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => Ok(true),
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err("must be a boolean".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetworkConfigList, InvokeError> {
        NetworkConfigList::from_bytes(Path::new("t.conflist"), s.as_bytes())
    }

    fn field_of(e: InvokeError) -> String {
        match e {
            InvokeError::ConfigInvalid { field, .. } => field,
            other => panic!("expected ConfigInvalid, got {other}"),
        }
    }

    #[test]
    fn list_and_single_conf() {
        let l = parse(r#"{"cniVersion":"1.0.0","name":"n1","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true,"x":false}}]}"#).unwrap();
        assert_eq!(l.plugins.len(), 2);
        assert_eq!(l.plugins[1].capabilities, vec!["portMappings".to_string()]);
        assert_eq!(l.version, SpecVersion::V1_0_0);
        let c =
            parse(r#"{"cniVersion":"0.4.0","name":"n2","type":"bridge","bridge":"b0"}"#).unwrap();
        assert_eq!(c.plugins.len(), 1);
        assert_eq!(c.plugins[0].conf["bridge"], "b0");
        assert_eq!(c.raw["plugins"][0]["type"], "bridge");
        assert_eq!(c.raw["name"], "n2");
    }

    #[test]
    fn cni_versions_picks_highest_known() {
        let l = parse(r#"{"cniVersion":"1.0.0","cniVersions":["1.0.0","1.1.0","9.0.0"],"name":"n","plugins":[{"type":"a"}]}"#).unwrap();
        assert_eq!(l.cni_version, "1.1.0");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"[]"#, "(top level)"),
            (r#"{"cniVersion":"1.0.0","plugins":[{"type":"a"}]}"#, "name"),
            (
                r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"a"}]}"#,
                "name",
            ),
            (r#"{"name":"n","plugins":[{"type":"a"}]}"#, "cniVersion"),
            (
                r#"{"cniVersion":"one","name":"n","plugins":[{"type":"a"}]}"#,
                "cniVersion",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                "plugins",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":{}}"#,
                "plugins",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"x":1}]}"#,
                "plugins[1].type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../sh"}]}"#,
                "plugins[0].type",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a","capabilities":{"p":1}}]}"#,
                "plugins[0].capabilities.p",
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","disableCheck":3,"plugins":[{"type":"a"}]}"#,
                "disableCheck",
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","plugins":[{"type":"a"},{"type":"b"}]}"#,
                "cniVersion",
            ),
            (r#"{"cniVersion":"1.0.0","name":"n"}"#, "type"),
        ];
        for (json, field) in cases {
            assert_eq!(field_of(parse(json).unwrap_err()), field, "{json}");
        }
        assert!(matches!(parse("{"), Err(InvokeError::ConfigParse { .. })));
    }

    #[test]
    fn dir_order_and_pick() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, s: &str| fs::write(dir.path().join(n), s).unwrap();
        w(
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"x"}]}"#,
        );
        w(
            "10-a.conf",
            r#"{"cniVersion":"1.0.0","name":"a","type":"x"}"#,
        );
        w("05-ignored.txt", "not json");
        assert_eq!(NetworkConfigList::find(dir.path(), None).unwrap().name, "a");
        assert_eq!(
            NetworkConfigList::find(dir.path(), Some("b")).unwrap().name,
            "b"
        );
        assert!(matches!(
            NetworkConfigList::find(dir.path(), Some("zz")),
            Err(InvokeError::NoNetwork { .. })
        ));
        w(
            "30-bad.json",
            r#"{"cniVersion":"1.0.0","name":"c","plugins":[{}]}"#,
        );
        let err = NetworkConfigList::find(dir.path(), None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("30-bad.json") && err.contains("plugins[0].type"),
            "{err}"
        );
    }
}
