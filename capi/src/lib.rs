// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! libscx_hints: the C ABI of the `scx_hints` crate. Every function here is
//! declared in include/scx_hints.h (a test checks the two against each
//! other); this file only converts between C and the crate, so the C library
//! publishes exactly what a Rust program publishes.
//!
//! Conventions: functions that can fail return 0 or a negative errno, never
//! panic, and never unwind into C.

use std::ffi::{c_char, c_int, c_void, CStr};

use hints::tld::{self, abi, KeyError, RawKey, Registration};
use hints::LatencyClass;

/// A key created or found by name: where the value sits in each thread's
/// block and how large it is. Plain data: copy it freely between threads.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct scx_hints_key {
    /// Offset of the value in a thread's block.
    pub offset: u16,
    /// Size of the value in bytes.
    pub size: u16,
}

/// A thread's hints saved by `scx_hints_save`, for `scx_hints_restore`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct scx_hints_saved {
    /// The latency class when saved.
    pub latency_class: i32,
    /// The priority when saved.
    pub priority: i32,
}

/// Registration states (enum scx_hints_registration in the header).
pub const SCX_HINTS_REG_NONE: c_int = 0;
/// No map is pinned (no scheduler, or it cannot be opened).
pub const SCX_HINTS_REG_NO_MAP: c_int = 1;
/// The kernel refused the registration (errno in `*err`).
pub const SCX_HINTS_REG_FAILED: c_int = 2;
/// The thread's hints reach the scheduler.
pub const SCX_HINTS_REG_REGISTERED: c_int = 3;
/// A map is pinned but this process may not use it (errno EACCES or EPERM in `*err`).
pub const SCX_HINTS_REG_NOT_ALLOWED: c_int = 4;

fn class_of(raw: c_int) -> Option<LatencyClass> {
    LatencyClass::ALL.into_iter().find(|c| *c as c_int == raw)
}

/// Sets the calling thread's latency class. 0, or -EINVAL for a value that
/// is not a class.
#[no_mangle]
pub extern "C" fn scx_hints_set_latency_class(latency_class: c_int) -> c_int {
    match class_of(latency_class) {
        Some(c) => {
            hints::set_latency_class(c);
            0
        }
        None => -libc::EINVAL,
    }
}

/// The calling thread's latency class (NORMAL until set).
#[no_mangle]
pub extern "C" fn scx_hints_latency_class() -> c_int {
    hints::latency_class() as c_int
}

/// Sets the calling thread's priority (-20..=19). 0, or -ERANGE.
#[no_mangle]
pub extern "C" fn scx_hints_set_priority(priority: c_int) -> c_int {
    match hints::set_priority(priority) {
        Ok(()) => 0,
        Err(_) => -libc::ERANGE,
    }
}

/// The calling thread's priority (0 until set).
#[no_mangle]
pub extern "C" fn scx_hints_priority() -> c_int {
    hints::priority()
}

/// The calling thread's class and priority, to restore later.
#[no_mangle]
pub extern "C" fn scx_hints_save() -> scx_hints_saved {
    scx_hints_saved {
        latency_class: hints::latency_class() as i32,
        priority: hints::priority(),
    }
}

/// Restores what `scx_hints_save` returned on this thread. Values that are
/// not a class or a priority (an uninitialised struct) leave that hint
/// unchanged and return -EINVAL.
#[no_mangle]
pub extern "C" fn scx_hints_restore(saved: scx_hints_saved) -> c_int {
    let class = scx_hints_set_latency_class(saved.latency_class);
    let prio = scx_hints_set_priority(saved.priority);
    if class != 0 || prio != 0 {
        -libc::EINVAL
    } else {
        0
    }
}

fn key_errno(e: KeyError) -> c_int {
    -e.errno()
}

