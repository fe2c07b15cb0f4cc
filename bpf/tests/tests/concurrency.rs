//! Many threads create keys at once, valid and invalid: no corruption, no
//! duplicate names, distinct non-overlapping keys, and BPF agrees.

use scx_hints::tld::{self, abi, KeyError};
use std::collections::{HashMap, HashSet};
use std::sync::{Barrier, Mutex};
use tld_kernel_tests::fixture;

const THREADS: usize = 24;
const PER_THREAD: usize = 6;

#[test]
fn concurrent_creation_agrees_with_bpf() {
    let Some(fx) = fixture() else { return };
    // The hint keys of scx_hints itself were created before main.
    let before = tld::testing::key_count();
    let start = Barrier::new(THREADS);
    let created: Mutex<HashMap<String, (usize, usize)>> = Mutex::new(HashMap::new());
    let errors: Mutex<Vec<(String, KeyError)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (start, created, errors) = (&start, &created, &errors);
            s.spawn(move || {
                start.wait();
                for k in 0..PER_THREAD {
                    // A third of the names are shared by three threads, one
                    // attempt in six is too big, the rest are unique; 24 x 6
                    // attempts exceed the 63 slots.
                    let (name, r) = match k {
                        0 | 1 => {
                            let name = format!("conc.shared.{}.{k}", t / 3);
                            let r = tld::create_key::<u32>(&name).map(|key| (key.offset(), 4));
                            (name, r)
                        }
                        2 => {
                            let name = format!("conc.big.{t}");
                            let r = tld::create_key::<[u8; 4096]>(&name)
                                .map(|key| (key.offset(), 4096));
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
    assert_eq!(
        created.len(),
        abi::MAX_KEYS - before,
        "every slot is used exactly once"
    );
    for (name, e) in &errors {
        match e {
            KeyError::TooBig => assert!(name.starts_with("conc.big."), "{name}: {e}"),
            KeyError::Exists => {
                assert!(name.starts_with("conc.shared."), "{name}");
                assert!(
                    created.contains_key(name),
                    "{name} exists, so it was created once"
                );
            }
            KeyError::NoSlot => {}
            other => panic!("unexpected error for {name}: {other}"),
        }
    }
    assert!(errors.iter().any(|(_, e)| *e == KeyError::NoSlot));

    let mut spans: Vec<_> = created
        .values()
        .map(|&(off, size)| (off, off + size))
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "keys overlap: {w:?}");
    }
    let names: HashSet<_> = created.keys().collect();
    assert_eq!(names.len(), created.len());

    // BPF resolves every created key to the same offset, in a fresh thread
    // that writes a distinct value through each.
    std::thread::spawn(move || {
        let mut written = Vec::new();
        for (i, (name, &(off, size))) in created.iter().enumerate() {
            if size == 4 {
                let k = tld::find_key::<u32>(name).unwrap().unwrap();
                k.set(1000 + i as u32);
                written.push((name.clone(), off, 4u16, 1000 + i as u64));
            } else {
                let k = tld::find_key::<u64>(name).unwrap().unwrap();
                k.set(1_000_000 + i as u64);
                written.push((name.clone(), off, 8u16, 1_000_000 + i as u64));
            }
        }
        for (slot, (name, off, size, value)) in written.iter().enumerate() {
            let r = fx.read(name, *size, slot as u32);
            assert_eq!(r.cached, *off as i32, "{name}: BPF's offset");
            assert_eq!(r.value, Some(*value), "{name}: BPF's value");
        }
        // Names that failed are not found by BPF unless they exist.
        let r = fx.read("conc.big.0", 8, 63);
        assert_eq!(r.value, None);
    })
    .join()
    .unwrap();
}
