//! The BPF reader fed random and adversarial pages: the test thread points
//! its map entry at a metadata page and a data page of its own, writes a
//! case into them, and runs one decision (tld_object_init and one tld_get)
//! with BPF_PROG_TEST_RUN. A model of the documented reading rules
//! (docs/tld-abi.md) gives each case's truth. Checked for every case:
//!
//! - a value read is the one at the key's offset, of the key named, at the
//!   size asked, inside the block: never a wrong value read as valid;
//! - every case is counted: it read a value, found no key in sound data, or
//!   added exactly 1 to exactly one tld_stats counter (the one the model
//!   names);
//! - the work is bounded: a cookie rewritten before every decision costs at
//!   most one key search per TLD_RESET_INTERVAL_NS (10 ms), a key that never
//!   exists costs no search while the page has no newer entry, and a search
//!   compares each entry's name once per cache.
//!
//! Each run draws new cases from a seed taken from the clock;
//! `TLD_FUZZ_SEED` replays a run (every failure prints its seed and case);
//! `TLD_FUZZ_CASES` sets the number of single-decision cases (default
//! 100,000).

use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use tld_kernel_tests::{fixture, Fixture, FuzzOut, Stats};

const PAGE: usize = 4096;
const NAME_LEN: usize = 62;
const MAX_KEYS: usize = 63;
const MAX_KEY_SIZE: usize = PAGE - 8;
const MAGIC: u32 = 0x3144_4c54;
const ENTRIES: usize = 64;
const RESET_INTERVAL_NS: u64 = 10_000_000;
const EINVAL: i32 = 22;
const EAGAIN: i32 = 11;

/// xorshift64*: reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
}

/// A page-aligned page of our own, pinned by the kernel while registered.
struct Page(*mut u8);

// SAFETY: shared only with the concurrent-append test's writer thread,
// which writes through atomics and volatile stores.
unsafe impl Sync for Page {}

impl Page {
    fn new() -> Page {
        // SAFETY: an anonymous private mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Page(p as *mut u8)
    }
    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: the mapping lives as long as the test; BPF only reads it
        // while no slice is being written (sequential phases), and the
        // concurrent phase writes through atomics and volatile stores.
        unsafe { std::slice::from_raw_parts_mut(self.0, PAGE) }
    }
    fn addr(&self) -> usize {
        self.0 as usize
    }
    fn u16_at(&self, at: usize) -> &AtomicU16 {
        // SAFETY: an aligned u16 inside the page.
        unsafe { AtomicU16::from_ptr(self.0.add(at) as *mut u16) }
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn get16(b: &[u8], at: usize) -> usize {
    u16::from_le_bytes([b[at], b[at + 1]]) as usize
}
fn round8(n: usize) -> usize {
    (n + 7) & !7
}
fn entry_at(i: usize) -> usize {
    ENTRIES + 64 * i
}

/// What a decision must come to, by the documented rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    BadMagic,
    /// The block's start or capacity outside its page (tld_object_init).
    BadBlock,
    BadMeta,
    /// The key's bytes beyond the block's capacity (tld_get).
    KeyOutside,
    /// No such key in sound data (or its slot still being written).
    Missing,
    Found(usize),
}

/// The reading rules of docs/tld-abi.md, for a reader with an empty cache.
fn model(meta: &[u8], data: &[u8], start: usize, name: &[u8; NAME_LEN], want: usize) -> Expect {
    if u32::from_le_bytes(meta[0..4].try_into().unwrap()) != MAGIC || get16(meta, 4) != 1 {
        return Expect::BadMagic;
    }
    if start > PAGE - 8 || !start.is_multiple_of(8) {
        return Expect::BadBlock;
    }
    let cap = get16(data, start);
    if cap > PAGE - 8 - start {
        return Expect::BadBlock;
    }
    let cnt = get16(meta, 8);
    if cnt > MAX_KEYS {
        return Expect::BadMeta;
    }
    let mut off = 8;
    for i in 0..cnt {
        let e = &meta[entry_at(i)..entry_at(i) + 64];
        let size = get16(e, NAME_LEN);
        if size == 0 {
            return Expect::Missing;
        }
        if size > MAX_KEY_SIZE {
            return Expect::BadMeta;
        }
        let mut same = None;
        for j in 0..NAME_LEN {
            if e[j] != name[j] {
                same = Some(false);
                break;
            }
            if e[j] == 0 {
                same = Some(true);
                break;
            }
        }
        match same {
            None => return Expect::BadMeta,
            Some(true) if size != want => return Expect::BadMeta,
            Some(true) if off + want > 8 + cap => return Expect::KeyOutside,
            Some(true) => return Expect::Found(off),
            Some(false) => {}
        }
        off += round8(size);
        if off >= PAGE {
            return Expect::BadMeta;
        }
    }
    Expect::Missing
}

