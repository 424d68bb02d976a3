//! `herd kubeconfig`: a kubeconfig for this cluster, asked of the local
//! agent over its root-only unix socket (it holds the CA).

use clap::Args;
use hyper::Method;

use super::Ctx;

/// `herd kubeconfig` flags.
#[derive(Debug, Args)]
pub struct KubeconfigArgs {
    /// The user named in the client certificate (`CN`); its group is
    /// `system:masters`.
    #[arg(long, default_value = "herd-admin")]
    pub user: String,
    /// Authenticate with a new bearer (bootstrap) token instead of a client
    /// certificate; the token is a Secret in kube-system, so it can be
    /// revoked by deleting it.
    #[arg(long)]
    pub token: bool,
    /// The API URL to write (default: this node's HTTPS address).
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
}

/// Characters a user name may have (it is written into YAML unquoted).
fn valid_user(u: &str) -> bool {
    !u.is_empty()
        && u.len() <= 64
        && u.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:@".contains(&b))
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub async fn run(ctx: &Ctx, args: KubeconfigArgs) -> anyhow::Result<()> {
    if !valid_user(&args.user) {
        anyhow::bail!(
            "error: invalid --user {:?}: 1 to 64 letters, digits or -_.:@",
            args.user
        );
    }
    let mut path = format!("/herd/v1/kubeconfig?user={}", encode(&args.user));
    if args.token {
        path.push_str("&token=true");
    }
    if let Some(s) = &args.server_url {
        path.push_str(&format!("&server={}", encode(s)));
    }
    let bytes = ctx.client.request_bytes(Method::GET, &path, None).await?;
    use std::io::Write;
    std::io::stdout().write_all(&bytes)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names() {
        assert!(valid_user("herd-admin"));
        assert!(valid_user("system:node:a"));
        assert!(!valid_user(""));
        assert!(!valid_user("a\nb: c"));
        assert!(!valid_user("a b"));
    }

    #[test]
    fn query_encoding() {
        assert_eq!(
            encode("https://1.2.3.4:6443"),
            "https%3A%2F%2F1.2.3.4%3A6443"
        );
    }
}
