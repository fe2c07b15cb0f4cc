//! Host-kernel tests of task local data: the BPF reader object and helpers
//! to run it in the calling thread's context.

pub mod reader {
    include!(concat!(env!("OUT_DIR"), "/tld_reader_skel.rs"));
}