/// The counters a decision with this outcome adds to, by one each.
fn counted(e: Expect) -> Stats {
    let mut s = Stats::default();
    match e {
        Expect::BadMagic => s.bad_magic = 1,
        Expect::BadBlock | Expect::KeyOutside => s.bad_offset = 1,
        Expect::BadMeta => s.bad_meta = 1,
        Expect::Missing | Expect::Found(_) => {}
    }
    s
}

/// The outcome counters only (not the work of searches).
fn outcomes(s: Stats) -> [u64; 4] {
    [s.bad_magic, s.bad_meta, s.bad_offset, s.throttled]
}

fn random_name(rng: &mut Rng) -> [u8; NAME_LEN] {
    // A small alphabet and short names: shared prefixes and duplicates.
    const ALPHABET: &[u8] = b"ab.";
    let len = if rng.chance(5) {
        1 + rng.below(NAME_LEN - 1)
    } else {
        1 + rng.below(6)
    };
    let mut n = [0u8; NAME_LEN];
    for b in &mut n[..len] {
        *b = ALPHABET[rng.below(ALPHABET.len())];
    }
    n
}

fn random_size(rng: &mut Rng) -> usize {
    if rng.chance(60) {
        [1, 2, 4, 8][rng.below(4)]
    } else {
        [3, 5, 7, 9, 16, 24, 40, 64, 100, 200, 1 + rng.below(300)][rng.below(11)]
    }
}

/// One case: what the reader is asked, and where the block starts.
struct Case {
    start: usize,
    name: [u8; NAME_LEN],
    want: usize,
}

