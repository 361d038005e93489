//! Validation and limits for the snapshot hooks: `GUEST_RESTORED`
//! (`CAPABILITY_RESTORE_HOOKS`) and `FS_FREEZE` (`CAPABILITY_FS_FREEZE`).

use std::ops::RangeInclusive;
use std::time::Duration;

use crate::pb;

/// Bytes of host randomness a `GUEST_RESTORED` carries.
pub const ENTROPY_LEN: RangeInclusive<usize> = 32..=512;
/// Longest hostname (Linux `HOST_NAME_MAX`).
pub const MAX_HOSTNAME_LEN: usize = 64;
/// Length of a machine-id: 128 bits as lowercase hex.
pub const MACHINE_ID_LEN: usize = 32;
/// Auto-thaw delay of a `FREEZE` whose `timeout_ms` is 0.
pub const DEFAULT_FREEZE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `FsFreeze.timeout_ms`.
pub const MAX_FREEZE_TIMEOUT_MS: u32 = 60_000;
/// Most mount points one `FS_FREEZE` may name.
pub const MAX_FREEZE_PATHS: usize = 16;

/// `GUEST_RESTORED`: the generation, the clock, the entropy length, the
/// hostname and machine-id when present.
pub fn validate_guest_restored(m: &pb::GuestRestored) -> Result<(), String> {
    if m.generation == 0 {
        return Err("generation 0 is the cold boot's; a restore is generation 1 or later".into());
    }
    if m.realtime_ns == 0 {
        return Err("realtime_ns 0 is not a wall-clock time".into());
    }
    if !ENTROPY_LEN.contains(&m.entropy.len()) {
        return Err(format!(
            "entropy of {} bytes is outside {}..={}",
            m.entropy.len(),
            ENTROPY_LEN.start(),
            ENTROPY_LEN.end()
        ));
    }
    if let Some(h) = &m.hostname {
        validate_hostname(h)?;
    }
    if let Some(id) = &m.machine_id {
        validate_machine_id(id)?;
    }
    Ok(())
}

/// RFC 1123 host name: dot-separated labels of letters, digits and `-`
/// (not at either end of a label), 1–63 bytes each, at most 64 in all.
pub fn validate_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("hostname is empty".into());
    }
    if h.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "hostname of {} bytes is longer than {MAX_HOSTNAME_LEN}",
            h.len()
        ));
    }
    for label in h.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "hostname {h:?} is not a valid host name (label {label:?})"
            ));
        }
    }
    Ok(())
}

/// 32 lowercase hex digits, not all zero (systemd's rule for machine-id).
pub fn validate_machine_id(id: &str) -> Result<(), String> {
    let hex = id.len() == MACHINE_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !hex {
        return Err(format!(
            "machine_id {id:?} is not {MACHINE_ID_LEN} lowercase hex digits"
        ));
    }
    if id.bytes().all(|b| b == b'0') {
        return Err("machine_id is all zeros".into());
    }
    Ok(())
}

/// `FS_FREEZE`: a known action, absolute paths, a bounded timeout.
pub fn validate_fs_freeze(m: &pb::FsFreeze) -> Result<(), String> {
    match pb::FsFreezeAction::try_from(m.action) {
        Ok(pb::FsFreezeAction::Freeze) | Ok(pb::FsFreezeAction::Thaw) => {}
        Ok(pb::FsFreezeAction::Unspecified) | Err(_) => {
            return Err(format!(
                "action {} is neither FREEZE (1) nor THAW (2)",
                m.action
            ))
        }
    }
    if m.paths.len() > MAX_FREEZE_PATHS {
        return Err(format!(
            "{} paths are more than {MAX_FREEZE_PATHS}",
            m.paths.len()
        ));
    }
    for (i, p) in m.paths.iter().enumerate() {
        if !p.starts_with('/') || p.contains('\0') {
            return Err(format!("paths[{i}] {p:?} is not an absolute path"));
        }
    }
    if m.timeout_ms > MAX_FREEZE_TIMEOUT_MS {
        return Err(format!(
            "timeout_ms {} is above the maximum {MAX_FREEZE_TIMEOUT_MS}",
            m.timeout_ms
        ));
    }
    Ok(())
}

