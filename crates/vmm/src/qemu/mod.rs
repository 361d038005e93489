//! QEMU `microvm` backend with vsock served by `vhost-device-vsock`.
//!
//! Per VM directory: `vhost.sock` (vhost-user, QEMU ↔ vhost-device-vsock),
//! `vsock.sock` (Firecracker-style hybrid socket for the host), `console.log`,
//! `qemu.log`, `vhost.log`, `qemu.pid`, `vhost.pid`.

pub mod backend;
pub mod cmdline;
pub mod jail;
pub mod kvm;
pub mod launch;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_client::{Client, ConnectOptions, Endpoint};
use hearth_proto::AGENT_VSOCK_PORT;
use serde::{Deserialize, Serialize};

use crate::console::{tail_lines, ConsoleWatch};
use crate::error::VmmError;
use crate::process::ProcessId;
use crate::sandbox::{Network, SandboxConfig};

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lines of console shown when a boot fails.
pub const CONSOLE_TAIL_LINES: usize = 20;
/// How long vhost-device-vsock may take to create its socket.
const VHOST_SOCKET_WAIT: Duration = Duration::from_secs(10);

/// File names inside a VM directory.
pub mod files {
    pub const VHOST_SOCK: &str = "vhost.sock";
    pub const VSOCK_SOCK: &str = "vsock.sock";
    pub const CONSOLE_LOG: &str = "console.log";
    pub const QEMU_LOG: &str = "qemu.log";
    pub const VHOST_LOG: &str = "vhost.log";
    pub const QEMU_PID: &str = "qemu.pid";
    pub const VHOST_PID: &str = "vhost.pid";
}

/// Everything needed to find a running VM again from another process: it is
/// stored in the state DB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHandle {
    pub id: String,
    pub dir: PathBuf,
    pub accel: Accel,
    pub qemu: ProcessId,
    pub vhost: ProcessId,
}

impl VmHandle {
    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Hybrid {
            path: self.dir.join(files::VSOCK_SOCK),
            port: AGENT_VSOCK_PORT,
        }
    }

    pub fn console_log(&self) -> PathBuf {
        self.dir.join(files::CONSOLE_LOG)
    }

    /// The VM runs while its QEMU process does.
    pub fn is_running(&self) -> bool {
        self.qemu.is_alive()
    }

    /// Connects to the agent (waits for READY).
    pub async fn connect(&self, timeout: Duration) -> Result<Client, VmmError> {
        if !self.is_running() {
            return Err(VmmError::NotRunning {
                id: self.id.clone(),
            });
        }
        let opts = ConnectOptions {
            timeout,
            ..Default::default()
        };
        Client::connect(&self.endpoint(), &opts)
            .await
            .map_err(|source| VmmError::Client {
                id: self.id.clone(),
                source,
            })
    }

    /// Asks the guest to power off, waits for QEMU to exit (bounded), then makes
    /// sure QEMU and vhost-device-vsock are gone, signalling only our own pids.
    pub async fn stop(&self, graceful: Duration) -> Result<(), VmmError> {
        if self.qemu.is_alive() {
            let asked = match self.connect(Duration::from_secs(3)).await {
                Ok(client) => client.shutdown().await.is_ok(),
                Err(e) => {
                    tracing::debug!(id = %self.id, error = %e, "no agent to ask for shutdown");
                    false
                }
            };
            if !(asked && self.qemu.wait_gone(graceful).await) {
                self.qemu.terminate(Duration::from_secs(3)).await;
            }
        }
        self.vhost.terminate(Duration::from_secs(2)).await;
        for f in [files::VSOCK_SOCK, files::VHOST_SOCK] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        Ok(())
    }

    /// Kills both processes at once (no shutdown request).
    pub async fn kill(&self) {
        self.qemu.terminate(Duration::from_millis(500)).await;
        self.vhost.terminate(Duration::from_millis(500)).await;
    }
}

/// Makes QEMU microvm sandboxes.
#[derive(Debug, Clone)]
pub struct QemuFactory {
    pub qemu: PathBuf,
    pub vhost: PathBuf,
    pub accel: Accel,
}

impl QemuFactory {
    /// Finds the programs and decides the accelerator (probe cached in `cache_dir`).
    pub async fn detect(kernel: &Path, cache_dir: &Path) -> Result<Self, VmmError> {
        let qemu = launch::find_qemu()?;
        let vhost = launch::find_vhost()?;
        let accel = kvm::choose_accel(&qemu, kernel, cache_dir).await?;
        Ok(Self { qemu, vhost, accel })
    }

