//! The few system calls TLD needs, made directly through libc: the bpf(2)
//! commands on a map, and thread pidfds. No libbpf.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_DELETE_ELEM: libc::c_int = 3;
const BPF_OBJ_GET: libc::c_int = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_ANY: u64 = 0;
/// `BPF_F_RDONLY`: open a pinned map for lookups only.
const BPF_F_RDONLY: u32 = 1 << 3;
/// `PIDFD_THREAD` has the value of `O_EXCL` (since Linux 6.9).
const PIDFD_THREAD: libc::c_uint = libc::O_EXCL as libc::c_uint;

/// The part of `union bpf_attr` used by the map element commands.
#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// The part of `union bpf_attr` used by `BPF_OBJ_GET`.
#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    path_fd: i32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a valid, initialised prefix of union bpf_attr and its
    // size is passed along; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Opens a pinned BPF object read-write.
pub fn obj_get(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Opens a pinned BPF map for lookups only.
pub fn obj_get_read_only(path: &str) -> io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        file_flags: BPF_F_RDONLY,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `BPF_MAP_LOOKUP_ELEM` with a pidfd key: whether the entry exists.
pub fn map_contains<V: Default>(map: RawFd, pidfd: &OwnedFd) -> io::Result<bool> {
    map_lookup::<V>(map, pidfd).map(|v| v.is_some())
}

/// `BPF_MAP_LOOKUP_ELEM` with a pidfd key: the entry, if there is one. The
/// map's value size must be `size_of::<V>()` (see [`map_value_size`]).
pub fn map_lookup<V: Default>(map: RawFd, pidfd: &OwnedFd) -> io::Result<Option<V>> {
    let key: i32 = pidfd.as_raw_fd();
    let mut value = V::default();
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const i32 as u64,
        value: &mut value as *mut V as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(Some(value)),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The part of `union bpf_attr` used by `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of `struct bpf_map_info`.
#[repr(C)]
#[derive(Default)]
struct MapInfoHead {
    map_type: u32,
    id: u32,
    key_size: u32,
    value_size: u32,
}

/// The value size of a map, to check a reader's layout before a lookup.
pub fn map_value_size(map: RawFd) -> io::Result<u32> {
    let mut info = MapInfoHead::default();
    let mut attr = InfoAttr {
        bpf_fd: map as u32,
        info_len: std::mem::size_of::<MapInfoHead>() as u32,
        info: &mut info as *mut MapInfoHead as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    Ok(info.value_size)
}

/// A pidfd naming thread `tid` of any process.
pub fn pidfd_of_thread(tid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, PIDFD_THREAD) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel returned a new file descriptor that we own.
    Ok(unsafe { OwnedFd::from_raw_fd(r as RawFd) })
}

/// `BPF_MAP_UPDATE_ELEM` with a pidfd key.
pub fn map_update<V>(map: RawFd, pidfd: &OwnedFd, value: &V) -> io::Result<()> {
    let key: i32 = pidfd.as_raw_fd();
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const i32 as u64,
        value: value as *const V as u64,
        flags: BPF_ANY,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_DELETE_ELEM` with a pidfd key.
pub fn map_delete(map: RawFd, pidfd: &OwnedFd) -> io::Result<()> {
    let key: i32 = pidfd.as_raw_fd();
    let mut attr = MapElemAttr {
        map_fd: map as u32,
        key: &key as *const i32 as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_DELETE_ELEM, &mut attr).map(drop)
}

pub fn gettid() -> libc::pid_t {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}

/// The identity of the file at `path` (device, inode), or the errno of the
/// failed lookup (`ENOENT`: nothing there; `EACCES`: a directory on the way
/// may not be searched).
pub fn file_identity(path: &str) -> Result<(u64, u64), i32> {
    let c = CString::new(path).map_err(|_| libc::EINVAL)?;
    // SAFETY: stat writes into the zeroed buffer we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: c is a valid C string and st a valid out-pointer.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok((st.st_dev, st.st_ino))
}

/// A random, nonzero 32-bit value.
pub fn random_u32() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: getrandom writes at most 4 bytes into v.
    let n = unsafe {
        libc::getrandom(
            &mut v as *mut u32 as *mut libc::c_void,
            4,
            libc::GRND_NONBLOCK,
        )
    };
    if n != 4 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        // SAFETY: getpid has no preconditions.
        v = t
            ^ (unsafe { libc::getpid() } as u32).rotate_left(16)
            ^ (&v as *const u32 as usize as u32);
    }
    v.max(1)
}

/// Copies `size_of::<T>()` bytes at `addr` of this process into `out`
/// without ever faulting: `EFAULT` if they are not all mapped readable.
/// Through a pipe (the kernel copies from `addr` and fails instead of
/// faulting): plain system calls that no seccomp profile refuses, unlike
/// `process_vm_readv`. `T` must fit in a pipe's buffer (4096 bytes).
pub fn read_own_memory<T>(addr: usize, out: &mut T) -> Result<(), i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let len = std::mem::size_of::<T>();
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out-array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(errno());
    }
    // SAFETY: new fds that we own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let n = loop {
        // SAFETY: the kernel checks the source range (EFAULT if unmapped).
        let n = unsafe { libc::write(w.as_raw_fd(), addr as *const libc::c_void, len) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    if n < 0 {
        return Err(errno());
    }
    if n as usize != len {
        return Err(libc::EFAULT);
    }
    let n = loop {
        // SAFETY: reads at most len bytes into our own `out`.
        let n = unsafe { libc::read(r.as_raw_fd(), out as *mut T as *mut libc::c_void, len) };
        if n >= 0 || errno() != libc::EINTR {
            break n;
        }
    };
    if n as usize != len {
        return Err(if n < 0 { errno() } else { libc::EIO });
    }
    Ok(())
}

/// `MFD_NOEXEC_SEAL` (Linux 6.3): with `vm.memfd_noexec=2` the kernel
/// refuses memfds without it; older kernels refuse it with `EINVAL`.
const MFD_NOEXEC_SEAL: libc::c_uint = 0x0008;

/// Maps a private copy of `image` at exactly `addr`, complete from the
/// first instant (it is written to a memfd named `name` first). Ok(false)
/// if something is mapped there already.
pub fn map_image_at(addr: usize, image: &[u8], name: &str) -> Result<bool, i32> {
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    let c = CString::new(name).map_err(|_| libc::EINVAL)?;
    // SAFETY: a valid name; the fd is owned below.
    let mut fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC | MFD_NOEXEC_SEAL) };
    if fd < 0 && errno() == libc::EINVAL {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c.as_ptr(), libc::MFD_CLOEXEC) };
    }
    if fd < 0 {
        return Err(errno());
    }
    // SAFETY: the kernel returned a new fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut done = 0;
    while done < image.len() {
        // SAFETY: writes from our slice.
        let n = unsafe {
            libc::write(
                fd.as_raw_fd(),
                image[done..].as_ptr() as *const libc::c_void,
                image.len() - done,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            // No progress (a full file system, say): never loop forever.
            return Err(libc::EIO);
        }
        done += n as usize;
    }
    // SAFETY: a private mapping of our memfd at a fixed address that the
    // kernel refuses (EEXIST) rather than replace anything.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            image.len(),
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        let e = errno();
        return if e == libc::EEXIST { Ok(false) } else { Err(e) };
    }
    if p as usize != addr {
        // A kernel older than 4.17 took the flag for a hint.
        // SAFETY: the mapping just made, used by nobody.
        unsafe { libc::munmap(p, image.len()) };
        return Err(libc::ENOSYS);
    }
    Ok(true)
}
