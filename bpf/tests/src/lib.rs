//! Host-kernel tests of task local data: the BPF reader object, loaded once
//! per test process with its map pinned where `scx_hints` looks for it, and
//! a way to run the reader in the calling thread's context.
//!
//! These tests need root (they load BPF programs) and Linux 6.18 (syscall
//! programs that use task storage). Outside CI they skip loudly without
//! root; in CI (`CI` set) they fail instead.

use anyhow::{bail, Context, Result};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::ProgramInput;
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::OnceLock;

pub mod reader {
    include!(concat!(env!("OUT_DIR"), "/tld_reader_skel.rs"));
}

use reader::types::tld_read_args;
use reader::TldReaderSkel;

/// Bench adversaries (tld_reader.bpf.c, TLD_BENCH_*).
pub const BENCH_NEW_COOKIE: u32 = 1;
pub const BENCH_ABSENT_KEY: u32 = 2;

/// The compiled BPF object, for the BTF test.
pub const READER_OBJECT: &str = concat!(env!("OUT_DIR"), "/tld_reader.bpf.o");

pub struct Fixture {
    pub skel: TldReaderSkel<'static>,
    pin_dir: PathBuf,
}

/// True when the tests may skip instead of failing: not in CI.
fn may_skip() -> bool {
    std::env::var_os("CI").is_none_or(|v| v.is_empty())
}

static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();

/// The process's fixture: the reader loaded and its map pinned at a private
/// path that `SCX_HINTS_TLD_MAP` points to. None means "skip" (not root,
/// outside CI; already reported loudly). Call before any hint access.
pub fn fixture() -> Option<&'static Fixture> {
    FIXTURE
        .get_or_init(|| {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                if may_skip() {
                    eprintln!("!!! SKIPPED: TLD kernel tests need root (CI unset, so skipping)");
                    return None;
                }
                panic!("TLD kernel tests need root; in CI they must not skip");
            }
            clean_stale_pins();
            let fixture = Fixture::load().expect("loading the TLD reader on the host kernel");
            if let Some(uid) = unprivileged_uid() {
                fixture
                    .become_unprivileged(uid)
                    .expect("dropping to an unprivileged user");
            }
            // Statics are never dropped: remove the pin when the process exits.
            // SAFETY: registers a plain extern "C" function.
            unsafe { libc::atexit(remove_own_pin) };
            Some(fixture)
        })
        .as_ref()
}

/// `TLD_TESTS_AS_UID`: run the tests as this (unprivileged) user once the
/// reader is loaded, through a map pin opened to every user, as applications
/// of ordinary users do. Tests that replace or re-pin the map need root.
pub const AS_UID_ENV: &str = "TLD_TESTS_AS_UID";

fn unprivileged_uid() -> Option<u32> {
    let v = std::env::var(AS_UID_ENV).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{AS_UID_ENV} must be a numeric uid, not {v:?}")),
    )
}

