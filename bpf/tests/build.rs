fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .add_include_path("..")
        .enable_skel("tld_reader.bpf.c", "tld_reader")
        .build()
        .unwrap();
    // The builder watches this directory only; the library is one level up.
    for header in ["../tld.bpf.h", "../tld_abi.h"] {
        println!("cargo:rerun-if-changed={header}");
    }
}
