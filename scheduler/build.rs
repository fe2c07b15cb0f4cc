fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("../bpf/intf.h", "bpf_intf.rs")
        .enable_skel("../bpf/scx_hinted.bpf.c", "bpf")
        .build()
        .unwrap();
    // The ownership guard: a separate object, so that it loads (and can stay
    // attached) without the scheduler, also on kernels without sched_ext.
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_skel("../bpf/tld_guard.bpf.c", "tld_guard")
        .build()
        .unwrap();
}