/// The name as UTF-8, or -EINVAL.
///
/// # Safety
/// `name` is null or a NUL-terminated string.
unsafe fn key_name<'a>(name: *const c_char) -> Result<&'a str, c_int> {
    if name.is_null() {
        return Err(-libc::EINVAL);
    }
    // SAFETY: the caller passes a NUL-terminated string.
    unsafe { CStr::from_ptr(name) }
        .to_str()
        .map_err(|_| -libc::EINVAL)
}

fn store_key(out: *mut scx_hints_key, key: RawKey) -> c_int {
    // SAFETY: checked non-null by the callers; the caller owns *out.
    unsafe {
        *out = scx_hints_key {
            offset: key.offset,
            size: key.size,
        }
    };
    0
}

/// Creates a key of `size` bytes named `name`. 0, -EEXIST (the name
/// exists), -E2BIG (does not fit), -ENOSPC (no slot), -ENOMEM, -EINVAL (bad
/// name, size 0, or a null pointer).
///
/// # Safety
/// `name` is null or a NUL-terminated string; `key` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn scx_hints_key_create(
    name: *const c_char,
    size: usize,
    key: *mut scx_hints_key,
) -> c_int {
    // SAFETY: forwarded from the caller.
    let name = match unsafe { key_name(name) } {
        Ok(n) => n,
        Err(e) => return e,
    };
    if key.is_null() {
        return -libc::EINVAL;
    }
    match tld::create_raw_key(name, size) {
        Ok(k) => store_key(key, k),
        Err(e) => key_errno(e),
    }
}

/// Finds the key named `name`. 0, -ENOENT, or -EINVAL.
///
/// # Safety
/// As for `scx_hints_key_create`.
#[no_mangle]
pub unsafe extern "C" fn scx_hints_key_find(name: *const c_char, key: *mut scx_hints_key) -> c_int {
    // SAFETY: forwarded from the caller.
    let name = match unsafe { key_name(name) } {
        Ok(n) => n,
        Err(e) => return e,
    };
    if key.is_null() {
        return -libc::EINVAL;
    }
    match tld::find_raw_key(name) {
        Some(k) => store_key(key, k),
        None => -libc::ENOENT,
    }
}

/// Creates the key, or finds it if a key of that name and size exists (the
/// way to share a key between libraries). -EEXIST if its size differs;
/// otherwise as `scx_hints_key_create`.
///
/// # Safety
/// As for `scx_hints_key_create`.
#[no_mangle]
pub unsafe extern "C" fn scx_hints_key_get_or_create(
    name: *const c_char,
    size: usize,
    key: *mut scx_hints_key,
) -> c_int {
    // SAFETY: forwarded from the caller.
    match unsafe { scx_hints_key_create(name, size, key) } {
        e if e == -libc::EEXIST => {
            // Found into a local first: *key is left untouched on failure.
            let mut found = scx_hints_key::default();
            // SAFETY: as above; `found` is writable.
            match unsafe { scx_hints_key_find(name, &mut found) } {
                0 if usize::from(found.size) == size => {
                    // SAFETY: non-null (create checked it), the caller's.
                    unsafe { *key = found };
                    0
                }
                0 => -libc::EEXIST,
                r => r,
            }
        }
        r => r,
    }
}

/// A pointer to the calling thread's value of `key` (`key.size` bytes,
/// 8-byte aligned, zeroed until written), valid until the thread exits.
/// NULL if the thread's block cannot be allocated or the key does not fit
/// it. Values of at most 8 bytes should be written with one aligned store.
/// A key that no create or find could have returned (a zeroed or made-up
/// struct: size 0, an offset inside the block header or not 8-aligned)
/// also gets NULL rather than a pointer into the block's header.
#[no_mangle]
pub extern "C" fn scx_hints_key_ptr(key: scx_hints_key) -> *mut c_void {
    let offset = usize::from(key.offset);
    if key.size == 0 || offset < abi::DATA_HDR_SIZE || offset % abi::ALIGN != 0 {
        return std::ptr::null_mut();
    }
    RawKey {
        offset: key.offset,
        size: key.size,
    }
    .as_ptr()
    .map_or(std::ptr::null_mut(), |p| p as *mut c_void)
}

