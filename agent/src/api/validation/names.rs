//! Name syntaxes of apimachinery's `util/validation`: each check returns
//! the API server's own messages (empty when the value is valid).

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;
pub const LABEL_VALUE_MAX: usize = 63;

fn max_len(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_alnum_lower(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_alnum_lower(b[0])
        && is_alnum_lower(b[b.len() - 1])
        && b.iter().all(|&c| is_alnum_lower(c) || c == b'-')
}

/// `IsDNS1123Label`.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len(DNS1123_LABEL_MAX));
    }
    if !is_label(s) {
        out.push(format!(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', \
             and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', \
             regex used for validation is '{DNS1123_LABEL_FMT}')"
        ));
    }
    out
}

/// `IsDNS1123Subdomain`.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(is_label) {
        out.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', \
             regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
                .to_string(),
        );
    }
    out
}

/// A name that is valid as a prefix (`generateName`): the trailing `-`
/// is masked as the API server does (`maskTrailingDash`).
pub fn name_prefix(s: &str, label: bool) -> Vec<String> {
    let masked = match s.strip_suffix('-') {
        Some(m) if s.len() > 1 => format!("{m}a"),
        _ => s.to_string(),
    };
    if label {
        dns1123_label(&masked)
    } else {
        dns1123_subdomain(&masked)
    }
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// `IsQualifiedName` (label and annotation keys): `[prefix/]name`.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                out.extend(
                    dns1123_subdomain(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            out.push(format!(
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must \
                 start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or \
                 '123-abc', regex used for validation is '{QUALIFIED_NAME_FMT}') with an optional DNS \
                 subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        out.push(format!("name part {}", max_len(63)));
    }
    if !name.is_empty() && !is_qualified_part(name) {
        out.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and \
             end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex \
             used for validation is '{QUALIFIED_NAME_FMT}')"
        ));
    }
    out
}

/// `IsValidLabelValue`.
pub fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        out.push(max_len(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        out.push(format!(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' \
             or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or \
             'my_value',  or '12345', regex used for validation is '({QUALIFIED_NAME_FMT})?')"
        ));
    }
    out
}

/// `IsEnvVarName`.
pub fn env_var_name(s: &str) -> Vec<String> {
    let b = s.as_bytes();
    let ok = !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    let mut out = Vec::new();
    if !ok {
        out.push(
            "a valid environment variable name must consist of alphabetic characters, digits, '_', \
             '-', or '.', and must not start with a digit (e.g. 'my.env-name',  or 'MY_ENV.NAME',  \
             or 'MyEnvName1', regex used for validation is '[-._a-zA-Z][-._a-zA-Z0-9]*')"
                .to_string(),
        );
    }
    if s == "." || s == ".." || s.starts_with("..") {
        out.push(dots_message(s));
    }
    out
}

fn dots_message(s: &str) -> String {
    match s {
        "." => "must not be '.'".to_string(),
        ".." => "must not be '..'".to_string(),
        _ => "must not start with '..'".to_string(),
    }
}

/// `IsConfigMapKey` (ConfigMap and Secret keys, volume item keys).
pub fn config_map_key(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len(DNS1123_SUBDOMAIN_MAX));
    }
    let ok = !s.is_empty()
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if !ok {
        out.push(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. \
             'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"
                .to_string(),
        );
    }
    if s == "." || s == ".." || s.starts_with("..") {
        out.push(dots_message(s));
    }
    out
}

/// `IsValidPortName` (IANA_SVC_NAME).
pub fn port_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push("must be no more than 15 characters".to_string());
    }
    if !s.bytes().all(|c| is_alnum_lower(c) || c == b'-') {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".into());
    }
    out
}

/// A sysctl name (`kernel.shm_rlimit`, `net/ipv4/ip_forward`).
pub fn sysctl_name(s: &str) -> Vec<String> {
    let seg_ok = |seg: &str| {
        let b = seg.as_bytes();
        !b.is_empty()
            && is_alnum_lower(b[0])
            && is_alnum_lower(b[b.len() - 1])
            && b.iter()
                .all(|&c| is_alnum_lower(c) || c == b'-' || c == b'_')
    };
    let ok = s.len() <= 253 && s.split(['.', '/']).all(seg_ok);
    if ok {
        Vec::new()
    } else {
        vec![
            "must have at most 253 characters and match regex \
             ^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$"
                .to_string(),
        ]
    }
}

/// `validateLocalDescendingPath`: relative, no `..` element.
pub fn local_descending_path(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.starts_with('/') {
        out.push("must be a relative path".to_string());
    }
    if s.split('/').any(|e| e == "..") {
        out.push("must not contain '..'".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("web-1").is_empty());
        assert!(!dns1123_label("Web").is_empty());
        assert!(!dns1123_label("-a").is_empty());
        assert!(!dns1123_label("a.b").is_empty());
        assert_eq!(dns1123_label(&"a".repeat(64)).len(), 1);
        assert!(dns1123_subdomain("a.b-c.d").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(name_prefix("web-", false).is_empty());
        assert!(!name_prefix("Web-", false).is_empty());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("example.com/My_App.1").is_empty());
        assert_eq!(
            qualified_name("/x"),
            vec!["prefix part must be non-empty".to_string()]
        );
        assert!(!qualified_name("a/b/c").is_empty());
        assert!(!qualified_name("Example.com/x")[0].is_empty());
        assert!(!qualified_name("-x").is_empty());
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert!(!label_value("a b").is_empty());
        assert!(!label_value(&"a".repeat(64)).is_empty());
    }

    #[test]
    fn keys_ports_env() {
        assert!(config_map_key("key.name").is_empty());
        assert!(!config_map_key("a/b").is_empty());
        assert!(!config_map_key("..a").is_empty());
        assert!(port_name("http").is_empty());
        assert!(!port_name("HTTP").is_empty());
        assert!(!port_name("123").is_empty());
        assert!(!port_name("a--b").is_empty());
        assert!(!port_name("verylongportname1").is_empty());
        assert!(env_var_name("MY_VAR.x-1").is_empty());
        assert!(!env_var_name("1X").is_empty());
        assert!(!env_var_name("A=B").is_empty());
        assert!(sysctl_name("net.ipv4.ip_forward").is_empty());
        assert!(!sysctl_name("Net.x").is_empty());
        assert!(local_descending_path("a/b").is_empty());
        assert_eq!(local_descending_path("/a/../b").len(), 2);
    }
}
