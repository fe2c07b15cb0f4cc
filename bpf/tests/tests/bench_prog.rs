//! The hint-read benchmark program reads what the thread set (so the bench
//! measures real reads, not a failed lookup).

use scx_hints::LatencyClass;
use tld_kernel_tests::fixture;

#[test]
fn bench_program_reads_both_hints() {
    let Some(fx) = fixture() else { return };
    std::thread::spawn(move || {
        scx_hints::set_latency_class(LatencyClass::Interactive);
        scx_hints::set_priority(3).unwrap();
        let (_, sum) = fx.bench_reads(1000, true);
        assert_eq!(sum, 1000 * (LatencyClass::Interactive as i64 + 3));
        let (_, sum) = fx.bench_reads(1000, false);
        assert_eq!(sum, 0, "the baseline reads nothing");
    })
    .join()
    .unwrap();
}