fn registration_code(r: Registration, err: *mut c_int) -> c_int {
    let (code, errno) = match r {
        Registration::None => (SCX_HINTS_REG_NONE, 0),
        Registration::NoMap => (SCX_HINTS_REG_NO_MAP, 0),
        Registration::Failed(e) => (SCX_HINTS_REG_FAILED, e),
        Registration::Registered => (SCX_HINTS_REG_REGISTERED, 0),
        Registration::NotAllowed(e) => (SCX_HINTS_REG_NOT_ALLOWED, e),
    };
    if !err.is_null() {
        // SAFETY: the caller passes null or a writable int.
        unsafe { *err = errno };
    }
    code
}

/// The calling thread's registration state (SCX_HINTS_REG_*). If `err` is
/// not NULL, it receives the errno of a failed registration, else 0.
///
/// # Safety
/// `err` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn scx_hints_registration(err: *mut c_int) -> c_int {
    registration_code(hints::registration(), err)
}

/// Allocates and registers the calling thread's block now instead of at its
/// first hint; returns the state as `scx_hints_registration` does.
///
/// # Safety
/// `err` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn scx_hints_register_thread(err: *mut c_int) -> c_int {
    registration_code(tld::register_thread(), err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    const HEADER: &str = include_str!("../include/scx_hints.h");

    /// `NAME = value` pairs of the header's enums and `#define`s.
    fn header_constants() -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for line in HEADER.lines() {
            let line = line.split("/*").next().unwrap_or("");
            let line = line.trim().trim_end_matches(',');
            let (name, value) = if let Some(rest) = line.strip_prefix("#define ") {
                match rest.split_once(char::is_whitespace) {
                    Some((n, v)) => (n, v),
                    None => continue,
                }
            } else if let Some((n, v)) = line.split_once(" = ") {
                (n, v)
            } else {
                continue;
            };
            let v = value.trim().trim_start_matches('(').trim_end_matches(')');
            if let Ok(v) = v.parse::<i64>() {
                out.insert(name.trim().to_string(), v);
            }
        }
        out
    }

    #[test]
    fn header_constants_match_the_crate() {
        let defs = header_constants();
        let get = |n: &str| {
            *defs
                .get(n)
                .unwrap_or_else(|| panic!("{n} not in the header"))
        };
        for c in LatencyClass::ALL {
            let name = format!("SCX_HINTS_CLASS_{}", c.name().to_uppercase());
            assert_eq!(get(&name), c as i64, "{name}");
        }
        assert_eq!(get("SCX_HINTS_PRIO_MIN"), hints::vocab::PRIO_MIN as i64);
        assert_eq!(get("SCX_HINTS_PRIO_MAX"), hints::vocab::PRIO_MAX as i64);
        assert_eq!(get("SCX_HINTS_REG_NONE"), SCX_HINTS_REG_NONE as i64);
        assert_eq!(get("SCX_HINTS_REG_NO_MAP"), SCX_HINTS_REG_NO_MAP as i64);
        assert_eq!(get("SCX_HINTS_REG_FAILED"), SCX_HINTS_REG_FAILED as i64);
        assert_eq!(
            get("SCX_HINTS_REG_REGISTERED"),
            SCX_HINTS_REG_REGISTERED as i64
        );
        assert_eq!(
            get("SCX_HINTS_REG_NOT_ALLOWED"),
            SCX_HINTS_REG_NOT_ALLOWED as i64
        );
        assert_eq!(
            get("SCX_HINTS_KEY_NAME_MAX"),
            (hints::tld::abi::NAME_LEN - 1) as i64
        );
    }

    /// The header without comments and preprocessor lines.
    fn header_code() -> String {
        let mut code = String::new();
        let mut rest = HEADER;
        while let Some(i) = rest.find("/*") {
            code.push_str(&rest[..i]);
            rest = rest[i..].split_once("*/").map_or("", |(_, r)| r);
        }
        code.push_str(rest);
        code.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A C type with its spaces normalised: `const char *` -> `const char*`.
    fn c_type(t: &str) -> String {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" *", "*")
    }

    /// Name -> (return type, parameter types) of the header's prototypes.
    fn header_signatures() -> BTreeMap<String, (String, Vec<String>)> {
        let mut out = BTreeMap::new();
        for decl in header_code().split([';', '{', '}']) {
            let Some((head, params)) = decl.split_once('(') else {
                continue;
            };
            let head = head.trim();
            let name_at = head
                .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .map_or(0, |i| i + 1);
            let (ret, name) = head.split_at(name_at);
            if !name.starts_with("scx_hints_") {
                continue;
            }
            let params = params.trim().trim_end_matches(')');
            let params = if params.trim() == "void" {
                Vec::new()
            } else {
                params
                    .split(',')
                    .map(|p| {
                        // Drop the parameter's name, keep its type.
                        let p = p.trim();
                        c_type(p.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '_'))
                    })
                    .collect()
            };
            out.insert(name.to_string(), (c_type(ret), params));
        }
        out
    }

    /// The C spelling of a Rust type of this file's signatures.
    fn c_of_rust(t: &str) -> String {
        match t.trim() {
            "" | "()" => "void",
            "c_int" => "int",
            "usize" => "size_t",
            "*const c_char" => "const char*",
            "*mut c_int" => "int*",
            "*mut c_void" => "void*",
            "scx_hints_key" => "scx_hints_key",
            "*mut scx_hints_key" => "scx_hints_key*",
            "scx_hints_saved" => "struct scx_hints_saved",
            other => panic!("add the C spelling of the Rust type {other} here"),
        }
        .to_string()
    }

    /// Name -> (return type, parameter types), in C, of the functions this
    /// file exports.
    fn exported_signatures() -> BTreeMap<String, (String, Vec<String>)> {
        let source = include_str!("lib.rs");
        let tests_at = source.find("#[cfg(test)]").unwrap_or(source.len());
        let mut out = BTreeMap::new();
        for f in source[..tests_at].split("extern \"C\" fn ").skip(1) {
            let (name, rest) = f.split_once('(').unwrap();
            let (params, rest) = rest.split_once(')').unwrap();
            let ret = rest
                .split_once('{')
                .unwrap()
                .0
                .trim()
                .trim_start_matches("->");
            let params = params
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| c_of_rust(p.split_once(':').unwrap().1))
                .collect();
            out.insert(name.to_string(), (c_of_rust(ret), params));
        }
        out
    }

    /// Every exported function is declared, with the same types, and the
    /// header declares nothing else: a changed parameter type is caught
    /// here, not by a C program misbehaving.
    #[test]
    fn header_prototypes_match_the_exported_functions() {
        let exported = exported_signatures();
        assert!(exported.len() >= 12, "{exported:?}");
        assert_eq!(header_signatures(), exported);
    }

    /// The parser sees a changed type (so the test above can fail).
    #[test]
    fn header_parser_reads_types() {
        let sigs = header_signatures();
        assert_eq!(
            sigs["scx_hints_key_create"],
            (
                "int".to_string(),
                vec![
                    "const char*".to_string(),
                    "size_t".to_string(),
                    "scx_hints_key*".to_string()
                ]
            )
        );
        assert_eq!(
            sigs["scx_hints_save"],
            ("struct scx_hints_saved".to_string(), vec![])
        );
        assert_eq!(sigs["scx_hints_key_ptr"].0, "void*");
    }

    /// `TYPE NAME` fields of a struct in the header, in order.
    fn header_fields(tag: &str) -> Vec<(String, String)> {
        let code = header_code();
        let body = code
            .split_once(&format!("struct {tag} {{"))
            .and_then(|(_, b)| b.split_once('}'))
            .unwrap_or_else(|| panic!("struct {tag} not in the header"))
            .0;
        body.split(';')
            .filter_map(|f| f.trim().rsplit_once(char::is_whitespace))
            .map(|(t, n)| (c_type(t), n.to_string()))
            .collect()
    }

    #[test]
    fn structs_have_the_header_layout() {
        use std::mem::{offset_of, size_of};
        assert_eq!(
            header_fields("scx_hints_key"),
            [
                ("uint16_t".into(), "offset".into()),
                ("uint16_t".into(), "size".into())
            ]
        );
        assert_eq!(offset_of!(scx_hints_key, offset), 0);
        assert_eq!(offset_of!(scx_hints_key, size), 2);
        assert_eq!(size_of::<scx_hints_key>(), 4);
        assert_eq!(
            header_fields("scx_hints_saved"),
            [
                ("int32_t".into(), "latency_class".into()),
                ("int32_t".into(), "priority".into())
            ]
        );
        assert_eq!(offset_of!(scx_hints_saved, latency_class), 0);
        assert_eq!(offset_of!(scx_hints_saved, priority), 4);
        assert_eq!(size_of::<scx_hints_saved>(), 8);
    }

    #[test]
    fn bad_input_is_refused_with_errno() {
        std::thread::spawn(|| {
            assert_eq!(scx_hints_set_latency_class(5), -libc::EINVAL);
            assert_eq!(scx_hints_set_priority(20), -libc::ERANGE);
            let mut k = scx_hints_key::default();
            // SAFETY: null and valid pointers as documented.
            unsafe {
                assert_eq!(
                    scx_hints_key_create(std::ptr::null(), 4, &mut k),
                    -libc::EINVAL
                );
                assert_eq!(
                    scx_hints_key_create(c"capi.zero".as_ptr(), 0, &mut k),
                    -libc::EINVAL
                );
                // The header's limits: SCX_HINTS_KEY_NAME_MAX bytes of name,
                // a page minus the block header of value.
                let longest = std::ffi::CString::new("n".repeat(abi::NAME_LEN - 1)).unwrap();
                let too_long = std::ffi::CString::new("n".repeat(abi::NAME_LEN)).unwrap();
                assert_eq!(
                    scx_hints_key_create(too_long.as_ptr(), 1, &mut k),
                    -libc::EINVAL
                );
                assert_eq!(scx_hints_key_create(longest.as_ptr(), 1, &mut k), 0);
                assert_eq!(
                    scx_hints_key_create(c"capi.huge".as_ptr(), abi::MAX_KEY_SIZE + 1, &mut k),
                    -libc::E2BIG
                );
                assert_eq!(
                    scx_hints_key_find(c"capi.absent".as_ptr(), &mut k),
                    -libc::ENOENT
                );
                assert_eq!(scx_hints_key_create(c"capi.sized".as_ptr(), 4, &mut k), 0);
                let created = k;
                let mut other = scx_hints_key { offset: 1, size: 1 };
                assert_eq!(
                    scx_hints_key_get_or_create(c"capi.sized".as_ptr(), 8, &mut other),
                    -libc::EEXIST
                );
                assert_eq!(other, scx_hints_key { offset: 1, size: 1 }, "untouched");
                assert_eq!(
                    scx_hints_key_get_or_create(c"capi.sized".as_ptr(), 4, &mut other),
                    0
                );
                assert_eq!(other, created);
                assert!(!scx_hints_key_ptr(created).is_null());
            }
            // Keys no create or find returns: never a pointer into the
            // block header, never misaligned.
            for forged in [
                scx_hints_key::default(),
                scx_hints_key { offset: 0, size: 4 },
                scx_hints_key {
                    offset: abi::DATA_HDR_SIZE as u16 + 1,
                    size: 4,
                },
                scx_hints_key {
                    offset: abi::DATA_HDR_SIZE as u16,
                    size: 0,
                },
            ] {
                assert!(scx_hints_key_ptr(forged).is_null(), "{forged:?}");
            }
            let restored = scx_hints_restore(scx_hints_saved {
                latency_class: 99,
                priority: 0,
            });
            assert_eq!(restored, -libc::EINVAL);
        })
        .join()
        .unwrap();
    }
}
