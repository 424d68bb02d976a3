//! A throwaway local OCI registry: Debian's `docker-registry` (CNCF
//! distribution 2.8) on `127.0.0.1:<free port>`, plain HTTP.
//!
//! [`Registry::start`] writes a config into a private temp dir (filesystem
//! storage there, optional htpasswd auth with a bcrypt entry made by
//! `htpasswd -Bbn`), starts the server and returns only once `GET /v2/`
//! answers 200 or 401; readiness is polled a bounded number of times and a
//! server that exits early is reported with its stderr. Drop kills and
//! reaps the process and removes the temp dir. Pushing lives in
//! [`crate::push`].

use std::fs::{self, File};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};

/// The registry binary (Debian package `docker-registry`).
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// How to start the registry.
#[derive(Clone, Debug, Default)]
pub struct RegistryOpts {
    /// `(user, password)`; when set every request needs basic auth.
    pub basic_auth: Option<(String, String)>,
    /// Defaults to [`REGISTRY_BIN`].
    pub binary: Option<PathBuf>,
}

/// A running registry; see the module docs.
#[derive(Debug)]
pub struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
    auth: Option<(String, String)>,
    client: Client,
}

const READY_ATTEMPTS: u32 = 200;
const READY_INTERVAL: Duration = Duration::from_millis(25);
const START_ATTEMPTS: u32 = 3;

impl Registry {
    /// Starts a registry; retries on a fresh port if the chosen one was
    /// taken between probing and binding.
    pub fn start(opts: RegistryOpts) -> Result<Registry> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            match Self::start_once(&opts) {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("registry did not start")))
    }

    fn start_once(opts: &RegistryOpts) -> Result<Registry> {
        let dir = tempfile::tempdir().context("creating registry temp dir")?;
        let port = free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let data = dir.path().join("data");
        fs::create_dir(&data).context("creating registry storage dir")?;
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n",
            data.display()
        );
        if let Some((user, pass)) = &opts.basic_auth {
            let htpasswd = dir.path().join("htpasswd");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .context("running htpasswd (apache2-utils)")?;
            if !out.status.success() {
                bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            fs::write(&htpasswd, &out.stdout).context("writing htpasswd file")?;
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: herd-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).context("writing registry config")?;
        let stderr_path = dir.path().join("stderr.log");
        let stderr = File::create(&stderr_path).context("creating registry log")?;
        let binary = opts
            .binary
            .clone()
            .unwrap_or_else(|| PathBuf::from(REGISTRY_BIN));
        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("spawning {}", binary.display()))?;
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building http client")?;
        let mut reg = Registry {
            child,
            addr,
            dir,
            auth: opts.basic_auth.clone(),
            client,
        };
        reg.wait_ready(&stderr_path)?;
        Ok(reg)
    }

    fn wait_ready(&mut self, stderr_path: &Path) -> Result<()> {
        let url = format!("{}/v2/", self.url());
        for _ in 0..READY_ATTEMPTS {
            if let Some(status) = self.child.try_wait().context("polling registry")? {
                let log = fs::read_to_string(stderr_path).unwrap_or_default();
                bail!("registry exited early ({status}): {log}");
            }
            let resp = self.client.get(&url).timeout(Duration::from_secs(1)).send();
            if let Ok(r) = resp
                && matches!(r.status(), StatusCode::OK | StatusCode::UNAUTHORIZED)
            {
                return Ok(());
            }
            thread::sleep(READY_INTERVAL);
        }
        let log = fs::read_to_string(stderr_path).unwrap_or_default();
        bail!(
            "registry at {} not ready after {READY_ATTEMPTS} attempts: {log}",
            self.addr
        )
    }

    /// `127.0.0.1:PORT`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The credentials the registry requires, if any.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.auth.as_ref().map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// Where the registry stores its data.
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A request to `url` (absolute, or a path such as `/v2/`), carrying
    /// the configured credentials.
    pub fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        let url = if url.starts_with("http://") {
            url.to_string()
        } else {
            format!("{}{url}", self.url())
        };
        let req = self.client.request(method, url);
        match &self.auth {
            Some((u, p)) => req.basic_auth(u, Some(p)),
            None => req,
        }
    }

    /// A request without credentials, whatever the configuration.
    pub fn request_anonymous(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client.request(method, format!("{}{path}", self.url()))
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Errors mean the process is already gone; nothing else to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("probing for a free port")?;
    Ok(l.local_addr().context("reading probed port")?.port())
}