    /// Boots a VM; on any failure everything started here is killed again.
    ///
    /// With `cfg.vmm_uid` set (root only) QEMU and vhost-device-vsock run jailed
    /// as that uid (see [`jail`]): the VM directory and writable disks are handed
    /// to the uid first and both argvs name in-jail paths, while the host-side
    /// paths (`<dir>/vsock.sock`, the logs) stay where they are.
    pub async fn boot(&self, cfg: &SandboxConfig) -> Result<(VmHandle, Client), VmmError> {
        cfg.validate()?;
        if let Some(uid) = cfg.vmm_uid {
            jail::check_uid(uid)?;
        }
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| VmmError::io("cannot create vm directory", dir, e))?;
        for f in [files::VHOST_SOCK, files::VSOCK_SOCK, files::CONSOLE_LOG] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let vhost_sock = dir.join(files::VHOST_SOCK);
        let vsock_sock = dir.join(files::VSOCK_SOCK);
        let vhost_log = dir.join(files::VHOST_LOG);
        let qemu_log = dir.join(files::QEMU_LOG);
        let disks = drives(cfg);
        let jail = match cfg.vmm_uid {
            Some(uid) => Some(jail::VmJail::prepare(cfg, &disks, self.accel, uid)?),
            None => None,
        };
        // The jailed uid owns the directory: read and write its files without
        // following what it may have planted there.
        let tail = |path: &Path, lines: usize| match &jail {
            Some(j) => j.dir().tail(path, lines),
            None => tail_lines(path, lines),
        };
        let pid_file = |name: &str, id: ProcessId| match &jail {
            Some(j) => j.dir().write_pid(&dir.join(name), id),
            None => write_pid(&dir.join(name), id),
        };

