fn main() {
    scx_cargo::BpfBuilder::new()
        .unwrap()
        .add_include_path("..")
        .enable_skel("tld_reader.bpf.c", "tld_reader")
        .build()
        .unwrap();
}
