//! Per-exec resource limits ([`Limits`], on [`crate::ExecSpec`]), enforced in
//! the guest by the exec's own cgroup.

use hearth_client::pb;

use crate::error::{Error, Result};

pub use hearth_client::{format_bytes, parse_size, SizeError};
pub use hearth_proto::message::{CPU_MILLIS_RANGE, MIN_MEMORY_MAX};

/// What one exec may use. `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Memory (`memory.max`, no swap); at least 1 MiB.
    pub memory_max_bytes: Option<u64>,
    /// Processes and threads together (`pids.max`); at least 1.
    pub pids_max: Option<u32>,
    /// CPU time as thousandths of one CPU (`cpu.max`): 500 = half a CPU.
    pub cpu_millis: Option<u32>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// `--cpus 0.5` → 500 thousandths (rounded to the nearest).
    pub fn cpus_to_millis(cpus: f64) -> Option<u32> {
        let m = (cpus * 1000.0).round();
        (cpus.is_finite() && m >= 1.0 && m <= u32::MAX as f64).then_some(m as u32)
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let min = hearth_proto::message::MIN_MEMORY_MAX;
        match self.memory_max_bytes {
            Some(m) if m < min => {
                return Err(Error::InvalidSpec(format!(
                    "memory limit {m} bytes is below the minimum of {} ({min} bytes)",
                    hearth_client::format_bytes(min)
                )))
            }
            _ => {}
        }
        if self.pids_max == Some(0) {
            return Err(Error::InvalidSpec(
                "pids limit 0 leaves no room for the command".into(),
            ));
        }
        let range = hearth_proto::message::CPU_MILLIS_RANGE;
        match self.cpu_millis {
            Some(c) if !range.contains(&c) => Err(Error::InvalidSpec(format!(
                "cpu limit {} CPUs is out of range {}..={} CPUs",
                c as f64 / 1000.0,
                *range.start() as f64 / 1000.0,
                *range.end() as f64 / 1000.0
            ))),
            _ => Ok(()),
        }
    }

    /// The wire form; `None` when there is no limit (so an agent without
    /// `CAPABILITY_EXEC_LIMITS` still runs it).
    pub(crate) fn to_pb(self) -> Option<pb::ResourceLimits> {
        (!self.is_empty()).then(|| pb::ResourceLimits {
            memory_max_bytes: self.memory_max_bytes.unwrap_or(0),
            pids_max: self.pids_max.unwrap_or(0),
            cpu_max_millicpus: self.cpu_millis.unwrap_or(0),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_validate_and_convert() {
        assert_eq!(Limits::default().to_pb(), None);
        let l = Limits {
            memory_max_bytes: Some(64 << 20),
            pids_max: Some(64),
            cpu_millis: Limits::cpus_to_millis(0.5),
        };
        l.validate().unwrap();
        let p = l.to_pb().unwrap();
        assert_eq!(
            (p.memory_max_bytes, p.pids_max, p.cpu_max_millicpus),
            (64 << 20, 64, 500)
        );
        let small = Limits {
            memory_max_bytes: Some(1000),
            ..Default::default()
        };
        assert!(small.validate().unwrap_err().to_string().contains("1000"));
        assert!(Limits {
            pids_max: Some(0),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert!(Limits {
            cpu_millis: Some(1),
            ..Default::default()
        }
        .validate()
        .is_err());
        assert_eq!(Limits::cpus_to_millis(0.0004), None);
        assert_eq!(Limits::cpus_to_millis(f64::NAN), None);
        assert_eq!(Limits::cpus_to_millis(2.0), Some(2000));
    }
}
