//! The BPF cost of one decision's hint reads (tld_object_init and two
//! cached tld_get()s) on the host kernel, plain and against an application
//! that rewrites its metadata page's cookie before every decision or makes
//! the reader look for a key it never created. Prints ns per decision (the
//! median of rounds, minus the loop without reads).
//!
//! Usage: tld-read-cost [ROUNDS [EXTRA_KEYS]]   (needs root; default 15
//! rounds, no extra keys besides the two hints: a search walks every key)

use tld_kernel_tests::{fixture, BENCH_ABSENT_KEY, BENCH_NEW_COOKIE};

const N: u32 = 200_000;

fn main() {
    let usage = || -> ! {
        eprintln!("usage: tld-read-cost [ROUNDS [EXTRA_KEYS]]  (ROUNDS > 0, EXTRA_KEYS <= 60)");
        std::process::exit(2);
    };
    let arg = |i: usize, default: usize| match std::env::args().nth(i).map(|a| a.parse()) {
        None => default,
        Some(Ok(v)) => v,
        Some(Err(_)) => usage(),
    };
    let (rounds, extra_keys) = (arg(1, 15), arg(2, 0));
    if rounds == 0 || extra_keys > 60 {
        usage();
    }
    let Some(fx) = fixture() else {
        eprintln!("tld-read-cost needs root to load its BPF reader");
        std::process::exit(2);
    };
    for k in 0..extra_keys {
        scx_hints::tld::create_key::<u64>(&format!("cost.extra.{k}")).expect("a key slot");
    }
    println!(
        "{} keys, {rounds} rounds of {N} decisions",
        scx_hints::tld::testing::key_count()
    );
    std::thread::spawn(move || {
        scx_hints::set_latency_class(scx_hints::LatencyClass::Interactive);
        scx_hints::set_priority(1).expect("in range");
        let per = |d: std::time::Duration| d.as_secs_f64() * 1e9 / N as f64;
        let cases = [
            ("cached reads", 0),
            ("cookie rewritten every decision", BENCH_NEW_COOKIE),
            ("plus a key that never exists", BENCH_ABSENT_KEY),
            ("both", BENCH_NEW_COOKIE | BENCH_ABSENT_KEY),
        ];
        println!("{:<34} {:>12}", "decision", "ns (median)");
        for (name, adversary) in cases {
            let mut costs: Vec<f64> = (0..rounds)
                .map(|_| {
                    let base = per(fx.bench_reads_against(N, false, 0).0);
                    per(fx.bench_reads_against(N, true, adversary).0) - base
                })
                .collect();
            costs.sort_by(f64::total_cmp);
            println!("{:<34} {:>12.1}", name, costs[rounds / 2]);
        }
    })
    .join()
    .unwrap();
}
