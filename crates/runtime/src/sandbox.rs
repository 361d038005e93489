//! [`Sandbox`]: one sandbox of the runtime — its record, and its agent reached
//! through the backend on first use. Failures while talking to it say whether
//! the sandbox itself died.

use std::path::Path;
use std::time::Duration;

use hearth_client::pb;
use tokio::sync::OnceCell;

use crate::agent::Agent;
use crate::background::{AttachStream, DetachSpec, ProcessInfo, ProcessRef};
use crate::error::{Error, Result};
use crate::exec::{ExecOutput, ExecSpec, ExecStream};
use crate::files::Skipped;
use crate::runtime::Runtime;
use crate::state::{VmRecord, VmStatus};

/// A sandbox handle. Holds one agent connection once one is needed.
pub struct Sandbox {
    rt: Runtime,
    record: VmRecord,
    agent: OnceCell<Agent>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.record.id)
            .finish()
    }
}

impl Sandbox {
    pub(crate) fn new(rt: Runtime, record: VmRecord) -> Self {
        Self {
            rt,
            record,
            agent: OnceCell::new(),
        }
    }

    pub(crate) fn with_agent(rt: Runtime, record: VmRecord, agent: Agent) -> Self {
        Self {
            rt,
            record,
            agent: OnceCell::new_with(Some(agent)),
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    pub fn name(&self) -> Option<&str> {
        self.record.name.as_deref()
    }

    /// The record as it was when this handle was made.
    pub fn record(&self) -> &VmRecord {
        &self.record
    }

    pub fn status(&self) -> VmStatus {
        self.record.status
    }

    pub(crate) fn runtime(&self) -> &Runtime {
        &self.rt
    }

    /// A connection of its own to the agent (for a stream that holds one,
    /// like a log follow), apart from the shared [`Sandbox::agent`].
    pub(crate) async fn new_connection(&self) -> Result<hearth_client::Client> {
        self.refuse_paused()?;
        let handle = self.record.backend.as_ref().ok_or_else(|| {
            Error::Internal(format!("vm {} has no backend handle", self.record.id))
        })?;
        match self
            .rt
            .backend()
            .connect(handle, self.rt.connect_timeout())
            .await
        {
            Ok(c) => Ok(c),
            Err(e) => Err(self.explain(e.into()).await),
        }
    }

    /// The agent connection (made now if there is none).
    pub async fn agent(&self) -> Result<&Agent> {
        self.agent
            .get_or_try_init(|| async {
                self.refuse_paused()?;
                if self.record.status != VmStatus::Running {
                    return Err(Error::WrongState {
                        id: self.record.id.clone(),
                        status: self.record.status,
                        hint: " (boot it again with `hearth vm start`)",
                    });
                }
                let handle = self.record.backend.as_ref().ok_or_else(|| {
                    Error::Internal(format!("vm {} has no backend handle", self.record.id))
                })?;
                let client = self
                    .rt
                    .backend()
                    .connect(handle, self.rt.connect_timeout())
                    .await
                    .map_err(Error::from);
                match client {
                    Ok(c) => Ok(Agent::new(
                        c,
                        format!("vm {}", self.record.id),
                        self.record.env.clone(),
                    )
                    .with_user(self.record.user.clone())),
                    Err(e) => Err(self.explain(e).await),
                }
            })
            .await
    }

    /// Turns a failure while talking to the sandbox into [`Error::Died`] when
    /// the sandbox itself is gone (and records that).
    pub async fn explain(&self, e: Error) -> Error {
        let Some(handle) = &self.record.backend else {
            return e;
        };
        // The VMM may take a moment to exit after its guest went away.
        for _ in 0..4 {
            match self.rt.backend().health(handle) {
                Ok(hearth_vmm::Health::Running) => {}
                Ok(hearth_vmm::Health::Broken { reason }) => return self.died(reason, e).await,
                Ok(hearth_vmm::Health::Exited) => {
                    return self.died("its VMM process exited".into(), e).await
                }
                Err(_) => return e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        e
    }

    async fn died(&self, reason: String, e: Error) -> Error {
        if let Err(r) = self.rt.reconcile().await {
            tracing::warn!(sandbox_id = %self.record.id, error = %r, "cannot record a dead vm");
        }
        Error::Died {
            id: self.record.id.clone(),
            reason,
            source: Box::new(e),
        }
    }

    async fn call<T>(&self, f: impl AsyncFnOnce(&Agent) -> Result<T>) -> Result<T> {
        let agent = self.agent().await?;
        match f(agent).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// Runs a command to its end; the sandbox's environment comes first.
    pub async fn exec(&self, spec: &ExecSpec) -> Result<ExecOutput> {
        self.call(async |a| a.exec(spec).await).await
    }

    /// Starts a command and streams it. Errors later in the stream can be
    /// passed to [`Sandbox::explain`].
    pub async fn exec_stream(&self, spec: &ExecSpec) -> Result<ExecStream> {
        self.call(async |a| a.exec_stream(spec).await).await
    }

    pub async fn read_file(&self, path: &str) -> Result<bytes::Bytes> {
        self.call(async |a| a.read_file(path).await).await
    }

    /// Streams a guest file into `w` (bounded memory); returns the bytes copied.
    pub async fn read_file_to<W: tokio::io::AsyncWrite + Unpin>(
        &self,
        path: &str,
        w: &mut W,
    ) -> Result<u64> {
        self.call(async |a| a.read_file_to(path, w).await).await
    }

    /// Writes a guest file from `r` as it arrives (atomically: temp name,
    /// fsync, rename); returns the bytes written.
    pub async fn write_file<R: tokio::io::AsyncRead + Unpin>(
        &self,
        path: &str,
        r: &mut R,
        mode: u32,
    ) -> Result<u64> {
        self.call(async |a| a.write_file(path, r, mode).await).await
    }

    pub async fn write_bytes(&self, path: &str, data: &[u8], mode: u32) -> Result<u64> {
        self.call(async |a| a.write_bytes(path, data, mode).await)
            .await
    }

    pub async fn stat(&self, path: &str) -> Result<pb::FileInfo> {
        self.call(async |a| a.stat(path).await).await
    }

    pub async fn list_dir(&self, path: &str) -> Result<Vec<pb::FileInfo>> {
        self.call(async |a| a.list_dir(path).await).await
    }

    pub async fn mkdir(&self, path: &str, mode: u32, parents: bool) -> Result<()> {
        self.call(async |a| a.mkdir(path, mode, parents).await)
            .await
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        self.call(async |a| a.remove(path, recursive).await).await
    }

    pub async fn rename(&self, from: &str, to: &str) -> Result<()> {
        self.call(async |a| a.rename(from, to).await).await
    }

    /// Copies a host file or directory into the sandbox.
    pub async fn copy_in(&self, local: &Path, remote: &str) -> Result<(u64, Skipped)> {
        self.call(async |a| a.copy_in(local, remote).await).await
    }

    /// Copies a sandbox file or directory to the host.
    pub async fn copy_out(&self, remote: &str, local: &Path) -> Result<(u64, Skipped)> {
        self.call(async |a| a.copy_out(remote, local).await).await
    }

    pub async fn system_info(&self) -> Result<pb::SystemInfoResult> {
        self.call(async |a| a.system_info().await).await
    }

    /// One sample of the guest's CPU, memory, disk, load, process and network
    /// counters (see [`crate::cpu_percent`] for a rate between two).
    pub async fn stats(&self) -> Result<crate::Stats> {
        self.call(async |a| a.stats().await).await
    }

    /// Watches `path` in the sandbox (and below it when `recursive`); events
    /// come in order, see [`crate::Watch`].
    pub async fn watch(&self, path: &str, recursive: bool) -> Result<crate::Watch> {
        self.call(async |a| a.watch(path, recursive).await).await
    }

    /// Forwards connections to `listen` on the host to 127.0.0.1:`guest_port`
    /// in the sandbox, over the agent connection (no guest NIC needed).
    pub async fn expose(
        &self,
        guest_port: u16,
        listen: &crate::expose::Listen,
    ) -> Result<crate::Exposure> {
        self.call(async |a| a.expose(guest_port, listen).await)
            .await
    }

    /// The command that prints hello world through the image's runtime (empty
    /// for the bare guest).
    pub fn hello_argv(&self) -> &[String] {
        &self.record.hello
    }

    /// Starts a background process that outlives the connection.
    pub async fn exec_detached(&self, spec: &DetachSpec) -> Result<u32> {
        self.call(async |a| a.exec_detached(spec).await).await
    }

    /// Background processes, running and recently exited.
    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        self.call(async |a| a.processes().await).await
    }

    /// Follows a background process's output (retained, then live).
    pub async fn attach(
        &self,
        target: &ProcessRef,
        from_offset: Option<u64>,
    ) -> Result<AttachStream> {
        self.call(async |a| a.attach(target, from_offset).await)
            .await
    }

    /// Sends a signal to a background process's group.
    pub async fn kill_process(&self, target: &ProcessRef, signal: i32) -> Result<()> {
        self.call(async |a| a.kill_process(target, signal).await)
            .await
    }
}
