//! Registration failures an application can see, and registrations that
//! happen without the application doing anything: a map pinned or replaced
//! after a thread set its hints once, a pin that becomes openable (its mode
//! changed), a registration that failed for lack of a file descriptor.

use scx_hints::tld::{self, Registration};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};
use tld_kernel_tests::{fixture, Fixture};

/// How long a registration the application did not ask for may take (the
/// watcher reacts to inotify at once; a retry after EMFILE waits 50 ms).
const LIMIT: Duration = Duration::from_secs(5);

/// Polls `read` in the calling thread until BPF sees `want` or LIMIT passes.
/// Reading runs a BPF program in this thread: it touches no hint.
fn wait_until_bpf_sees(fx: &Fixture, name: &str, want: u64) -> Duration {
    let start = Instant::now();
    loop {
        if fx.read(name, 8, 0).value == Some(want) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < LIMIT,
            "BPF never saw {name} = {want} (registration {:?})",
            tld::registration()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn needs_root_threads_register_in_a_new_map_without_touching_a_hint() {
    let Some(fx) = fixture() else { return };
    let key = tld::create_key::<u64>("retry.value").unwrap();
    let (to_thread, rx) = std::sync::mpsc::channel::<&'static Fixture>();
    let (done_tx, done) = std::sync::mpsc::channel::<()>();

    // The application sets its value once, before any map is pinned.
    fx.unpin();
    let app = std::thread::spawn(move || {
        key.set(7);
        assert_eq!(tld::registration(), Registration::NoMap);
        done_tx.send(()).unwrap();

        // A scheduler pins its map: the thread is registered by the watcher.
        let map = rx.recv().unwrap();
        let took = wait_until_bpf_sees(map, "retry.value", 7);
        assert_eq!(tld::registration(), Registration::Registered);
        eprintln!("registered {} ms after the pin appeared", took.as_millis());
        done_tx.send(()).unwrap();

        // It restarts with a new map at the same path: registered there too,
        // and gone from the old one.
        let replaced = rx.recv().unwrap();
        let took = wait_until_bpf_sees(replaced, "retry.value", 7);
        assert_eq!(map.read("retry.value", 8, 0).init_err, -libc::ENOENT);
        eprintln!(
            "registered {} ms after the map was replaced",
            took.as_millis()
        );

        tld::testing::release_thread();
        assert_eq!(replaced.read("retry.value", 8, 0).init_err, -libc::ENOENT);
    });

    done.recv().unwrap();
    fx.pin().unwrap();
    to_thread.send(fx).unwrap();
    done.recv().unwrap();
    let replacement: &'static Fixture = Box::leak(Box::new(fx.replacement().unwrap()));
    to_thread.send(replacement).unwrap();
    app.join().unwrap();
}

/// A private bpffs instance (no change to the host's /sys/fs/bpf), with the
/// fixture's map pinned in it; unmounted on drop.
struct PrivatePin {
    dir: PathBuf,
}

impl PrivatePin {
    /// `name`: unique per test (tests run in parallel).
    fn new(fx: &Fixture, name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("scx_hints_{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C strings; mounts a new bpffs instance on our directory.
        let r = unsafe {
            libc::mount(
                c"bpf".as_ptr(),
                c.as_ptr(),
                c"bpf".as_ptr(),
                0,
                c"mode=0755".as_ptr().cast(),
            )
        };
        assert_eq!(r, 0, "mounting bpffs: {}", std::io::Error::last_os_error());
        let pin = PrivatePin { dir };
        let mut map = libbpf_rs::MapHandle::try_from(&fx.skel.maps.scx_hints_tld).unwrap();
        map.pin(pin.path()).unwrap();
        pin
    }

    fn path(&self) -> PathBuf {
        self.dir.join("tld")
    }
}

impl Drop for PrivatePin {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The probe application (src/bin/tld-registration-probe.rs).
struct Probe {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Probe {
    fn start(pin: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tld-registration-probe"))
            .args(args)
            .env(tld::abi::MAP_PIN_ENV, pin)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting the probe");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Probe {
            child,
            stdin,
            stdout,
        }
    }

    fn line(&mut self) -> String {
        let mut l = String::new();
        self.stdout.read_line(&mut l).unwrap();
        assert!(!l.is_empty(), "the probe ended: {}", self.finish());
        l.trim().to_string()
    }

    fn wait_registered(&mut self) -> String {
        writeln!(self.stdin, "wait-registered {}", LIMIT.as_millis()).unwrap();
        self.line()
    }

    /// Ends the probe; returns its log (stderr).
    fn finish(&mut self) -> String {
        let _ = writeln!(self.stdin, "exit");
        let mut log = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut log);
        }
        let _ = self.child.wait();
        log
    }
}

const NOBODY: &str = "65534";

#[test]
fn needs_root_not_allowed_is_told_apart_warned_once_and_retried_when_the_pin_mode_changes() {
    let Some(fx) = fixture() else { return };
    let pin = PrivatePin::new(fx, "not_allowed");
    chmod(&pin.path(), 0o600);

    let mut probe = Probe::start(&pin.path(), &["--uid", NOBODY]);
    assert_eq!(
        probe.line(),
        format!("state NotAllowed({})", libc::EACCES),
        "an unprivileged app opening a root-only pin"
    );
    // The pin becomes usable by everyone: the app registers by itself.
    chmod(&pin.path(), 0o666);
    let reply = probe.wait_registered();
    assert!(reply.starts_with("state Registered "), "{reply}");
    let log = probe.finish();
    let warnings: Vec<&str> = log.lines().filter(|l| l.starts_with("LOG WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning expected, got:\n{log}");
    assert!(
        warnings[0].contains("not allowed"),
        "the warning says why: {}",
        warnings[0]
    );
    eprintln!("after chmod: {reply} ms");
}

#[test]
fn needs_root_no_map_is_not_a_warning_and_a_late_pin_registers_the_app() {
    let Some(fx) = fixture() else { return };
    let pin = PrivatePin::new(fx, "late_pin");
    let late = pin.dir.join("late");

    let mut probe = Probe::start(&late, &[]);
    assert_eq!(probe.line(), "state NoMap");
    let mut map = libbpf_rs::MapHandle::try_from(&fx.skel.maps.scx_hints_tld).unwrap();
    map.pin(&late).unwrap();
    let reply = probe.wait_registered();
    assert!(reply.starts_with("state Registered "), "{reply}");
    let log = probe.finish();
    assert!(
        !log.lines().any(|l| l.starts_with("LOG WARN")),
        "no map is no reason to warn:\n{log}"
    );
}

#[test]
fn needs_root_a_registration_without_a_free_fd_is_retried_by_itself() {
    let Some(fx) = fixture() else { return };
    let pin = PrivatePin::new(fx, "emfile");

    let mut probe = Probe::start(&pin.path(), &["--emfile"]);
    assert_eq!(probe.line(), format!("state Failed({})", libc::EMFILE));
    let reply = probe.wait_registered();
    assert!(reply.starts_with("state Registered "), "{reply}");
    let log = probe.finish();
    assert_eq!(
        log.lines().filter(|l| l.starts_with("LOG WARN")).count(),
        1,
        "{log}"
    );
    eprintln!("after EMFILE: {reply} ms");
}

#[test]
fn needs_root_a_pin_in_a_closed_directory_is_not_allowed_rather_than_absent() {
    let Some(fx) = fixture() else { return };
    let pin = PrivatePin::new(fx, "closed_dir");
    // scx_hinted's default: the pin's directory is root's, mode 0700.
    let dir = pin.dir.join("closed");
    std::fs::create_dir(&dir).unwrap();
    let path = dir.join("tld");
    let mut map = libbpf_rs::MapHandle::try_from(&fx.skel.maps.scx_hints_tld).unwrap();
    map.pin(&path).unwrap();
    chmod(&path, 0o666);
    chmod(&dir, 0o700);

    let mut probe = Probe::start(&path, &["--uid", NOBODY]);
    assert_eq!(probe.line(), format!("state NotAllowed({})", libc::EACCES));
    // The directory opens up: the app registers by itself.
    chmod(&dir, 0o755);
    let reply = probe.wait_registered();
    assert!(reply.starts_with("state Registered "), "{reply}");
    probe.finish();
}
