//! Reconciling records against the processes that really run: a pure rule
//! ([`judge`]) over what the backend reports, applied once per runtime call
//! ([`crate::Runtime::reconcile`]). Nothing else changes a record's status
//! behind the caller's back.

use hearth_vmm::{Health, ProcessId};

use crate::state::{VmRecord, VmStatus};

/// What reconciling decided for one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The record with its true status.
    pub record: VmRecord,
    /// Whatever of the sandbox still runs must be ended (a broken VM, a helper
    /// left by an exited VMM).
    pub kill: bool,
    /// A boot left behind by a dead creator: end processes from its pid files.
    pub kill_leftovers: bool,
}

/// The true status of `rec`, given its backend's health (for running records)
/// and whether its creator lives (for creating records). `None`: unchanged.
pub fn judge(
    rec: &VmRecord,
    health: Option<&Health>,
    alive: &dyn Fn(&ProcessId) -> bool,
) -> Option<Verdict> {
    let mut r = rec.clone();
    match rec.status {
        // A paused VM's VMM runs like a running one's: the same rule.
        VmStatus::Running | VmStatus::Paused => match health {
            Some(Health::Running) => None,
            Some(Health::Broken { reason }) => {
                r.status = VmStatus::Failed;
                r.note = Some(reason.clone());
                Some(Verdict {
                    record: r,
                    kill: true,
                    kill_leftovers: false,
                })
            }
            Some(Health::Exited) => {
                r.status = VmStatus::Stopped;
                r.note = Some("the VMM process exited".into());
                Some(Verdict {
                    record: r,
                    kill: true,
                    kill_leftovers: false,
                })
            }
            None => {
                r.status = VmStatus::Failed;
                r.note = Some("its record has no backend handle".into());
                Some(Verdict {
                    record: r,
                    kill: false,
                    kill_leftovers: true,
                })
            }
        },
        VmStatus::Creating => {
            if rec.creator.as_ref().is_some_and(alive) {
                return None;
            }
            r.status = VmStatus::Failed;
            r.creator = None;
            r.note = Some("the hearth process that was booting it exited".into());
            Some(Verdict {
                record: r,
                kill: rec.backend.is_some(),
                kill_leftovers: true,
            })
        }
        VmStatus::Stopped | VmStatus::Failed => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::rec;

    fn pid(n: u32) -> ProcessId {
        ProcessId {
            pid: n,
            start_time: 1,
        }
    }

    #[test]
    fn running_records_follow_their_backend() {
        let r = rec("a", VmStatus::Running);
        let none = |_: &ProcessId| false;
        assert_eq!(judge(&r, Some(&Health::Running), &none), None);
        let v = judge(&r, Some(&Health::Exited), &none).unwrap();
        assert_eq!(v.record.status, VmStatus::Stopped);
        assert!(v.kill);
        let broken = Health::Broken {
            reason: "its link proxy process (pid 7) exited".into(),
        };
        let v = judge(&r, Some(&broken), &none).unwrap();
        assert_eq!(v.record.status, VmStatus::Failed);
        assert!(v.record.note.unwrap().contains("link proxy"));
        assert!(v.kill);
    }

    #[test]
    fn paused_records_stay_paused_while_the_vmm_runs_and_stop_when_it_exits() {
        let r = rec("a", VmStatus::Paused);
        let none = |_: &ProcessId| false;
        assert_eq!(judge(&r, Some(&Health::Running), &none), None);
        let v = judge(&r, Some(&Health::Exited), &none).unwrap();
        assert_eq!(v.record.status, VmStatus::Stopped);
        assert!(v.kill);
        let broken = Health::Broken {
            reason: "helper gone".into(),
        };
        assert_eq!(
            judge(&r, Some(&broken), &none).unwrap().record.status,
            VmStatus::Failed
        );
    }

    #[test]
    fn creating_with_a_dead_creator_fails_and_ends_its_leftovers() {
        let mut r = rec("a", VmStatus::Creating);
        r.creator = Some(pid(12));
        let creator_alive = |p: &ProcessId| p.pid == 12;
        assert_eq!(judge(&r, None, &creator_alive), None);
        let v = judge(&r, None, &|_| false).unwrap();
        assert_eq!(v.record.status, VmStatus::Failed);
        assert!(v.kill_leftovers && v.record.creator.is_none());
    }

    #[test]
    fn stopped_and_failed_stay() {
        for s in [VmStatus::Stopped, VmStatus::Failed] {
            assert_eq!(judge(&rec("a", s), Some(&Health::Exited), &|_| false), None);
        }
    }
}
