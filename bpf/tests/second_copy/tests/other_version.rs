//! A copy that finds a hub of another layout version at the rendezvous
//! refuses to share it, says so once, and keeps working with a state of
//! its own.

mod common;

use scx_hints as first;
use std::sync::Mutex;

static WARNINGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

struct Capture;

impl log::Log for Capture {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if self.enabled(r.metadata()) {
            WARNINGS.lock().unwrap().push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

/// In a forked child whose thread never touched a block: puts a version 2
/// hub where this process's hub goes, then creates keys from two threads.
fn refuse_in_child() -> Result<(), String> {
    let old = first::tld::testing::forget_process_state().ok_or("no state")?;
    scx_hints_second_copy::tld::testing::forget_process_state();
    // SAFETY: both copies forgot the state and this thread has no block.
    unsafe { first::tld::testing::unmap_process_state(old) };
    let addr = first::tld::testing::process_state_address().ok_or("no address")?;
    // SAFETY: an anonymous mapping at the (now free) rendezvous address.
    let p = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    if p as usize != addr {
        return Err(format!(
            "cannot map the fake hub: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: the header of the page after the metadata page: magic, version.
    unsafe {
        ((addr + 4096) as *mut u64).write(u64::from_le_bytes(*b"TLDSHARE"));
        ((addr + 4104) as *mut u32).write(2);
    }
    log::set_logger(&Capture).map_err(|e| e.to_string())?;
    log::set_max_level(log::LevelFilter::Warn);
    for name in ["other_version.a", "other_version.b"] {
        std::thread::spawn(move || {
            let k = first::tld::create_key::<u64>(name).map_err(|e| e.to_string())?;
            k.set(9);
            (k.get() == Some(9))
                .then_some(())
                .ok_or(format!("{name}: value lost"))
        })
        .join()
        .unwrap()?;
    }
    if first::tld::testing::shares_process_state() {
        return Err("joined a hub of another version".into());
    }
    if first::tld::testing::meta_address() == Some(addr) {
        return Err("uses the other version's metadata page".into());
    }
    let warnings = WARNINGS.lock().unwrap().clone();
    let about: Vec<_> = warnings
        .iter()
        .filter(|w| w.contains("layout version 2"))
        .collect();
    if about.len() != 1 {
        return Err(format!(
            "expected one warning naming version 2: {warnings:?}"
        ));
    }
    Ok(())
}

#[test]
fn a_hub_of_another_version_is_refused_with_one_warning() {
    std::env::set_var(first::tld::abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld");
    let status = std::thread::spawn(|| common::in_child("", refuse_in_child))
        .join()
        .unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed (wait status {status:#x}; its stderr says why)"
    );
}
