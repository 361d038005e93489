//! Schema migrations of stored records, as pure functions over JSON.
//!
//! - v1 (hearth 0.1 before the runtime crate): QEMU pids in `qemu`/`vhost`,
//!   the initramfs in `image`, the accelerator as `accel`, a `persist` flag.
//! - v2: a backend-neutral, versioned `backend` handle ([`hearth_vmm::BackendHandle`]),
//!   `initrd`, and `vmm_uid`.

use serde_json::{json, Value};

/// The schema version this runtime writes.
pub const SCHEMA_VERSION: u64 = 2;

/// Turns a v1 record into a v2 record.
pub fn v1_to_v2(mut v: Value) -> Result<Value, String> {
    let obj = v.as_object_mut().ok_or("the record is not a JSON object")?;
    let image = obj.remove("image").ok_or("the record has no image")?;
    obj.insert("initrd".into(), image);
    obj.remove("persist");
    let qemu = obj.remove("qemu").unwrap_or(Value::Null);
    let vhost = obj.remove("vhost").unwrap_or(Value::Null);
    let accel = obj.get("accel").cloned().unwrap_or(Value::Null);
    let backend = if qemu.is_null() || vhost.is_null() || accel.is_null() {
        Value::Null
    } else {
        json!({
            "backend": hearth_vmm::qemu::backend::BACKEND_NAME,
            "version": hearth_vmm::qemu::backend::HANDLE_VERSION,
            "state": {
                "id": obj.get("id").cloned().unwrap_or(Value::Null),
                "dir": obj.get("dir").cloned().unwrap_or(Value::Null),
                "accel": accel,
                "qemu": qemu,
                "vhost": vhost,
            },
        })
    };
    obj.insert("backend".into(), backend);
    obj.insert("vmm_uid".into(), Value::Null);
    Ok(v)
}

/// Migrates a record stored under schema `from` to [`SCHEMA_VERSION`].
pub fn migrate(from: u64, v: Value) -> Result<Value, String> {
    match from {
        1 => v1_to_v2(v),
        SCHEMA_VERSION => Ok(v),
        other => Err(format!("no migration from schema version {other}")),
    }
}

/// A record exactly as hearth 0.1 (schema 1) wrote it for a running VM, for
/// migration tests here and in the runtime tier.
#[doc(hidden)]
pub const V1_RUNNING_FIXTURE: &str = r#"{"id":"ab12cd34","name":"web","created_at":1764000000,"status":"running","cpus":1,"mem_mib":256,"language":"python","image":"/s/images/initramfs-0123456789abcdef-bb.cpio","custom_initrd":false,"kernel":"/boot/vmlinuz-6.1.0-28-cloud-amd64","accel":"tcg","qemu":{"pid":4242,"start_time":99},"vhost":{"pid":4241,"start_time":98},"creator":null,"dir":"/s/vms/ab12cd34","persist":true,"note":null,"rootfs":"/c/rootfs/python-x.squashfs","lowerfs":"squashfs","image_hash":"feed","disk_mib":2048,"network":"allow_all","persist_volume":"/s/persist/data.ext4","env":[["PATH","/usr/bin:/bin"]],"hello":["python3","-c","print(1)"]}"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{VmRecord, VmStatus};
    const V1_RUNNING: &str = V1_RUNNING_FIXTURE;
    #[test]
    fn a_v1_running_record_gets_a_qemu_handle() {
        let v: Value = serde_json::from_str(V1_RUNNING).unwrap();
        let r: VmRecord = serde_json::from_value(migrate(1, v).unwrap()).unwrap();
        assert_eq!(r.status, VmStatus::Running);
        assert_eq!(
            r.initrd.to_str(),
            Some("/s/images/initramfs-0123456789abcdef-bb.cpio")
        );
        assert_eq!(r.persist_name().as_deref(), Some("data"));
        let h = r.backend.expect("handle");
        let vm = hearth_vmm::QemuBackend::vm(&h).unwrap();
        assert_eq!((vm.qemu.pid, vm.qemu.start_time), (4242, 99));
        assert_eq!((vm.proxy.pid, vm.proxy.start_time), (4241, 98));
        assert_eq!(vm.dir.to_str(), Some("/s/vms/ab12cd34"));
        assert_eq!(
            r.env,
            vec![("PATH".to_string(), "/usr/bin:/bin".to_string())]
        );
    }

    #[test]
    fn a_v1_stopped_record_has_no_handle_and_garbage_is_refused() {
        let mut v: Value = serde_json::from_str(V1_RUNNING).unwrap();
        v["status"] = "stopped".into();
        v["qemu"] = Value::Null;
        v["vhost"] = Value::Null;
        let r: VmRecord = serde_json::from_value(migrate(1, v).unwrap()).unwrap();
        assert!(r.backend.is_none());
        assert!(migrate(1, json!([1, 2])).is_err());
        assert!(migrate(7, json!({})).is_err());
    }
}
