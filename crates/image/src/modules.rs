//! Kernel module resolution: parse `modules.dep` / `modules.builtin`, close a
//! wanted set over its dependencies and order it so dependencies load first.
//!
//! Everything here is pure (text in, paths out); reading the files is the
//! caller's job.

use std::collections::{BTreeMap, BTreeSet};

/// Errors while resolving kernel modules.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModulesError {
    #[error("modules.dep line {line}: no ':' separator")]
    BadDepLine { line: usize },
    #[error("module {name:?} is neither in modules.dep nor in modules.builtin")]
    Unknown { name: String },
    #[error("module {name:?} is part of a dependency cycle")]
    Cycle { name: String },
    #[error("module {path:?} is compressed; only uncompressed .ko files are supported")]
    Compressed { path: String },
}

/// The parsed `modules.dep`: module path (relative to the modules dir) to the
/// paths it needs.
#[derive(Debug, Default, Clone)]
pub struct ModuleDeps {
    deps: BTreeMap<String, Vec<String>>,
    by_name: BTreeMap<String, String>,
}

/// The canonical module name of a path: basename without `.ko[.xz|.zst|.gz]`,
/// with `-` turned into `_` (as modprobe does).
pub fn module_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"]
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .unwrap_or(base);
    stem.replace('-', "_")
}

/// Parses `modules.dep` (`path: dep1 dep2 ...` per line).
pub fn parse_modules_dep(text: &str) -> Result<ModuleDeps, ModulesError> {
    let mut out = ModuleDeps::default();
    for (idx, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, rest) = line
            .split_once(':')
            .ok_or(ModulesError::BadDepLine { line: idx + 1 })?;
        let path = path.trim().to_owned();
        let deps = rest.split_whitespace().map(str::to_owned).collect();
        out.by_name.insert(module_name(&path), path.clone());
        out.deps.insert(path, deps);
    }
    Ok(out)
}

/// Parses `modules.builtin` into the set of built-in module names.
pub fn parse_builtin(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(module_name)
        .collect()
}

impl ModuleDeps {
    /// The path of a module by name (`-` and `_` are interchangeable).
    pub fn path_of(&self, name: &str) -> Option<&str> {
        self.by_name
            .get(&name.replace('-', "_"))
            .map(String::as_str)
    }

