//! Two copies of the crate initialising the process's TLD state at once,
//! from many threads: exactly one state comes out, every round.

mod common;

use scx_hints as first;
use scx_hints_second_copy as second;
use std::sync::Barrier;

const ROUNDS: usize = 100;
const THREADS: usize = 8;

/// One round, in a forked child whose only thread never touched a block:
/// both copies forget the state, which is unmapped, and THREADS threads
/// race to make it again, half through each copy first. Returns what went
/// wrong.
fn race_in_child() -> Result<(), String> {
    let old = first::tld::testing::forget_process_state();
    if second::tld::testing::forget_process_state() != old {
        return Err("the copies had different states before the race".into());
    }
    let old = old.ok_or("no state to forget")?;
    // SAFETY: both copies forgot the state and this thread has no block.
    unsafe { first::tld::testing::unmap_process_state(old) };
    let barrier = Barrier::new(THREADS);
    let seen: Vec<Result<(usize, usize, usize, usize), String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    barrier.wait();
                    // Even threads come through copy 1 first, odd ones through copy 2.
                    let (x, y) = if t % 2 == 0 {
                        let x = first::tld::get_or_create_key::<u64>("race.first")
                            .map_err(|e| e.to_string())?;
                        let y = second::tld::get_or_create_key::<u64>("race.second")
                            .map_err(|e| e.to_string())?;
                        x.set(t as u64);
                        y.set(t as u64 + 100);
                        (x.offset(), y.offset())
                    } else {
                        let y = second::tld::get_or_create_key::<u64>("race.second")
                            .map_err(|e| e.to_string())?;
                        let x = first::tld::get_or_create_key::<u64>("race.first")
                            .map_err(|e| e.to_string())?;
                        y.set(t as u64 + 100);
                        x.set(t as u64);
                        (x.offset(), y.offset())
                    };
                    let metas = (
                        first::tld::testing::meta_address(),
                        second::tld::testing::meta_address(),
                    );
                    let blocks = (
                        first::tld::testing::block_address(),
                        second::tld::testing::block_address(),
                    );
                    if metas.0 != metas.1 || metas.0.is_none() {
                        return Err(format!("thread {t}: metadata pages {metas:x?}"));
                    }
                    if blocks.0 != blocks.1 || blocks.0.is_none() {
                        return Err(format!("thread {t}: blocks {blocks:x?}"));
                    }
                    let other = first::tld::find_key::<u64>("race.second")
                        .ok_or(format!("thread {t}: copy 1 misses copy 2's key"))?
                        .map_err(|e| e.to_string())?;
                    if other.get() != Some(t as u64 + 100) {
                        return Err(format!("thread {t}: copy 2's value lost"));
                    }
                    Ok((metas.0.unwrap(), blocks.0.unwrap(), x, y))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let seen: Vec<_> = seen.into_iter().collect::<Result<_, _>>()?;
    if seen.iter().any(|s| s.0 != seen[0].0) {
        return Err(format!("threads saw different metadata pages: {seen:x?}"));
    }
    if seen.iter().any(|s| (s.2, s.3) != (seen[0].2, seen[0].3)) {
        return Err(format!("threads saw different key offsets: {seen:x?}"));
    }
    if !first::tld::testing::shares_process_state() || !second::tld::testing::shares_process_state()
    {
        return Err("a copy fell back to a state of its own".into());
    }
    Ok(())
}

#[test]
fn copies_racing_to_initialise_agree_every_round() {
    std::env::set_var(first::tld::abi::MAP_PIN_ENV, "/nonexistent/scx_hints/tld");
    // Forked from a thread that never touched a block.
    let failures = std::thread::spawn(|| {
        let mut failures = Vec::new();
        for round in 0..ROUNDS {
            let status = common::in_child(&format!("round {round}: "), race_in_child);
            if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
                failures.push((round, status));
            }
        }
        failures
    })
    .join()
    .unwrap();
    assert!(
        failures.is_empty(),
        "{} of {ROUNDS} rounds failed (round, wait status): {failures:?}",
        failures.len()
    );
}