impl Fixture {
    /// Opens the pin to every user and drops this whole process (every
    /// thread: glibc applies the calls to all) to `uid:uid`, keeping the
    /// loaded programs, which need no privilege to run.
    fn become_unprivileged(&self, uid: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&self.pin_dir, std::fs::Permissions::from_mode(0o755))?;
        std::fs::set_permissions(self.pin_path(), std::fs::Permissions::from_mode(0o666))?;
        // SAFETY: plain credential syscalls.
        let ok = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(uid) == 0
                && libc::setuid(uid) == 0
        };
        if !ok {
            bail!("setuid {uid}: {}", std::io::Error::last_os_error());
        }
        eprintln!("TLD kernel tests: running as uid {uid}");
        Ok(())
    }

    /// Loads another instance of the reader, with a map of its own, pinned
    /// at the same path: what a scheduler that recreates its map does.
    pub fn replacement(&self) -> Result<Fixture> {
        let f = Fixture::load()?;
        Ok(f)
    }

    fn load() -> Result<Fixture> {
        let obj: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let open = reader::TldReaderSkelBuilder::default()
            .open(obj)
            .context("opening the reader object")?;
        let skel = open.load().context("loading the reader (verifier)")?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/scx_hints_test-{}", std::process::id()));
        let fixture = Fixture { skel, pin_dir };
        fixture.pin()?;
        Ok(fixture)
    }

    pub fn pin_path(&self) -> PathBuf {
        self.pin_dir.join("tld")
    }

    /// Pins the map and points scx_hints at it.
    pub fn pin(&self) -> Result<()> {
        ensure_bpffs()?;
        std::fs::create_dir_all(&self.pin_dir)
            .with_context(|| format!("creating {}", self.pin_dir.display()))?;
        let path = self.pin_path();
        // Pin beside, then rename over: watchers see one change, never a
        // moment without a map.
        let tmp = self.pin_dir.join("tld_new");
        let _ = std::fs::remove_file(&tmp);
        let map = &self.skel.maps.scx_hints_tld;
        let mut handle = libbpf_rs::MapHandle::try_from(map)?;
        handle.pin(&tmp).context("pinning the TLD map")?;
        std::fs::rename(&tmp, &path).context("renaming the TLD map pin")?;
        std::env::set_var(scx_hints::tld::abi::MAP_PIN_ENV, &path);
        Ok(())
    }

    /// Runs the reader for `name` in the calling thread.
    // ProgramInput is non-exhaustive: it cannot be built with a literal.
    #[allow(clippy::field_reassign_with_default)]
    pub fn read(&self, name: &str, size: u16, slot: u32) -> ReadOut {
        let mut args = tld_read_args {
            size,
            slot,
            ..Default::default()
        };
        assert!(name.len() < args.name.len());
        for (d, s) in args.name.iter_mut().zip(name.bytes()) {
            *d = s as _;
        }
        // SAFETY: tld_read_args is plain data generated from the object's BTF.
        let ret = unsafe { run_on_args(&self.skel.progs.tld_read, &mut args) };
        assert_eq!(ret, 0, "tld_read could not get a key cache");
        ReadOut {
            init_err: args.init_err,
            cached: args.cached,
            value: (args.found != 0).then_some(args.value),
        }
    }

    /// Runs the `tld_bench` loop in the calling thread: `n` iterations of a
    /// key-cache lookup, plus, `with_reads`, the scheduler's two hint reads.
    /// Returns the wall time of the run and the sum of the values read.
    pub fn bench_reads(&self, n: u32, with_reads: bool) -> (std::time::Duration, i64) {
        self.bench_reads_against(n, with_reads, 0)
    }

    /// [`Fixture::bench_reads`] with an adversary: [`BENCH_NEW_COOKIE`]
    /// rewrites the metadata page's cookie before every decision,
    /// [`BENCH_ABSENT_KEY`] adds a read of a key that never exists.
    #[allow(clippy::field_reassign_with_default)]
    pub fn bench_reads_against(
        &self,
        n: u32,
        with_reads: bool,
        adversary: u32,
    ) -> (std::time::Duration, i64) {
        let mut args = reader::types::tld_bench_args {
            n,
            with_reads: with_reads as u32,
            adversary,
            ..Default::default()
        };
        let t = std::time::Instant::now();
        // SAFETY: plain data generated from the object's BTF.
        let ret = unsafe { run_on_args(&self.skel.progs.tld_bench, &mut args) };
        let took = t.elapsed();
        assert_eq!(ret, 0, "tld_bench failed ({ret})");
        (took, args.sum)
    }

    /// Points the calling thread's map entry at pages of the caller's own
    /// choosing (what registration does, with any `start`): the fuzzer's way
    /// to feed the reader pages it writes itself.
    pub fn register_pages(&self, data_page: usize, meta_page: usize, start: u16) -> Result<()> {
        let value = scx_hints::tld::abi::MapValue {
            data: data_page as u64,
            meta: meta_page as u64,
            start,
            reserved: [0; 3],
        };
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        // SAFETY: pidfd_open with a thread id and PIDFD_THREAD (= O_EXCL).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, tid, libc::O_EXCL) };
        if fd < 0 {
            bail!("pidfd_open: {}", std::io::Error::last_os_error());
        }
        let fd = fd as i32;
        // SAFETY: MapValue is plain data.
        let bytes = unsafe {
            std::slice::from_raw_parts(
                &value as *const _ as *const u8,
                std::mem::size_of_val(&value),
            )
        };
        use libbpf_rs::MapCore;
        let r =
            self.skel
                .maps
                .scx_hints_tld
                .update(&fd.to_ne_bytes(), bytes, libbpf_rs::MapFlags::ANY);
        // SAFETY: closes the pidfd opened above.
        unsafe { libc::close(fd) };
        r.context("updating the calling thread's TLD map entry")
    }

    /// Runs one fuzz decision (`tld_fuzz_read`) in the calling thread:
    /// `name` as the reader gets it (62 bytes, a NUL not guaranteed), with
    /// an empty key cache if `fresh`, else the thread's own.
    #[allow(clippy::field_reassign_with_default)]
    pub fn fuzz_read(&self, name: &[u8; 62], size: u16, fresh: bool) -> FuzzOut {
        let mut args = reader::types::tld_fuzz_args {
            size,
            fresh: fresh as u32,
            ..Default::default()
        };
        for (d, s) in args.name.iter_mut().zip(name) {
            *d = *s as _;
        }
        // SAFETY: plain data generated from the object's BTF.
        let ret = unsafe { run_on_args(&self.skel.progs.tld_fuzz_read, &mut args) };
        assert_eq!(ret, 0, "tld_fuzz_read could not get a key cache");
        FuzzOut {
            init_err: args.init_err,
            cached: args.cached,
            value: (args.found != 0).then_some(args.value),
        }
    }

    /// Every counter of the library's `tld_stats`.
    pub fn all_stats(&self) -> Stats {
        let bss = self.skel.maps.bss_data.as_ref().expect(".bss is mmapped");
        // SAFETY: the counters are read while the kernel may add to them;
        // a volatile copy of plain u64s.
        let s = unsafe { std::ptr::read_volatile(&bss.tld_stats) };
        Stats {
            bad_magic: s.bad_magic,
            bad_meta: s.bad_meta,
            bad_offset: s.bad_offset,
            throttled: s.throttled,
            searches: s.searches,
            entries: s.entries,
            names: s.names,
        }
    }

    /// Drops the calling thread's BPF key cache.
    pub fn forget(&self) {
        let input = ProgramInput::default();
        self.skel
            .progs
            .tld_forget
            .test_run(input)
            .expect("running tld_forget");
    }

    /// The library's bad-data counters.
    pub fn stats(&self) -> (u64, u64, u64) {
        let bss = self.skel.maps.bss_data.as_ref().expect(".bss is mmapped");
        let s = &bss.tld_stats;
        (s.bad_magic, s.bad_meta, s.bad_offset)
    }

    /// Removes the pin (the map lives on while the skeleton holds it).
    pub fn unpin(&self) {
        let _ = std::fs::remove_file(self.pin_path());
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.unpin();
        let _ = std::fs::remove_dir(&self.pin_dir);
    }
}

