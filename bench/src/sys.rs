//! The system calls the benchmarks compare a hint with, made directly
//! (no wrapper that would add work of its own).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// `struct sched_attr`, first version (`SCHED_ATTR_SIZE_VER0`, 48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SchedAttr {
    pub size: u32,
    pub sched_policy: u32,
    pub sched_flags: u64,
    pub sched_nice: i32,
    pub sched_priority: u32,
    pub sched_runtime: u64,
    pub sched_deadline: u64,
    pub sched_period: u64,
}

impl SchedAttr {
    /// SCHED_OTHER at `nice`.
    pub fn other(nice: i32) -> SchedAttr {
        SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            sched_policy: libc::SCHED_OTHER as u32,
            sched_nice: nice,
            ..Default::default()
        }
    }
}

/// `sched_setattr(0, attr, 0)`: the calling thread. Returns the raw result.
#[inline(always)]
pub fn sched_setattr(attr: &SchedAttr) -> libc::c_long {
    // SAFETY: attr is a valid sched_attr of the size it declares.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, attr as *const SchedAttr, 0) }
}

/// `setpriority(PRIO_PROCESS, 0, nice)`: on Linux, the calling thread.
#[inline(always)]
pub fn setpriority(nice: i32) -> libc::c_int {
    // SAFETY: plain syscall.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }
}

/// `PIDFD_THREAD` (= `O_EXCL`, Linux 6.9).
pub const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// A pidfd naming the calling thread.
pub fn thread_pidfd() -> io::Result<OwnedFd> {
    let r = pidfd_open_raw();
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `pidfd_open(gettid(), PIDFD_THREAD)`, raw.
#[inline(always)]
pub fn pidfd_open_raw() -> libc::c_long {
    // SAFETY: plain syscalls.
    unsafe { libc::syscall(libc::SYS_pidfd_open, libc::gettid(), PIDFD_THREAD) }
}

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;

/// The part of `union bpf_attr` used by the map element commands.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapElemAttr {
    pub map_fd: u32,
    pub _pad: u32,
    pub key: u64,
    pub value: u64,
    pub flags: u64,
}

impl MapElemAttr {
    /// An update (flags `BPF_ANY`) of `map` at `key` with `value`. The
    /// pointers must stay valid while the attr is used.
    pub fn new(map: RawFd, key: *const i32, value: *const u8) -> MapElemAttr {
        MapElemAttr {
            map_fd: map as u32,
            key: key as u64,
            value: value as u64,
            ..Default::default()
        }
    }
}

/// `bpf(BPF_MAP_UPDATE_ELEM, attr)`. Returns the raw result.
#[inline(always)]
pub fn map_update(attr: &MapElemAttr) -> libc::c_long {
    // SAFETY: attr is a valid prefix of union bpf_attr, its size passed
    // along; the pointers in it are the caller's.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_ELEM,
            attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>() as libc::c_uint,
        )
    }
}

/// `bpf(BPF_MAP_DELETE_ELEM)` of `map` at `key`.
pub fn map_delete(map: RawFd, key: i32) -> io::Result<()> {
    let attr = MapElemAttr::new(map, &key, std::ptr::null());
    // SAFETY: as in map_update; key outlives the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const MapElemAttr,
            std::mem::size_of::<MapElemAttr>() as libc::c_uint,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A zeroed, page-aligned page that is never freed (the kernel may keep it
/// pinned until the thread that registered it is reaped).
pub fn leaked_page() -> io::Result<*mut u8> {
    let mut p: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: 4096 is a power of two and a multiple of the pointer size.
    let r = unsafe { libc::posix_memalign(&mut p, 4096, 4096) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: p points to 4096 fresh bytes.
    unsafe { std::ptr::write_bytes(p as *mut u8, 0, 4096) };
    Ok(p as *mut u8)
}
