//! Many threads, released together, create keys at once, valid and invalid,
//! for 100 rounds, each on a fresh metadata page: no corruption, no
//! duplicate names, distinct non-overlapping keys, and BPF agrees.

use scx_hints::tld::{self, abi, KeyError};
use std::collections::{HashMap, HashSet};
use std::sync::{Barrier, Mutex};
use tld_kernel_tests::{fixture, Fixture};

const ROUNDS: usize = 100;
const THREADS: usize = 16;
const PER_THREAD: usize = 8;
/// Three keys this big fit in a fresh page (4088 bytes of key data), the
/// fourth never does: "too big" is decided under contention, by the same
/// compare-and-swap that claims the slot.
const BIG: usize = 1024;

#[test]
fn concurrent_creation_agrees_with_bpf() {
    let Some(fx) = fixture() else { return };
    for round in 0..ROUNDS {
        tld::testing::replace_meta_page();
        one_round(fx, round);
    }
}

fn one_round(fx: &'static Fixture, round: usize) {
    let start = Barrier::new(THREADS);
    let created: Mutex<HashMap<String, (usize, usize)>> = Mutex::new(HashMap::new());
    let errors: Mutex<Vec<(String, KeyError)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (start, created, errors) = (&start, &created, &errors);
            s.spawn(move || {
                start.wait();
                for k in 0..PER_THREAD {
                    // Two names in eight are shared by four threads, one is
                    // big, the rest are the thread's own: 16 x 8 attempts
                    // for 63 slots.
                    let (name, r) = match k {
                        0 | 1 => {
                            let name = format!("conc.shared.{}.{k}", t / 4);
                            let r = tld::create_key::<u32>(&name).map(|key| (key.offset(), 4));
                            (name, r)
                        }
                        2 => {
                            let name = format!("conc.big.{t}");
                            let r =
                                tld::create_key::<[u8; BIG]>(&name).map(|key| (key.offset(), BIG));
                            (name, r)
                        }
                        _ => {
                            let name = format!("conc.own.{t}.{k}");
                            let r = tld::create_key::<u64>(&name).map(|key| (key.offset(), 8));
                            (name, r)
                        }
                    };
                    match r {
                        Ok(v) => assert!(created.lock().unwrap().insert(name, v).is_none()),
                        Err(e) => errors.lock().unwrap().push((name, e)),
                    }
                }
            });
        }
    });
    let created = created.into_inner().unwrap();
    let errors = errors.into_inner().unwrap();
    let ctx = format!("round {round}");
    assert_eq!(
        created.len(),
        abi::MAX_KEYS,
        "{ctx}: every slot is used once"
    );
    assert_eq!(tld::testing::key_count(), abi::MAX_KEYS, "{ctx}");
    for (name, e) in &errors {
        match e {
            KeyError::TooBig => assert!(name.starts_with("conc.big."), "{ctx}: {name}: {e}"),
            KeyError::Exists => {
                assert!(name.starts_with("conc.shared."), "{ctx}: {name}");
                assert!(
                    created.contains_key(name),
                    "{ctx}: {name} exists, so was created"
                );
            }
            KeyError::NoSlot => {}
            other => panic!("{ctx}: unexpected error for {name}: {other}"),
        }
    }
    let big = created
        .keys()
        .filter(|n| n.starts_with("conc.big."))
        .count();
    assert!(big <= 3, "{ctx}: {big} keys of {BIG} bytes in one page");
    let too_big = errors
        .iter()
        .filter(|(_, e)| *e == KeyError::TooBig)
        .count();
    assert_eq!(
        big + too_big
            + errors
                .iter()
                .filter(|(n, e)| *e == KeyError::NoSlot && n.starts_with("conc.big."))
                .count(),
        THREADS,
        "{ctx}: every big attempt accounted for"
    );

    let mut spans: Vec<_> = created
        .values()
        .map(|&(off, size)| (off, off + abi::round_up(size)))
        .collect();
    spans.sort();
    assert_eq!(spans[0].0, abi::DATA_HDR_SIZE, "{ctx}");
    for w in spans.windows(2) {
        assert_eq!(w[0].1, w[1].0, "{ctx}: keys overlap or leave a gap: {w:?}");
    }
    let names: HashSet<_> = created.keys().collect();
    assert_eq!(names.len(), created.len(), "{ctx}");

    // BPF resolves every created key to the same offset, in a fresh thread
    // that writes a distinct value through each.
    std::thread::spawn(move || {
        let mut written = Vec::new();
        for (i, (name, &(off, size))) in created.iter().enumerate() {
            let value = (round * 1000 + i) as u64;
            match size {
                4 => tld::find_key::<u32>(name)
                    .unwrap()
                    .unwrap()
                    .set(value as u32),
                8 => tld::find_key::<u64>(name).unwrap().unwrap().set(value),
                _ => {
                    let k = tld::find_key::<[u8; BIG]>(name).unwrap().unwrap();
                    let mut v = [0u8; BIG];
                    v[..8].copy_from_slice(&value.to_le_bytes());
                    k.set(v);
                    // BPF reads the big key's first 8 bytes: its size
                    // differs, so the reader refuses it (checked below).
                }
            }
            written.push((name.clone(), off, size, value));
        }
        for (slot, (name, off, size, value)) in written.iter().enumerate() {
            let read_size = if *size == 4 { 4 } else { 8 };
            let r = fx.read(name, read_size, slot as u32);
            if *size == BIG {
                assert_eq!(r.value, None, "round {round}: {name} read at another size");
                continue;
            }
            assert_eq!(r.cached, *off as i32, "round {round}: {name}: BPF's offset");
            assert_eq!(r.value, Some(*value), "round {round}: {name}: BPF's value");
        }
    })
    .join()
    .unwrap();
}
