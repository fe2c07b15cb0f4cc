//! The TLD round trip, shown: threads set their hints with plain stores,
//! and a BPF program reads, for each thread, what the kernel sees.
//! `cargo xtask demo` runs this where no sched_ext kernel is at hand.

use scx_hints::{vocab, LatencyClass};
use std::sync::Barrier;
use tld_kernel_tests::fixture;

fn main() {
    let Some(fx) = fixture() else {
        eprintln!("the round trip needs root to load its BPF reader");
        std::process::exit(2);
    };
    let plan = [
        ("render", LatencyClass::Critical, -5),
        ("input", LatencyClass::Interactive, 0),
        ("worker", LatencyClass::Normal, 0),
        ("indexer", LatencyClass::Batch, 5),
        ("backup", LatencyClass::Background, 19),
    ];
    println!("pinned TLD map: {}", fx.pin_path().display());
    println!(
        "{:<8} {:>7}  {:<12} {:>8}   {:<12} {:>8}  agree",
        "thread", "tid", "set class", "set prio", "BPF class", "BPF prio"
    );
    let all_set = Barrier::new(plan.len());
    let mismatches: usize = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .iter()
            .map(|&(name, class, prio)| {
                let all_set = &all_set;
                s.spawn(move || {
                    scx_hints::set_latency_class(class);
                    scx_hints::set_priority(prio).expect("in range");
                    all_set.wait();
                    let c = fx.read(vocab::KEY_LATENCY_CLASS, 4, 0);
                    let p = fx.read(vocab::KEY_PRIORITY, 4, 1);
                    let seen_class = c.value.map(|v| LatencyClass::from_raw(v as u32 as i32));
                    let seen_prio = p.value.map(|v| v as u32 as i32);
                    let agree = seen_class == Some(class) && seen_prio == Some(prio);
                    // SAFETY: gettid has no preconditions.
                    let tid = unsafe { libc::gettid() };
                    println!(
                        "{:<8} {:>7}  {:<12} {:>8}   {:<12} {:>8}  {}",
                        name,
                        tid,
                        class.name(),
                        prio,
                        seen_class.map_or("-".into(), |c| c.name().to_string()),
                        seen_prio.map_or("-".into(), |p| p.to_string()),
                        if agree { "yes" } else { "NO" }
                    );
                    usize::from(!agree)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    if mismatches > 0 {
        eprintln!("{mismatches} threads: BPF saw something else than what they set");
        std::process::exit(1);
    }
    println!("every thread's hints reached the kernel with no syscall per hint");
}