        let (mut vchild, vhost) = match &jail {
            None => launch::spawn_detached(
                &self.vhost,
                &cmdline::vhost_argv(&vhost_sock, &vsock_sock),
                &vhost_log,
                None,
            )?,
            Some(j) => {
                let argv = cmdline::vhost_argv(&j.vm_path(&vhost_sock)?, &j.vm_path(&vsock_sock)?);
                let log = j.dir().open_log(&vhost_log, j.uid())?;
                launch::spawn_jailed(j.vhost(&self.vhost)?, &argv, log, &vhost_log, None)?
            }
        };
        pid_file(files::VHOST_PID, vhost);
        let deadline = Instant::now() + VHOST_SOCKET_WAIT;
        while !vhost_sock.exists() {
            let exited = matches!(vchild.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                vhost.terminate(Duration::from_millis(500)).await;
                let _ = vchild.try_wait();
                let log = tail(&vhost_log, 10);
                return Err(VmmError::VhostTimeout {
                    socket: vhost_sock,
                    secs: VHOST_SOCKET_WAIT.as_secs(),
                    log: if log.is_empty() {
                        String::new()
                    } else {
                        format!("; its log:\n{log}")
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Detached: nobody waits on it from here on; a zombie counts as dead.
        drop(vchild);

        let args = cmdline::QemuArgs {
            accel: self.accel,
            cpus: cfg.cpus,
            mem_mib: cfg.mem_mib,
            kernel: cfg.kernel.clone(),
            initrd: Some(cfg.initrd.clone()),
            cmdline_extra: guest_cmdline(cfg),
            serial: cmdline::Serial::Stdio,
            vhost_socket: Some(vhost_sock),
            drives: disks,
            user_net: cfg.network == Network::AllowAll,
            acpi: cfg.acpi,
        };
        // The serial console goes through a pipe to the logger, which bounds
        // and rotates console.log; it exits when QEMU does.
        let spawned = crate::console_log::start(dir, cfg.console).and_then(|logger| {
            tracing::debug!(id = %cfg.id, pid = logger.pid, "console logger started");
            let serial = Some(logger.pipe);
            match &jail {
                None => launch::spawn_detached(
                    &self.qemu,
                    &cmdline::qemu_argv(&args),
                    &qemu_log,
                    serial,
                ),
                Some(j) => j.qemu(&self.qemu, &args).and_then(|(prepared, inside)| {
                    let log = j.dir().open_log(&qemu_log, j.uid())?;
                    let argv = cmdline::qemu_argv(&inside);
                    launch::spawn_jailed(prepared, &argv, log, &qemu_log, serial)
                }),
            }
        });
        let (mut qchild, qemu) = match spawned {
            Ok(x) => x,
            Err(e) => {
                vhost.terminate(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        pid_file(files::QEMU_PID, qemu);
        let handle = VmHandle {
            id: cfg.id.clone(),
            dir: dir.clone(),
            accel: self.accel,
            qemu,
            vhost,
        };
        tracing::info!(
            id = %cfg.id,
            accel = %self.accel,
            qemu = qemu.pid,
            vhost = vhost.pid,
            vmm_uid = cfg.vmm_uid,
            "vm started"
        );

        let deadline = tokio::time::Instant::now() + cfg.boot_timeout;
        let endpoint = handle.endpoint();
        let console_path = handle.console_log();
        // First the agent's listening line on the console, then CONNECT (see ConsoleWatch).
        let connect = async {
            let mut watch = ConsoleWatch::new(&console_path);
            while !watch.poll(crate::guest_contract::AGENT_READY_MARKER) {
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!(
                        "the agent did not report listening within {} s",
                        cfg.boot_timeout.as_secs_f64()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let opts = ConnectOptions {
                timeout: deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(Duration::from_secs(2)),
                ..Default::default()
            };
            Client::connect(&endpoint, &opts)
                .await
                .map_err(|e| format!("{e}"))
        };
        tokio::pin!(connect);
        let outcome: Result<Client, String> = loop {
            tokio::select! {
                r = &mut connect => break r,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {
                    if matches!(qchild.try_wait(), Ok(Some(_))) || !qemu.is_alive() {
                        let qlog = tail(&qemu_log, 5);
                        break Err(if qlog.is_empty() {
                            "qemu exited during boot".to_string()
                        } else {
                            format!("qemu exited during boot: {qlog}")
                        });
                    }
                }
            }
        };
        drop(qchild);
        match outcome {
            Ok(client) => Ok((handle, client)),
            Err(reason) => {
                handle.kill().await;
                Err(VmmError::BootFailed {
                    id: cfg.id.clone(),
                    reason,
                    console_path: handle.console_log().display().to_string(),
                    console: tail(&handle.console_log(), CONSOLE_TAIL_LINES),
                })
            }
        }
    }
}

/// The disks of `cfg`: lower (read-only) and upper, then the persist volume.
pub fn drives(cfg: &SandboxConfig) -> Vec<cmdline::Drive> {
    use crate::guest_contract::{LOWER_SERIAL, PERSIST_SERIAL, UPPER_SERIAL};
    let mut v = Vec::new();
    let disk = |id: &str, file: &Path, serial: &str, readonly: bool| cmdline::Drive {
        id: id.into(),
        file: file.into(),
        serial: serial.into(),
        readonly,
        cache: cmdline::DiskCache::Writeback,
    };
    if let Some(root) = &cfg.root {
        v.push(disk("lower", &root.image, LOWER_SERIAL, true));
        v.push(disk("upper", &root.upper, UPPER_SERIAL, false));
    }
    if let Some(p) = &cfg.persist {
        v.push(disk("persist", p, PERSIST_SERIAL, false));
    }
    v
}

/// The `hearth.*` words for `cfg` (see [`crate::guest_contract`]), then the
/// caller's own extra words.
pub fn guest_cmdline(cfg: &SandboxConfig) -> String {
    let valid_host = !cfg.id.is_empty()
        && cfg.id.len() <= 64
        && cfg
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !cfg.id.starts_with('-');
    let spec = crate::guest_contract::GuestSpec {
        hostname: valid_host.then(|| cfg.id.clone()),
        lowerfs: cfg.root.as_ref().map(|r| r.fs),
        persist: cfg.persist.is_some(),
        network: cfg.network == Network::AllowAll,
    };
    let mut words = crate::guest_contract::kernel_args(&spec);
    let extra = cfg.cmdline_extra.trim();
    if !extra.is_empty() {
        words.push(extra.to_string());
    }
    words.join(" ")
}

fn write_pid(path: &Path, id: ProcessId) {
    // Informational only (the DB is the source of truth); failure is logged.
    if let Err(e) = std::fs::write(path, format!("{} {}\n", id.pid, id.start_time)) {
        tracing::warn!(path = %path.display(), error = %e, "cannot write pid file");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_contract::LowerFs;
    use crate::sandbox::RootDisks;

    fn cfg() -> SandboxConfig {
        SandboxConfig {
            id: "ab12cd34".into(),
            cpus: 1,
            mem_mib: 256,
            kernel: "/k".into(),
            initrd: "/i".into(),
            cmdline_extra: "hearth.debug=1".into(),
            network: Network::None,
            root: None,
            persist: None,
            dir: "/vm".into(),
            boot_timeout: Duration::from_secs(1),
            vmm_uid: None,
            console: Default::default(),
            acpi: true,
        }
    }

    #[test]
    fn initramfs_vm_has_no_disks_and_only_hostname() {
        let c = cfg();
        assert!(drives(&c).is_empty());
        assert_eq!(guest_cmdline(&c), "hearth.hostname=ab12cd34 hearth.debug=1");
    }

    #[test]
    fn language_vm_with_persist_and_network() {
        let mut c = cfg();
        c.cmdline_extra.clear();
        c.root = Some(RootDisks {
            image: "/img.squashfs".into(),
            fs: LowerFs::Squashfs,
            upper: "/vm/upper.ext4".into(),
        });
        c.persist = Some("/state/persist/p.ext4".into());
        c.network = Network::AllowAll;
        let d = drives(&c);
        let summary: Vec<(&str, &str, bool)> = d
            .iter()
            .map(|d| (d.id.as_str(), d.serial.as_str(), d.readonly))
            .collect();
        assert_eq!(
            summary,
            [
                ("lower", "hearth-lower", true),
                ("upper", "hearth-upper", false),
                ("persist", "hearth-persist", false)
            ]
        );
        assert_eq!(
            guest_cmdline(&c),
            "hearth.hostname=ab12cd34 \
             hearth.root=overlay:serial:hearth-lower:serial:hearth-upper \
             hearth.lowerfs=squashfs hearth.persist=serial:hearth-persist \
             hearth.net=10.0.2.15/24,10.0.2.2 hearth.dns=10.0.2.3"
        );
    }

    #[test]
    fn odd_ids_get_no_hostname_word() {
        let mut c = cfg();
        c.id = "bench vm/1".into();
        assert!(!guest_cmdline(&c).contains("hearth.hostname"));
    }
}
