//! Brings the loopback interface up (`ip link set lo up`), best effort.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::InitError;

pub fn up() -> Result<(), InitError> {
    let what = || "bring lo up".to_owned();
    // SAFETY: plain socket(2); the returned fd is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(InitError::io(what(), std::io::Error::last_os_error()));
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS fills ifr_flags of a properly sized ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(InitError::io(what(), std::io::Error::last_os_error()));
    }
    // SAFETY: the union member ifru_flags is the one SIOCGIFFLAGS set.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(InitError::io(what(), std::io::Error::last_os_error()));
    }
    Ok(())
}
