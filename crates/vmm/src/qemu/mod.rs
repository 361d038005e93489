//! QEMU `microvm` backend. The agent is reached over the VM link: a
//! virtio-serial port carrying hearth's stream multiplexer, whose host end
//! is `hearth-guest vm-proxy` (see the guest crate's `vmlink`), so every VM
//! can be migrated, snapshotted and cloned.
//!
//! Per VM directory: `link.sock` (QEMU's chardev socket behind the port,
//! QEMU ↔ proxy), `vsock.sock` (the Firecracker-style hybrid socket for host
//! clients), `link.ctl` (the proxy's control socket), `console.log`,
//! `qemu.log`, `proxy.log`, `qemu.pid`, `proxy.pid`, `qmp.sock` (QEMU's
//! monitor, see [`qmp`]).

pub mod backend;
pub mod cmdline;
pub mod jail;
pub mod kvm;
pub mod launch;
pub mod pause;
pub mod qmp;
pub mod snapshot;

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
/// How long the link proxy may take to create its socket.
const PROXY_SOCKET_WAIT: Duration = Duration::from_secs(10);

/// File names inside a VM directory.
pub mod files {
    pub const LINK_SOCK: &str = "link.sock";
    pub const LINK_CTL: &str = "link.ctl";
    pub const VSOCK_SOCK: &str = "vsock.sock";
    pub const CONSOLE_LOG: &str = "console.log";
    pub const QEMU_LOG: &str = "qemu.log";
    pub const PROXY_LOG: &str = "proxy.log";
    pub const QEMU_PID: &str = "qemu.pid";
    pub const PROXY_PID: &str = "proxy.pid";
    /// Left by hearth versions that used vhost-device-vsock.
    pub const LEGACY_VHOST_PID: &str = "vhost.pid";
    pub const LEGACY_VHOST_SOCK: &str = "vhost.sock";
    /// QEMU's QMP monitor (see [`super::qmp`]).
    pub const QMP_SOCK: &str = "qmp.sock";
}

