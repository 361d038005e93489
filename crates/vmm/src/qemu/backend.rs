//! [`Backend`] for QEMU `microvm`: the handle's state is a [`VmHandle`]
//! (directory, accelerator, QEMU and link proxy identities).

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use hearth_client::Client;
use tokio::sync::OnceCell;

use super::{kvm, launch, Accel, QemuFactory, VmHandle};
use crate::backend::{Backend, BackendHandle, Booted, Health};
use crate::error::VmmError;
use crate::process::ProcessId;
use crate::sandbox::SandboxConfig;

/// Name stored in handles made by this backend.
pub const BACKEND_NAME: &str = "qemu";
/// Version of the handle's state layout ([`VmHandle`] as JSON).
pub const HANDLE_VERSION: u32 = 1;

/// Where the QEMU backend finds its programs; built at the edge.
#[derive(Debug, Clone, Default)]
pub struct QemuConfig {
    /// `qemu-system-x86_64`; `None` looks on `PATH`.
    pub qemu: Option<PathBuf>,
    /// Force an accelerator instead of probing KVM.
    pub accel: Option<Accel>,
    /// Where the KVM probe caches its verdict.
    pub cache_dir: PathBuf,
}

/// The QEMU backend. Programs are looked up when first needed, so a runtime
/// that only lists or stops sandboxes works without QEMU installed.
#[derive(Debug)]
pub struct QemuBackend {
    config: QemuConfig,
    factory: OnceCell<QemuFactory>,
}

impl QemuBackend {
    pub fn new(config: QemuConfig) -> Self {
        Self {
            config,
            factory: OnceCell::new(),
        }
    }

    fn program(
        explicit: &Option<PathBuf>,
        name: &str,
        extra: &[PathBuf],
    ) -> Result<PathBuf, String> {
        match explicit {
            Some(p) if p.is_file() => Ok(p.clone()),
            Some(p) => Err(p.display().to_string()),
            None => launch::find_program(name, extra).ok_or_else(|| name.to_string()),
        }
    }

    async fn factory(&self, kernel: &Path) -> Result<&QemuFactory, VmmError> {
        self.factory
            .get_or_try_init(|| async {
                let c = &self.config;
                let qemu = Self::program(&c.qemu, "qemu-system-x86_64", &[])
                    .map_err(VmmError::QemuNotFound)?;
                let accel = match c.accel {
                    Some(a) => a,
                    None => kvm::probe_accel(&qemu, kernel, &c.cache_dir).await?,
                };
                Ok(QemuFactory { qemu, accel })
            })
            .await
    }

    /// Wraps a [`VmHandle`] for storage.
    pub fn handle(vm: &VmHandle) -> Result<BackendHandle, VmmError> {
        Ok(BackendHandle {
            backend: BACKEND_NAME.into(),
            version: HANDLE_VERSION,
            state: serde_json::to_value(vm).map_err(|e| VmmError::BadHandle {
                backend: BACKEND_NAME.into(),
                reason: e.to_string(),
            })?,
        })
    }

    /// The [`VmHandle`] inside a stored handle.
    pub fn vm(handle: &BackendHandle) -> Result<VmHandle, VmmError> {
        handle.decode(BACKEND_NAME, HANDLE_VERSION)
    }
}

/// Pure health rule over which of the two processes are alive.
pub fn health_of(qemu: (ProcessId, bool), proxy: (ProcessId, bool)) -> Health {
    match (qemu.1, proxy.1) {
        (true, true) => Health::Running,
        (true, false) => Health::Broken {
            reason: format!(
                "its link proxy process (pid {}) exited, so the agent is unreachable",
                proxy.0.pid
            ),
        },
        (false, _) => Health::Exited,
    }
}