    /// Closes `wanted` over dependencies and orders the result so every module
    /// comes after everything it depends on. Built-in modules are skipped.
    /// The order among independent modules follows `wanted`, so it is stable.
    pub fn resolve(
        &self,
        builtin: &BTreeSet<String>,
        wanted: &[String],
    ) -> Result<Vec<String>, ModulesError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        let mut visiting = BTreeSet::new();
        for name in wanted {
            let norm = name.replace('-', "_");
            match self.by_name.get(&norm) {
                Some(path) => self.visit(path, &mut visiting, &mut done, &mut order)?,
                None if builtin.contains(&norm) => continue,
                None => return Err(ModulesError::Unknown { name: name.clone() }),
            }
        }
        Ok(order)
    }

    fn visit(
        &self,
        path: &str,
        visiting: &mut BTreeSet<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ModulesError> {
        if done.contains(path) {
            return Ok(());
        }
        if !visiting.insert(path.to_owned()) {
            return Err(ModulesError::Cycle {
                name: module_name(path),
            });
        }
        if !path.ends_with(".ko") {
            return Err(ModulesError::Compressed {
                path: path.to_owned(),
            });
        }
        // modules.dep lists the whole closure for each module, but the
        // recursion makes the order right without relying on its order.
        let deps = self.deps.get(path).ok_or_else(|| ModulesError::Unknown {
            name: module_name(path),
        })?;
        for dep in deps {
            self.visit(dep, visiting, done, order)?;
        }
        visiting.remove(path);
        done.insert(path.to_owned());
        order.push(path.to_owned());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/fs/overlayfs/overlay.ko:
kernel/drivers/net/virtio-net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
";

    fn names(paths: &[String]) -> Vec<String> {
        paths.iter().map(|p| module_name(p)).collect()
    }

    fn pos(order: &[String], name: &str) -> usize {
        names(order)
            .iter()
            .position(|n| n == name)
            .unwrap_or_else(|| panic!("{name} missing from {order:?}"))
    }

    #[test]
    fn parses_paths_and_dependencies() {
        let deps = parse_modules_dep(DEP).unwrap();
        assert_eq!(
            deps.path_of("virtio_mmio"),
            Some("kernel/drivers/virtio/virtio_mmio.ko")
        );
        assert_eq!(
            deps.path_of("virtio-net"),
            Some("kernel/drivers/net/virtio-net.ko")
        );
        assert_eq!(deps.path_of("ext4"), None);
        assert_eq!(deps.deps["kernel/net/vmw_vsock/vsock.ko"].len(), 0);
        assert_eq!(
            deps.deps["kernel/drivers/virtio/virtio_mmio.ko"],
            [
                "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_ring.ko"
            ]
        );
    }

    #[test]
    fn malformed_dep_line_is_reported_with_its_number() {
        let err = parse_modules_dep("a.ko:\nno separator here\n").unwrap_err();
        assert_eq!(err, ModulesError::BadDepLine { line: 2 });
    }

    #[test]
    fn dependencies_come_before_dependents_and_appear_once() {
        let deps = parse_modules_dep(DEP).unwrap();
        let wanted: Vec<String> = ["virtio_mmio", "vmw_vsock_virtio_transport", "virtio_net"]
            .map(String::from)
            .to_vec();
        let order = deps.resolve(&BTreeSet::new(), &wanted).unwrap();
        let n = names(&order);
        let unique: BTreeSet<_> = n.iter().collect();
        assert_eq!(unique.len(), n.len(), "duplicates in {n:?}");
        assert_eq!(n.len(), 9, "{n:?}");
        assert!(pos(&order, "virtio_ring") < pos(&order, "virtio"));
        assert!(pos(&order, "virtio") < pos(&order, "virtio_mmio"));
        assert!(pos(&order, "vsock") < pos(&order, "vmw_vsock_virtio_transport_common"));
        assert!(
            pos(&order, "vmw_vsock_virtio_transport_common")
                < pos(&order, "vmw_vsock_virtio_transport")
        );
        assert!(pos(&order, "failover") < pos(&order, "net_failover"));
        assert!(pos(&order, "net_failover") < pos(&order, "virtio_net"));
    }

    #[test]
    fn builtin_modules_are_skipped_and_unknown_ones_fail() {
        let deps = parse_modules_dep(DEP).unwrap();
        let builtin = parse_builtin("kernel/fs/ext4/ext4.ko\nkernel/fs/squashfs/squashfs.ko\n");
        let order = deps
            .resolve(&builtin, &["squashfs".into(), "overlay".into()])
            .unwrap();
        assert_eq!(order, ["kernel/fs/overlayfs/overlay.ko"]);
        let err = deps.resolve(&builtin, &["nope".into()]).unwrap_err();
        assert_eq!(
            err,
            ModulesError::Unknown {
                name: "nope".into()
            }
        );
    }

    #[test]
    fn cycles_are_detected() {
        let deps = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n").unwrap();
        assert!(matches!(
            deps.resolve(&BTreeSet::new(), &["a".into()]),
            Err(ModulesError::Cycle { .. })
        ));
    }

    #[test]
    fn compressed_modules_are_refused() {
        let deps = parse_modules_dep("kernel/x.ko.zst:\n").unwrap();
        assert_eq!(
            deps.resolve(&BTreeSet::new(), &["x".into()]),
            Err(ModulesError::Compressed {
                path: "kernel/x.ko.zst".into()
            })
        );
    }
}
