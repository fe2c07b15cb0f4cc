//! The system calls of sys.rs on systems without BPF task storage (every
//! target but Linux): there is never a map, so hints stay in each thread's
//! block and setting one is still a store. Same functions, same signatures.

use std::io;
use std::os::fd::{OwnedFd, RawFd};

fn unsupported<T>() -> io::Result<T> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "BPF task local data needs Linux",
    ))
}

pub fn obj_get(_path: &str) -> io::Result<OwnedFd> {
    unsupported()
}

pub fn obj_get_read_only(_path: &str) -> io::Result<OwnedFd> {
    unsupported()
}

// V keeps the signature of the Linux version.
#[allow(clippy::extra_unused_type_parameters)]
pub fn map_contains<V: Default>(_map: RawFd, _pidfd: &OwnedFd) -> io::Result<bool> {
    unsupported()
}

pub fn map_lookup<V: Default>(_map: RawFd, _pidfd: &OwnedFd) -> io::Result<Option<V>> {
    unsupported()
}

pub fn map_value_size(_map: RawFd) -> io::Result<u32> {
    unsupported()
}

pub fn map_update<V>(_map: RawFd, _pidfd: &OwnedFd, _value: &V) -> io::Result<()> {
    unsupported()
}

pub fn map_delete(_map: RawFd, _pidfd: &OwnedFd) -> io::Result<()> {
    unsupported()
}

/// Only used in log messages here.
pub fn gettid() -> libc::pid_t {
    0
}

pub fn pidfd_of_thread(_tid: libc::pid_t) -> io::Result<OwnedFd> {
    unsupported()
}

/// No pin ever exists.
pub fn file_identity(_path: &str) -> Result<(u64, u64), i32> {
    Err(libc::ENOENT)
}

/// A nonzero value that differs between processes and runs.
pub fn random_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (t ^ std::process::id().rotate_left(16)).max(1)
}