const BPF_FS_MAGIC: i64 = 0xcafe4a11;

/// Mounts bpffs at /sys/fs/bpf unless it is there (as systemd would).
pub fn ensure_bpffs() -> Result<()> {
    let path = c"/sys/fs/bpf";
    // SAFETY: statfs writes into a zeroed struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out-pointer.
    if unsafe { libc::statfs(path.as_ptr(), &mut st) } == 0 && st.f_type == BPF_FS_MAGIC {
        return Ok(());
    }
    // SAFETY: mounting a bpffs instance with constant arguments.
    let r = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            path.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if r != 0 {
        bail!(
            "cannot mount bpffs at /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// tld_stats: decision outcomes (at most one per decision) and the work of
/// key searches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub bad_magic: u64,
    pub bad_meta: u64,
    pub bad_offset: u64,
    pub throttled: u64,
    pub searches: u64,
    pub entries: u64,
    pub names: u64,
}

impl Stats {
    /// The counters' growth since `before`.
    pub fn since(&self, before: &Stats) -> Stats {
        Stats {
            bad_magic: self.bad_magic - before.bad_magic,
            bad_meta: self.bad_meta - before.bad_meta,
            bad_offset: self.bad_offset - before.bad_offset,
            throttled: self.throttled - before.throttled,
            searches: self.searches - before.searches,
            entries: self.entries - before.entries,
            names: self.names - before.names,
        }
    }
}

/// What one fuzz decision saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FuzzOut {
    /// tld_object_init's result: 0, -EINVAL, -EAGAIN (-ENOENT unregistered).
    pub init_err: i32,
    /// Key-cache slot 0 after the decision: > 0 offset, <= 0 entries known
    /// not to hold the key.
    pub cached: i32,
    pub value: Option<u64>,
}

/// What the reader saw for one key in one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadOut {
    /// 0, or -ENOENT (thread not registered), or -EINVAL (bad data).
    pub init_err: i32,
    /// The key cache slot after the read: > 0 offset, <= 0 entries searched.
    pub cached: i32,
    pub value: Option<u64>,
}

/// Runs a syscall program once with `args` as its context; the program
/// writes its results back into `args`. Returns the program's return value.
///
/// # Safety
/// `T` must be plain data (the program's context struct from the BTF).
unsafe fn run_on_args<T>(prog: &libbpf_rs::ProgramMut<'_>, args: &mut T) -> i32 {
    // SAFETY: the caller guarantees T is plain data.
    let bytes = unsafe { as_bytes_mut(args) };
    let input = ProgramInput {
        context_in: Some(bytes),
        ..Default::default()
    };
    let r = prog
        .test_run(input)
        .unwrap_or_else(|e| panic!("running {}: {e}", prog.name().to_string_lossy()));
    r.return_value as i32
}

unsafe fn as_bytes_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: the caller guarantees T is plain data.
    unsafe { std::slice::from_raw_parts_mut(v as *mut T as *mut u8, std::mem::size_of::<T>()) }
}

extern "C" fn remove_own_pin() {
    let dir = PathBuf::from(format!("/sys/fs/bpf/scx_hints_test-{}", std::process::id()));
    let _ = std::fs::remove_file(dir.join("tld"));
    let _ = std::fs::remove_dir(dir);
}

/// Removes pins left by test processes that died (their pid is gone).
pub fn clean_stale_pins() {
    let Ok(dir) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("scx_hints_test-") else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_file(e.path().join("tld"));
            let _ = std::fs::remove_dir(e.path());
        }
    }
}