/// Writes a random, often adversarial, case into the pages.
fn generate(rng: &mut Rng, meta: &mut [u8], data: &mut [u8], cookie: u32) -> Case {
    for chunk in data.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    meta.fill(0);
    meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    put16(meta, 4, 1);
    put16(meta, 6, ENTRIES as u16);
    meta[16..20].copy_from_slice(&cookie.to_le_bytes());

    let n = if rng.chance(50) {
        rng.below(9)
    } else {
        rng.below(MAX_KEYS + 1)
    };
    let mut sizes = Vec::with_capacity(n);
    for i in 0..n {
        let name = random_name(rng);
        let size = random_size(rng);
        let e = entry_at(i);
        meta[e..e + NAME_LEN].copy_from_slice(&name);
        put16(meta, e + NAME_LEN, size as u16);
        sizes.push(size);
    }
    let data_size: usize = sizes.iter().map(|&s| round8(s)).sum();
    // A block that holds the keys (when they fit a page), placed anywhere
    // it fits, 8-aligned.
    let cap = (data_size + rng.below(64)).min(MAX_KEY_SIZE) & !7;
    let start = 8 * rng.below((PAGE - 8 - cap) / 8 + 1);

    let mut name = random_name(rng);
    let mut want = [1, 2, 4, 8][rng.below(4)];
    if n > 0 && rng.chance(70) {
        let j = rng.below(n);
        name.copy_from_slice(&meta[entry_at(j)..entry_at(j) + NAME_LEN]);
        if sizes[j] <= 8 && sizes[j].is_power_of_two() && rng.chance(90) {
            want = sizes[j];
        }
        if rng.chance(10) {
            // A near miss: one byte more or less.
            let len = name.iter().position(|&b| b == 0).unwrap_or(NAME_LEN);
            if len + 1 < NAME_LEN && rng.chance(50) {
                name[len] = b'a';
            } else if len > 1 {
                name[len - 1] = 0;
            }
        }
    }
    let mut cnt = n;
    let mut start = start;
    let mut cap = cap;
    // Adversaries, each now and then.
    let k = if n > 0 { rng.below(n) } else { 0 };
    match rng.below(24) {
        0 => meta[rng.below(4)] ^= 1 << rng.below(8),
        1 => put16(meta, 4, 2 + rng.below(1000) as u16),
        2 => start = (start + 1 + rng.below(7)).min(PAGE),
        3 => start = PAGE - 7 + rng.below(60_000),
        4 => cap = PAGE - 8 - start + 1 + rng.below(60_000),
        5 => cap = rng.below(data_size + 1),
        6 => cnt = MAX_KEYS + 1 + rng.below(60_000),
        7 => cnt = rng.below(n + 1),
        8 if n > 0 => put16(meta, entry_at(k) + NAME_LEN, 0),
        9 if n > 0 => put16(
            meta,
            entry_at(k) + NAME_LEN,
            (MAX_KEY_SIZE + 1 + rng.below(60_000)) as u16,
        ),
        10 if n > 0 => put16(
            meta,
            entry_at(k) + NAME_LEN,
            (1000 + rng.below(3000)) as u16,
        ),
        11 if n > 0 => {
            // An unterminated name; asked for as it is half the time.
            let e = entry_at(k);
            for b in &mut meta[e..e + NAME_LEN] {
                *b = b'a' + rng.below(2) as u8;
            }
            if rng.chance(50) {
                name.copy_from_slice(&meta[e..e + NAME_LEN]);
            }
        }
        12 => {
            // Garbage anywhere in the entries.
            for _ in 0..1 + rng.below(8) {
                meta[ENTRIES + rng.below(PAGE - ENTRIES)] = rng.next() as u8;
            }
        }
        _ => {}
    }
    put16(meta, 8, cnt as u16);
    if start <= PAGE - 2 {
        put16(data, start, cap as u16);
    }
    Case {
        start: start.min(u16::MAX as usize),
        name,
        want,
    }
}

/// Checks one decision's result against the model's truth.
fn check(
    ctx: &dyn Fn() -> String,
    expect: Expect,
    out: &FuzzOut,
    counted_now: Stats,
    data: &[u8],
    case: &Case,
) {
    let want_counted = outcomes(counted(expect));
    assert_eq!(
        outcomes(counted_now),
        want_counted,
        "{}: counters, expected {expect:?}, got {out:?}",
        ctx()
    );
    let init_err = match expect {
        Expect::BadMagic | Expect::BadBlock => -EINVAL,
        _ => 0,
    };
    assert_eq!(out.init_err, init_err, "{}: expected {expect:?}", ctx());
    match expect {
        Expect::Found(off) => {
            let at = case.start + off;
            let mut v = [0u8; 8];
            v[..case.want].copy_from_slice(&data[at..at + case.want]);
            assert_eq!(
                out.value,
                Some(u64::from_le_bytes(v)),
                "{}: the value at offset {off}",
                ctx()
            );
            assert_eq!(out.cached, off as i32, "{}: the offset cached", ctx());
        }
        _ => assert_eq!(
            out.value,
            None,
            "{}: a value read, expected {expect:?}",
            ctx()
        ),
    }
}

fn seed() -> u64 {
    match std::env::var("TLD_FUZZ_SEED") {
        Ok(s) => s.parse().expect("TLD_FUZZ_SEED: an integer"),
        // New cases every run; each failure names the seed to replay it.
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64),
    }
}

fn cases() -> usize {
    match std::env::var("TLD_FUZZ_CASES") {
        Ok(s) => s.parse().expect("TLD_FUZZ_CASES: an integer"),
        Err(_) => 100_000,
    }
}

