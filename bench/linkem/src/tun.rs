//! Creating a TUN device: open `/dev/net/tun` and attach it to a named interface with one
//! `ioctl(TUNSETIFF)`. That ioctl is the only unsafe code in the crate; a TUN crate would wrap the same
//! call in far more code (address management, async runtimes) than the emulator needs.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use crate::Error;

/// `_IOW('T', 202, int)` from `<linux/if_tun.h>`.
const TUNSETIFF: u64 = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
/// No 4-byte packet-information header: reads and writes are bare IP packets.
const IFF_NO_PI: libc::c_short = 0x1000;

/// `struct ifreq` as TUNSETIFF reads it: the name and, in the union, the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Create (or attach to) the TUN interface `name` in the current network namespace. The interface lives
/// as long as the returned file; moving it to another namespace keeps the file working.
pub fn create(name: &str) -> Result<File, Error> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['/', ' ', '\0']) {
        return Err(Error::Spec(format!("bad interface name {name:?}")));
    }
    let io_err = |source| Error::Io {
        what: format!("creating TUN device {name}"),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(io_err)?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: the descriptor is an open /dev/net/tun owned by `file`; `req` is an initialised, properly
    // sized `struct ifreq` that outlives the call, and TUNSETIFF reads and writes only within it.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req as *mut IfReq) };
    if rc < 0 {
        return Err(io_err(io::Error::last_os_error()));
    }
    Ok(file)
}