/// The auto-thaw delay a `FREEZE` asks for.
pub fn freeze_timeout(m: &pb::FsFreeze) -> Duration {
    match m.timeout_ms {
        0 => DEFAULT_FREEZE_TIMEOUT,
        ms => Duration::from_millis(ms as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn restored() -> pb::GuestRestored {
        pb::GuestRestored {
            generation: 1,
            realtime_ns: 1_700_000_000_000_000_000,
            entropy: vec![7u8; 32].into(),
            hostname: Some("clone-1.example".into()),
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
        }
    }

    #[test]
    fn a_good_restore_passes() {
        assert_eq!(validate_guest_restored(&restored()), Ok(()));
        let bare = pb::GuestRestored {
            hostname: None,
            machine_id: None,
            entropy: vec![0u8; 512].into(),
            ..restored()
        };
        assert_eq!(validate_guest_restored(&bare), Ok(()));
    }

    #[test]
    fn bad_restores_name_the_field_and_value() {
        let cases: Vec<(pb::GuestRestored, &str)> = vec![
            (
                pb::GuestRestored {
                    generation: 0,
                    ..restored()
                },
                "generation 0",
            ),
            (
                pb::GuestRestored {
                    realtime_ns: 0,
                    ..restored()
                },
                "realtime_ns 0",
            ),
            (
                pb::GuestRestored {
                    entropy: vec![1u8; 31].into(),
                    ..restored()
                },
                "entropy of 31 bytes",
            ),
            (
                pb::GuestRestored {
                    entropy: vec![1u8; 513].into(),
                    ..restored()
                },
                "entropy of 513 bytes",
            ),
            (
                pb::GuestRestored {
                    hostname: Some("".into()),
                    ..restored()
                },
                "hostname is empty",
            ),
            (
                pb::GuestRestored {
                    hostname: Some("a".repeat(65)),
                    ..restored()
                },
                "hostname of 65 bytes",
            ),
            (
                pb::GuestRestored {
                    hostname: Some("bad_name".into()),
                    ..restored()
                },
                "hostname \"bad_name\"",
            ),
            (
                pb::GuestRestored {
                    hostname: Some("-x".into()),
                    ..restored()
                },
                "label \"-x\"",
            ),
            (
                pb::GuestRestored {
                    hostname: Some("a..b".into()),
                    ..restored()
                },
                "label \"\"",
            ),
            (
                pb::GuestRestored {
                    machine_id: Some("0123456789ABCDEF0123456789ABCDEF".into()),
                    ..restored()
                },
                "machine_id \"0123456789ABCDEF",
            ),
            (
                pb::GuestRestored {
                    machine_id: Some("abc".into()),
                    ..restored()
                },
                "machine_id \"abc\"",
            ),
            (
                pb::GuestRestored {
                    machine_id: Some("0".repeat(32)),
                    ..restored()
                },
                "all zeros",
            ),
        ];
        for (m, want) in cases {
            let err = validate_guest_restored(&m).expect_err(want);
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn freeze_requests_are_bounded() {
        let ok = pb::FsFreeze {
            action: pb::FsFreezeAction::Freeze as i32,
            paths: vec!["/persist".into()],
            timeout_ms: MAX_FREEZE_TIMEOUT_MS,
        };
        assert_eq!(validate_fs_freeze(&ok), Ok(()));
        assert_eq!(freeze_timeout(&ok), Duration::from_secs(60));
        let dflt = pb::FsFreeze {
            action: pb::FsFreezeAction::Thaw as i32,
            ..Default::default()
        };
        assert_eq!(validate_fs_freeze(&dflt), Ok(()));
        assert_eq!(freeze_timeout(&dflt), DEFAULT_FREEZE_TIMEOUT);
        let bad: Vec<(pb::FsFreeze, &str)> = vec![
            (
                pb::FsFreeze {
                    action: 0,
                    ..ok.clone()
                },
                "action 0",
            ),
            (
                pb::FsFreeze {
                    action: 9,
                    ..ok.clone()
                },
                "action 9",
            ),
            (
                pb::FsFreeze {
                    timeout_ms: 60_001,
                    ..ok.clone()
                },
                "timeout_ms 60001",
            ),
            (
                pb::FsFreeze {
                    paths: vec!["rel".into()],
                    ..ok.clone()
                },
                "paths[0] \"rel\"",
            ),
            (
                pb::FsFreeze {
                    paths: vec!["/a".into(); 17],
                    ..ok.clone()
                },
                "17 paths",
            ),
        ];
        for (m, want) in bad {
            let err = validate_fs_freeze(&m).expect_err(want);
            assert!(err.contains(want), "{err:?} lacks {want:?}");
        }
    }

    #[test]
    fn field_numbers_are_pinned() {
        use prost::Message as _;
        let r = pb::GuestRestored {
            generation: 1,
            realtime_ns: 2,
            entropy: vec![3u8].into(),
            hostname: Some("h".into()),
            machine_id: Some("m".into()),
        };
        assert_eq!(
            r.encode_to_vec(),
            [
                1 << 3,
                1,
                2 << 3,
                2,
                3 << 3 | 2,
                1,
                3,
                4 << 3 | 2,
                1,
                b'h',
                5 << 3 | 2,
                1,
                b'm'
            ]
        );
        let f = pb::FsFreeze {
            action: 2,
            paths: vec!["/".into()],
            timeout_ms: 1,
        };
        assert_eq!(
            f.encode_to_vec(),
            [1 << 3, 2, 2 << 3 | 2, 1, b'/', 3 << 3, 1]
        );
        let info = pb::SystemInfoResult {
            generation: 1,
            frozen: vec!["/".into()],
            ..Default::default()
        };
        assert_eq!(info.encode_to_vec(), [14 << 3, 1, 15 << 3 | 2, 1, b'/']);
    }
}