/// Runs `f` in a thread of its own whose map entry points at two fresh
/// pages, one test at a time: the counters checked per decision are global.
fn with_pages(f: impl FnOnce(&'static Fixture, &mut Page, &mut Page) + Send) {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let Some(fx) = fixture() else { return };
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::scope(|s| {
        s.spawn(|| {
            let (mut meta, mut data) = (Page::new(), Page::new());
            f(fx, &mut meta, &mut data);
        });
    });
}

/// Single decisions with an empty key cache: the model is exact.
#[test]
fn random_pages_read_right_or_counted() {
    let seed = seed();
    with_pages(|fx, meta, data| {
        let mut rng = Rng(seed | 1);
        let n = cases();
        let mut registered_start = None;
        let mut tally = [0usize; 6];
        let t = Instant::now();
        for i in 0..n {
            let case = generate(&mut rng, meta.bytes(), data.bytes(), 1 + i as u32);
            if registered_start != Some(case.start) {
                fx.register_pages(data.addr(), meta.addr(), case.start as u16)
                    .unwrap();
                registered_start = Some(case.start);
            }
            let expect = model(
                meta.bytes(),
                data.bytes(),
                case.start,
                &case.name,
                case.want,
            );
            let before = fx.all_stats();
            let out = fx.fuzz_read(&case.name, case.want as u16, true);
            let now = fx.all_stats().since(&before);
            let ctx = || format!("seed {seed} case {i}");
            check(&ctx, expect, &out, now, data.bytes(), &case);
            // A search compares each entry's name at most once.
            assert!(
                now.names <= MAX_KEYS as u64 && now.entries <= MAX_KEYS as u64,
                "{}",
                ctx()
            );
            tally[match expect {
                Expect::Found(_) => 0,
                Expect::Missing => 1,
                Expect::BadMeta => 2,
                Expect::BadBlock => 3,
                Expect::KeyOutside => 4,
                Expect::BadMagic => 5,
            }] += 1;
        }
        eprintln!(
            "{n} cases in {:.1} s (seed {seed}): found {}, missing {}, bad meta {}, bad block {}, key outside its block {}, bad magic {}",
            t.elapsed().as_secs_f64(),
            tally[0],
            tally[1],
            tally[2],
            tally[3],
            tally[4],
            tally[5]
        );
        // The generator reaches every outcome often.
        for (k, &c) in tally.iter().enumerate() {
            assert!(c * 500 >= n, "outcome {k}: {c} of {n} cases");
        }
    });
}

/// The cookie rewritten before every decision, with the task's own cache:
/// each decision is throttled (counted) or reads by the model, and the
/// cache is dropped, a full search paid, at most once per interval.
#[test]
fn rewritten_cookie_costs_one_search_per_interval() {
    let seed = seed();
    with_pages(|fx, meta, data| {
        let mut rng = Rng((seed ^ 0xc00c1e) | 1);
        let n = cases() / 5;
        fx.forget();
        let (mut resets, mut throttled) = (0u64, 0u64);
        let first = fx.all_stats();
        let t = Instant::now();
        for i in 0..n {
            let case = generate(&mut rng, meta.bytes(), data.bytes(), 1 + i as u32);
            fx.register_pages(data.addr(), meta.addr(), case.start as u16)
                .unwrap();
            let expect = model(
                meta.bytes(),
                data.bytes(),
                case.start,
                &case.name,
                case.want,
            );
            let before = fx.all_stats();
            let out = fx.fuzz_read(&case.name, case.want as u16, false);
            let now = fx.all_stats().since(&before);
            let ctx = || format!("seed {seed} case {i}");
            // The cookie is looked at once the page's header is sound.
            let header_sound = !matches!(expect, Expect::BadMagic | Expect::BadBlock);
            if header_sound && out.init_err == -EAGAIN {
                assert_eq!(
                    outcomes(now),
                    [0, 0, 0, 1],
                    "{}: throttled, counted once",
                    ctx()
                );
                assert_eq!(out.value, None, "{}", ctx());
                throttled += 1;
                continue;
            }
            if out.init_err == 0 {
                resets += 1;
            }
            check(&ctx, expect, &out, now, data.bytes(), &case);
        }
        let elapsed = t.elapsed().as_nanos() as u64;
        let work = fx.all_stats().since(&first);
        // The first fill of the forgotten cache starts no interval.
        let bound = 2 + elapsed / RESET_INTERVAL_NS;
        eprintln!(
            "{n} decisions in {:.2} s with a new cookie each: {resets} searched anew (bound {bound}), {throttled} throttled, {} names compared",
            elapsed as f64 / 1e9,
            work.names
        );
        assert!(resets <= bound, "{resets} cache resets in {elapsed} ns");
        assert!(throttled > 0);
        assert!(work.names <= bound * MAX_KEYS as u64);
    });
}

/// A new page right after the first one was read (an exec soon after the
/// thread's first decisions) is read at once: only a later cookie change
/// within the interval is throttled.
#[test]
fn a_new_page_after_the_first_is_read_at_once() {
    with_pages(|fx, meta, data| {
        fx.register_pages(data.addr(), meta.addr(), 0).unwrap();
        for round in 0..20u32 {
            fx.forget();
            sound_page(meta.bytes(), data.bytes(), 3, 1000 + 3 * round);
            let out = fx.fuzz_read(&key_name(2), 8, false);
            assert_eq!((out.init_err, out.value), (0, Some(1002)), "round {round}");
            // The exec: a new page, other keys.
            sound_page(meta.bytes(), data.bytes(), 5, 1001 + 3 * round);
            let t = Instant::now();
            let out = fx.fuzz_read(&key_name(4), 8, false);
            assert_eq!(
                (out.init_err, out.value),
                (0, Some(1004)),
                "round {round}: the new page unseen"
            );
            // A third page at once is throttled, unless the host stalled us
            // for the whole interval.
            meta.bytes()[16..20].copy_from_slice(&(1002 + 3 * round).to_le_bytes());
            let out = fx.fuzz_read(&key_name(4), 8, false);
            if t.elapsed().as_nanos() < RESET_INTERVAL_NS as u128 {
                assert_eq!(out.init_err, -EAGAIN, "round {round}: not throttled");
            }
        }
    });
}

/// Writes a sound page of `n` entries named "k<i>" of 8 bytes each, and a
/// block of the whole page at `start` 0 (values: 1000 + i).
fn sound_page(meta: &mut [u8], data: &mut [u8], n: usize, cookie: u32) {
    meta.fill(0);
    data.fill(0);
    meta[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    put16(meta, 4, 1);
    put16(meta, 6, ENTRIES as u16);
    meta[16..20].copy_from_slice(&cookie.to_le_bytes());
    put16(data, 0, MAX_KEY_SIZE as u16);
    for i in 0..n {
        write_entry(meta, data, i);
    }
    put16(meta, 8, n as u16);
}

fn key_name(i: usize) -> [u8; NAME_LEN] {
    let mut n = [0u8; NAME_LEN];
    let s = format!("k{i}");
    n[..s.len()].copy_from_slice(s.as_bytes());
    n
}

fn write_entry(meta: &mut [u8], data: &mut [u8], i: usize) {
    let e = entry_at(i);
    meta[e..e + NAME_LEN].copy_from_slice(&key_name(i));
    put16(meta, e + NAME_LEN, 8);
    let off = 8 + 8 * i;
    data[off..off + 8].copy_from_slice(&(1000 + i as u64).to_le_bytes());
}

/// A key that never exists, asked for on every decision while entries are
/// added: no search while nothing was added, and each name compared once.
#[test]
fn absent_key_is_not_searched_again() {
    with_pages(|fx, meta, data| {
        fx.register_pages(data.addr(), meta.addr(), 0).unwrap();
        let absent = key_name(999);
        for round in 0..50u32 {
            let initial = (round as usize * 7) % 40;
            sound_page(meta.bytes(), data.bytes(), initial, 7 + round);
            fx.forget();
            let first = fx.all_stats();
            let mut cnt = initial;
            for step in 0..200usize {
                if step % 20 == 19 && cnt < MAX_KEYS {
                    write_entry(meta.bytes(), data.bytes(), cnt);
                    cnt += 1;
                    put16(meta.bytes(), 8, cnt as u16);
                }
                let before = fx.all_stats();
                let out = fx.fuzz_read(&absent, 8, false);
                let now = fx.all_stats().since(&before);
                assert_eq!(
                    (out.init_err, out.value),
                    (0, None),
                    "round {round} step {step}"
                );
                assert_eq!(out.cached, -(cnt as i32), "round {round} step {step}");
                assert_eq!(outcomes(now), [0; 4], "round {round} step {step}: counted");
                if step > 0 && step % 20 != 19 {
                    assert_eq!(
                        now.searches + now.entries + now.names,
                        0,
                        "round {round} step {step}: searched again"
                    );
                }
            }
            let work = fx.all_stats().since(&first);
            assert_eq!(
                work.names, cnt as u64,
                "round {round}: each name compared once"
            );
        }
    });
}

/// Entries appear while the reader searches (another thread creates keys
/// by the ABI's protocol: count, name, then size with release order): a
/// key is read with its own value or not at all, and found once complete.
#[test]
fn keys_appearing_mid_search_read_right_or_not_at_all() {
    with_pages(|fx, meta, data| {
        fx.register_pages(data.addr(), meta.addr(), 0).unwrap();
        let seed = seed();
        let mut rng = Rng((seed ^ 0xa77e4d) | 1);
        let mut decisions = 0usize;
        let mut found_early = 0usize;
        for round in 0..100u32 {
            let initial = rng.below(20);
            let target = initial + rng.below(MAX_KEYS - initial);
            sound_page(meta.bytes(), data.bytes(), initial, 100 + round);
            fx.forget();
            let name = key_name(target);
            let done = AtomicBool::new(false);
            let (meta, data): (&Page, &Page) = (meta, data);
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in initial..MAX_KEYS {
                        // Claim (count), write name and value, publish size.
                        meta.u16_at(8).store(i as u16 + 1, Ordering::Release);
                        let e = entry_at(i);
                        let name = key_name(i);
                        for (j, b) in name.iter().enumerate() {
                            // SAFETY: this slot is ours until its size is
                            // published; byte stores into our own page.
                            unsafe { std::ptr::write_volatile(meta.0.add(e + j), *b) };
                        }
                        let off = 8 + 8 * i;
                        for (j, b) in (1000 + i as u64).to_le_bytes().iter().enumerate() {
                            // SAFETY: as above, the key's own bytes.
                            unsafe { std::ptr::write_volatile(data.0.add(off + j), *b) };
                        }
                        for _ in 0..rng_spin(i) {
                            std::hint::spin_loop();
                        }
                        meta.u16_at(e + NAME_LEN).store(8, Ordering::Release);
                    }
                    done.store(true, Ordering::Release);
                });
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let out = fx.fuzz_read(&name, 8, false);
                    decisions += 1;
                    assert_eq!(out.init_err, 0, "seed {seed} round {round}");
                    match out.value {
                        Some(v) => {
                            assert_eq!(
                                v,
                                1000 + target as u64,
                                "seed {seed} round {round}: a wrong value"
                            );
                            assert_eq!(
                                out.cached,
                                8 + 8 * target as i32,
                                "seed {seed} round {round}"
                            );
                            if !finished {
                                found_early += 1;
                            }
                        }
                        None => assert!(
                            !finished,
                            "seed {seed} round {round}: not found once complete"
                        ),
                    }
                    if finished {
                        break;
                    }
                }
            });
        }
        eprintln!("{decisions} decisions while keys appeared; {found_early} found before the last key was published");
    });
}

/// A pseudo-random pause between claiming a slot and publishing it.
fn rng_spin(i: usize) -> usize {
    (i * 2_654_435_761) % 500
}
