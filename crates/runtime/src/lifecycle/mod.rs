//! The lifecycle: [`create`] makes a sandbox (images, disks, record, boot),
//! [`start`] boots a stopped one again, [`stop`] powers one off and removes
//! one, [`disks`] makes and checks their disks, [`boot`] is the shared step
//! that turns a `creating` record into a running sandbox.

pub mod boot;
pub mod create;
pub mod disks;
pub mod start;
pub mod stop;

pub use create::{CreateSpec, PersistSpec};
pub use stop::Removed;

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh sandbox id: 8 random hex characters.
pub fn new_id() -> Result<String> {
    let mut b = [0u8; 4];
    getrandom(&mut b)?;
    Ok(hex::encode(b))
}

fn getrandom(buf: &mut [u8]) -> Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| Error::io("cannot read", "/dev/urandom", e))
}
