fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .enable_intf("../bpf/intf.h", "bpf_intf.rs")
        .enable_skel("../bpf/scx_hinted.bpf.c", "bpf")
        .build()
        .unwrap();
}