#[async_trait]
impl Backend for QemuBackend {
    fn name(&self) -> &'static str {
        BACKEND_NAME
    }

    async fn boot(&self, config: &SandboxConfig) -> Result<Booted, VmmError> {
        let factory = self.factory(&config.kernel).await?;
        let (vm, client) = factory.boot(config).await?;
        match Self::handle(&vm) {
            Ok(handle) => Ok(Booted { handle, client }),
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    fn health(&self, handle: &BackendHandle) -> Result<Health, VmmError> {
        let vm = Self::vm(handle)?;
        Ok(health_of(
            (vm.qemu, vm.qemu.is_alive()),
            (vm.proxy, vm.proxy.is_alive()),
        ))
    }

    async fn connect(&self, handle: &BackendHandle, timeout: Duration) -> Result<Client, VmmError> {
        Self::vm(handle)?.connect(timeout).await
    }

    async fn stop(&self, handle: &BackendHandle, graceful: Duration) -> Result<(), VmmError> {
        Self::vm(handle)?.stop(graceful).await
    }

    async fn pause(&self, handle: &BackendHandle) -> Result<(), VmmError> {
        Self::vm(handle)?.pause().await
    }

    async fn resume(&self, handle: &BackendHandle) -> Result<(), VmmError> {
        Self::vm(handle)?.resume().await
    }

    async fn is_paused(&self, handle: &BackendHandle) -> Result<bool, VmmError> {
        Self::vm(handle)?.is_paused().await
    }

    async fn kill(&self, handle: &BackendHandle) -> Result<(), VmmError> {
        Self::vm(handle)?.kill().await;
        Ok(())
    }

    async fn kill_leftovers(&self, dir: &Path) {
        for id in read_pid_files(dir) {
            id.terminate(Duration::from_secs(2)).await;
        }
    }

    fn processes(&self, handle: &BackendHandle) -> Vec<(&'static str, u32)> {
        match Self::vm(handle) {
            Ok(vm) => vec![("qemu", vm.qemu.pid), ("proxy", vm.proxy.pid)],
            Err(_) => Vec::new(),
        }
    }

    async fn snapshot(
        &self,
        handle: &BackendHandle,
        state: &Path,
        disks: &[(PathBuf, PathBuf)],
        resume: bool,
    ) -> Result<crate::backend::SnapshotStats, VmmError> {
        Self::vm(handle)?.snapshot(state, disks, resume).await
    }

    async fn restore(&self, config: &SandboxConfig, state: &Path) -> Result<Booted, VmmError> {
        let factory = self.factory(&config.kernel).await?;
        let (vm, client) = factory.start(config, Some(state)).await?;
        match Self::handle(&vm) {
            Ok(handle) => Ok(Booted { handle, client }),
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    async fn accel(&self, kernel: &Path) -> Result<String, VmmError> {
        Ok(self.factory(kernel).await?.accel.as_str().to_string())
    }
}

/// The `pid start_time` files a boot writes into the VM directory.
pub fn read_pid_files(dir: &Path) -> Vec<ProcessId> {
    [
        super::files::QEMU_PID,
        super::files::PROXY_PID,
        super::files::LEGACY_VHOST_PID,
    ]
    .iter()
    .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
    .filter_map(|t| {
        let mut it = t.split_ascii_whitespace();
        Some(ProcessId {
            pid: it.next()?.parse().ok()?,
            start_time: it.next()?.parse().ok()?,
        })
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: u32) -> ProcessId {
        ProcessId {
            pid: n,
            start_time: 1,
        }
    }

    #[test]
    fn a_dead_link_proxy_breaks_a_running_vm() {
        assert_eq!(health_of((pid(1), true), (pid(2), true)), Health::Running);
        match health_of((pid(1), true), (pid(2), false)) {
            Health::Broken { reason } => {
                assert!(reason.contains("link proxy") && reason.contains("pid 2"))
            }
            h => panic!("{h:?}"),
        }
        assert_eq!(health_of((pid(1), false), (pid(2), true)), Health::Exited);
        assert_eq!(health_of((pid(1), false), (pid(2), false)), Health::Exited);
    }

    #[test]
    fn handles_round_trip_and_foreign_ones_are_refused() {
        let vm = VmHandle {
            id: "ab12cd34".into(),
            dir: "/s/vms/ab12cd34".into(),
            accel: Accel::Tcg,
            qemu: pid(10),
            proxy: pid(11),
        };
        let h = QemuBackend::handle(&vm).unwrap();
        assert_eq!(QemuBackend::vm(&h).unwrap(), vm);
        let mut other = h.clone();
        other.backend = "firecracker".into();
        let e = QemuBackend::vm(&other).unwrap_err().to_string();
        assert!(e.contains("firecracker") && e.contains("qemu v1"), "{e}");
        let mut newer = h;
        newer.version = 2;
        assert!(QemuBackend::vm(&newer).is_err());
    }
}