/// Everything needed to find a running VM again from another process: it is
/// stored in the state DB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmHandle {
    pub id: String,
    pub dir: PathBuf,
    pub accel: Accel,
    pub qemu: ProcessId,
    /// The link proxy (`vhost` in handles of VMs booted with
    /// vhost-device-vsock, which serves the same hybrid socket).
    #[serde(alias = "vhost")]
    pub proxy: ProcessId,
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
    /// sure QEMU and the link proxy are gone, signalling only our own pids.
    pub async fn stop(&self, graceful: Duration) -> Result<(), VmmError> {
        if self.qemu.is_alive() {
            // A paused guest cannot answer SHUTDOWN.
            self.resume_for_stop().await;
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
        self.proxy.terminate(Duration::from_secs(2)).await;
        for f in [
            files::VSOCK_SOCK,
            files::LINK_SOCK,
            files::LINK_CTL,
            files::LEGACY_VHOST_SOCK,
            files::QMP_SOCK,
        ] {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
        Ok(())
    }

    /// Kills both processes at once (no shutdown request).
    pub async fn kill(&self) {
        self.qemu.terminate(Duration::from_millis(500)).await;
        self.proxy.terminate(Duration::from_millis(500)).await;
    }
}

/// Makes QEMU microvm sandboxes.
#[derive(Debug, Clone)]
pub struct QemuFactory {
    pub qemu: PathBuf,
    pub accel: Accel,
}

impl QemuFactory {
    /// Finds the programs and decides the accelerator (probe cached in `cache_dir`).
    pub async fn detect(kernel: &Path, cache_dir: &Path) -> Result<Self, VmmError> {
        let qemu = launch::find_qemu()?;
        let accel = kvm::choose_accel(&qemu, kernel, cache_dir).await?;
        Ok(Self { qemu, accel })
    }

    /// Boots a VM; on any failure everything started here is killed again.
    ///
    /// QEMU starts first (it serves the link's chardev socket), then the link
    /// proxy, which connects to it and serves `vsock.sock`. With
    /// `cfg.vmm_uid` set (root only) both run jailed as that uid (see
    /// [`jail`]): the VM directory and writable disks are handed to the uid
    /// first and both argvs name in-jail paths, while the host-side paths
    /// (`<dir>/vsock.sock`, the logs) stay where they are.
    pub async fn boot(&self, cfg: &SandboxConfig) -> Result<(VmHandle, Client), VmmError> {
        self.start(cfg, None).await
    }

    /// Starts QEMU and the proxy for `cfg`: booting, or with `incoming`
    /// loading the VM's state from that migration stream (a snapshot) and
    /// letting it run on (see [`snapshot`]).
    pub(crate) async fn start(
        &self,
        cfg: &SandboxConfig,
        incoming: Option<&Path>,
    ) -> Result<(VmHandle, Client), VmmError> {
        cfg.validate()?;
        if let Some(uid) = cfg.vmm_uid {
            jail::check_uid(uid)?;
        }
        if !cfg.vm_proxy.is_file() {
            return Err(VmmError::ProxyNotFound(cfg.vm_proxy.clone()));
        }
        let dir = &cfg.dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| VmmError::io("cannot create vm directory", dir, e))?;
        for f in [
            files::LINK_SOCK,
            files::LINK_CTL,
            files::VSOCK_SOCK,
            files::CONSOLE_LOG,
            files::QMP_SOCK,
        ] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let link_sock = dir.join(files::LINK_SOCK);
        let link_ctl = dir.join(files::LINK_CTL);
        let vsock_sock = dir.join(files::VSOCK_SOCK);
        let proxy_log = dir.join(files::PROXY_LOG);
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

        let args = cmdline::QemuArgs {
            accel: self.accel,
            cpus: cfg.cpus,
            mem_mib: cfg.mem_mib,
            kernel: cfg.kernel.clone(),
            initrd: Some(cfg.initrd.clone()),
            cmdline_extra: guest_cmdline(cfg),
            serial: cmdline::Serial::Stdio,
            link_socket: Some(link_sock.clone()),
            drives: disks,
            user_net: cfg.network == Network::AllowAll,
            qmp_socket: Some(dir.join(files::QMP_SOCK)),
            incoming: incoming.is_some(),
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
        let (mut qchild, qemu) = spawned?;
        pid_file(files::QEMU_PID, qemu);
        if let Some(stream) = incoming {
            let loaded = snapshot::load(&dir.join(files::QMP_SOCK), stream, &mut qchild).await;
            if let Err(reason) = loaded {
                qemu.terminate(Duration::from_secs(1)).await;
                let qlog = tail(&qemu_log, 5);
                return Err(VmmError::RestoreFailed {
                    id: cfg.id.clone(),
                    reason: if qlog.trim().is_empty() {
                        reason
                    } else {
                        format!("{reason}; qemu: {}", qlog.trim())
                    },
                });
            }
        }

        let spawned = match &jail {
            None => launch::spawn_detached(
                &cfg.vm_proxy,
                &cmdline::proxy_argv(&link_sock, &vsock_sock, &link_ctl),
                &proxy_log,
                None,
            ),
            Some(j) => (|| {
                let argv = cmdline::proxy_argv(
                    &j.vm_path(&link_sock)?,
                    &j.vm_path(&vsock_sock)?,
                    &j.vm_path(&link_ctl)?,
                );
                let log = j.dir().open_log(&proxy_log, j.uid())?;
                launch::spawn_jailed(j.proxy(&cfg.vm_proxy)?, &argv, log, &proxy_log, None)
            })(),
        };
        let (mut pchild, proxy) = match spawned {
            Ok(x) => x,
            Err(e) => {
                qemu.terminate(Duration::from_secs(1)).await;
                return Err(e);
            }
        };
        pid_file(files::PROXY_PID, proxy);
        let deadline = Instant::now() + PROXY_SOCKET_WAIT;
        while !vsock_sock.exists() {
            let exited = matches!(pchild.try_wait(), Ok(Some(_)));
            if exited || Instant::now() >= deadline {
                proxy.terminate(Duration::from_millis(500)).await;
                qemu.terminate(Duration::from_millis(500)).await;
                let _ = pchild.try_wait();
                let _ = qchild.try_wait();
                let mut log = tail(&proxy_log, 10);
                let qlog = tail(&qemu_log, 5);
                if !qlog.is_empty() {
                    log = format!("{log}\nqemu: {qlog}");
                }
                return Err(VmmError::ProxyTimeout {
                    socket: vsock_sock,
                    secs: PROXY_SOCKET_WAIT.as_secs(),
                    log: if log.trim().is_empty() {
                        String::new()
                    } else {
                        format!("; its log:\n{log}")
                    },
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Detached: nobody waits on it from here on; a zombie counts as dead.
        drop(pchild);
        let handle = VmHandle {
            id: cfg.id.clone(),
            dir: dir.clone(),
            accel: self.accel,
            qemu,
            proxy,
        };
        tracing::info!(
            id = %cfg.id,
            accel = %self.accel,
            qemu = qemu.pid,
            proxy = proxy.pid,
            vmm_uid = cfg.vmm_uid,
            "vm started"
        );

        let deadline = tokio::time::Instant::now() + cfg.boot_timeout;
        let endpoint = handle.endpoint();
        let console_path = handle.console_log();
        // First the agent's listening line on the console, then CONNECT (see ConsoleWatch).
        let connect = async {
            let mut watch = ConsoleWatch::new(&console_path);
            // A restored agent listens already (and printed that before the snapshot).
            while incoming.is_none() && !watch.poll(crate::guest_contract::AGENT_READY_MARKER) {
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
        link: true,
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
            vm_proxy: "/hearth-guest".into(),
            acpi: true,
        }
    }

    #[test]
    fn initramfs_vm_has_no_disks_and_only_hostname() {
        let c = cfg();
        assert!(drives(&c).is_empty());
        assert_eq!(
            guest_cmdline(&c),
            "hearth.hostname=ab12cd34 hearth.link=virtio-serial hearth.debug=1"
        );
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
             hearth.net=10.0.2.15/24,10.0.2.2 hearth.dns=10.0.2.3 hearth.link=virtio-serial"
        );
    }

    #[test]
    fn odd_ids_get_no_hostname_word() {
        let mut c = cfg();
        c.id = "bench vm/1".into();
        assert!(!guest_cmdline(&c).contains("hearth.hostname"));
    }
}
