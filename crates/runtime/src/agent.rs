//! [`Agent`]: exec and file operations over one agent connection — the same
//! for a sandbox of the runtime ([`crate::Sandbox::agent`]) and for an agent
//! endpoint reached directly ([`Agent::connect`]).

use std::time::Duration;

use bytes::Bytes;
use hearth_client::{pb, Client, ConnectOptions, Endpoint};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::error::{Error, Result};
use crate::exec::{ExecOutput, ExecSpec, ExecStream};

/// A connection to one guest agent.
#[derive(Clone)]
pub struct Agent {
    client: Client,
    /// What it is, for error messages (`vm ab12cd34`, `unix:/tmp/a.sock`).
    label: String,
    /// Environment every exec gets first (the sandbox image's).
    base_env: Vec<(String, String)>,
    /// The user execs run as when they name none (the sandbox image's).
    default_user: Option<String>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("label", &self.label).finish()
    }
}

impl Agent {
    /// Connects to an agent endpoint (waits for READY within `timeout`).
    pub async fn connect(endpoint: &Endpoint, timeout: Duration) -> Result<Self> {
        let opts = ConnectOptions {
            timeout,
            ..Default::default()
        };
        let client = Client::connect(endpoint, &opts)
            .await
            .map_err(|e| Error::agent(format!("cannot reach the agent at {endpoint}"), e))?;
        Ok(Self::new(client, endpoint.to_string(), Vec::new()))
    }

    pub(crate) fn new(client: Client, label: String, base_env: Vec<(String, String)>) -> Self {
        Self {
            client,
            label,
            base_env,
            default_user: None,
        }
    }

    /// Sets the user execs run as when they name none.
    pub(crate) fn with_user(mut self, user: Option<String>) -> Self {
        self.default_user = user;
        self
    }

    pub(crate) fn default_user(&self) -> Option<&str> {
        self.default_user.as_deref()
    }

    /// The agent's READY frame (versions, capabilities, boot timings).
    pub fn ready(&self) -> &pb::Ready {
        self.client.ready()
    }

    /// The underlying protocol client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// The sandbox's environment, put before every exec's own.
    pub(crate) fn base_env(&self) -> &[(String, String)] {
        &self.base_env
    }

    fn err(
        &self,
        what: impl std::fmt::Display,
    ) -> impl FnOnce(hearth_client::ClientError) -> Error + '_ {
        let context = format!("{}: {what}", self.label);
        move |e| Error::agent(context, e)
    }

    /// Starts a command and streams its events.
    pub async fn exec_stream(&self, spec: &ExecSpec) -> Result<ExecStream> {
        spec.validate()?;
        let handle = self
            .client
            .exec_stream(spec.to_start(&self.base_env, self.default_user()))
            .await
            .map_err(self.err(format_args!("cannot start {:?}", spec.argv[0])))?;
        let stream = ExecStream {
            handle,
            label: self.label.clone(),
        };
        if !spec.stdin_inline() {
            let ctl = stream.control();
            let data = Bytes::copy_from_slice(&spec.stdin);
            let (keep_open, label) = (spec.stdin_open, self.label.clone());
            tokio::spawn(async move {
                if let Err(e) = ctl.write_stdin(data).await {
                    tracing::debug!(agent = %label, error = %e, "stdin not delivered");
                }
                if !keep_open {
                    ctl.close_stdin().await;
                }
            });
        }
        Ok(stream)
    }

    /// Runs a command to its end and collects its output.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        let mut spec = spec.clone();
        spec.stdin_open = false;
        self.exec_stream(&spec).await?.collect().await
    }

    pub async fn system_info(&self) -> Result<pb::SystemInfoResult> {
        self.client
            .system_info()
            .await
            .map_err(self.err("cannot read system information"))
    }

    /// One sample of the guest's resource use.
    pub async fn stats(&self) -> Result<crate::Stats> {
        self.client
            .stats()
            .await
            .map(|r| crate::Stats::from_pb(&r))
            .map_err(self.err("cannot read guest stats"))
    }

    pub async fn ping(&self) -> Result<Duration> {
        self.client.ping().await.map_err(self.err("ping failed"))
    }

    /// A whole guest file.
    pub async fn read_file(&self, path: &str) -> Result<Bytes> {
        self.client
            .read_file(path)
            .await
            .map_err(self.err(format_args!("cannot read :{path}")))
    }

    /// Streams a guest file into `w`; returns the bytes copied.
    pub async fn read_file_to<W: AsyncWrite + Unpin>(&self, path: &str, w: &mut W) -> Result<u64> {
        self.client
            .read_file_to(path, w)
            .await
            .map_err(self.err(format_args!("cannot read :{path}")))
    }

    /// Writes a guest file from `r` (atomically: temp name, fsync, rename).
    pub async fn write_file<R: AsyncRead + Unpin>(
        &self,
        path: &str,
        r: &mut R,
        mode: u32,
    ) -> Result<u64> {
        self.client
            .write_file(path, r, mode, false)
            .await
            .map_err(self.err(format_args!("cannot write :{path}")))
    }

    pub async fn write_bytes(&self, path: &str, data: &[u8], mode: u32) -> Result<u64> {
        let mut r = data;
        self.write_file(path, &mut r, mode).await
    }

    pub async fn stat(&self, path: &str) -> Result<pb::FileInfo> {
        self.client
            .stat(path)
            .await
            .map_err(self.err(format_args!("cannot stat :{path}")))
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<pb::FileInfo>> {
        self.client
            .list_dir(path)
            .await
            .map_err(self.err(format_args!("cannot list :{path}")))
    }

    /// Creates a directory; an existing one is fine when `parents`.
    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<()> {
        match self.client.mkdir(path, mode, parents).await {
            Ok(()) => Ok(()),
            Err(e) if parents && e.remote_code() == Some(pb::ErrorCode::AlreadyExists) => Ok(()),
            Err(e) => Err(self.err(format_args!("cannot create :{path}"))(e)),
        }
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.client
            .remove(path, recursive)
            .await
            .map_err(self.err(format_args!("cannot remove :{path}")))
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.client
            .rename(from, to)
            .await
            .map_err(self.err(format_args!("cannot rename :{from} to :{to}")))
    }
}
