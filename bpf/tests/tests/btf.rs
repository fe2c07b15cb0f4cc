//! The compiled object's BTF describes both uptr-tagged structs in full: a
//! forward declaration would make the kernel ignore the uptr tag, and the
//! map update would then fail (or, worse, store raw pointers).

use libbpf_rs::btf::types::{MemberAttr, Struct};
use libbpf_rs::btf::{Btf, BtfKind, BtfType, HasSize};
use scx_hints::tld::abi;
use tld_kernel_tests::READER_OBJECT;

fn member_offset(attr: MemberAttr) -> u32 {
    match attr {
        MemberAttr::Normal { offset } => offset / 8,
        MemberAttr::BitField { .. } => panic!("no bitfields in the TLD ABI"),
    }
}

#[test]
fn uptr_structs_are_complete_and_tagged() {
    let btf = Btf::from_path(READER_OBJECT).expect("reading the object's BTF");
    let value: Struct = btf
        .type_by_name("tld_map_value")
        .expect("tld_map_value in BTF");
    assert_eq!(value.size(), std::mem::size_of::<abi::MapValue>());

    for (member, pointee, size) in [
        ("data", "tld_data_page", abi::PAGE_SIZE),
        ("meta", "tld_meta_page", abi::PAGE_SIZE),
    ] {
        let m = value
            .iter()
            .find(|m| m.name.is_some_and(|n| n == member))
            .unwrap_or_else(|| panic!("member {member}"));
        let ptr: BtfType = btf.type_by_id(m.ty).unwrap();
        assert_eq!(ptr.kind(), BtfKind::Ptr, "{member} is a pointer");
        let tag = ptr.next_type().unwrap();
        assert_eq!(tag.kind(), BtfKind::TypeTag, "{member} carries a type tag");
        assert_eq!(tag.name().unwrap(), "uptr");
        let target = tag.next_type().unwrap();
        assert_eq!(
            target.kind(),
            BtfKind::Struct,
            "{member} points to a complete struct, not a forward declaration"
        );
        assert_eq!(target.name().unwrap(), pointee);
        let s = Struct::try_from(target).unwrap();
        assert_eq!(s.size(), size, "{pointee} is one page");
    }

    // The meta page's fields sit where the Rust side writes them.
    let meta: Struct = btf.type_by_name("tld_meta_page").unwrap();
    let offsets: Vec<(String, u32)> = meta
        .iter()
        .map(|m| {
            (
                m.name.unwrap().to_string_lossy().into_owned(),
                member_offset(m.attr),
            )
        })
        .collect();
    let at = |n: &str| {
        offsets
            .iter()
            .find(|(m, _)| m == n)
            .map(|(_, o)| *o as usize)
    };
    assert_eq!(at("magic"), Some(0));
    assert_eq!(at("cnt"), Some(std::mem::offset_of!(abi::MetaPage, state)));
    assert_eq!(
        at("data_size"),
        Some(std::mem::offset_of!(abi::MetaPage, state) + 2)
    );
    assert_eq!(
        at("capacity"),
        Some(std::mem::offset_of!(abi::MetaPage, state) + 4)
    );
    assert_eq!(
        at("cookie"),
        Some(std::mem::offset_of!(abi::MetaPage, cookie))
    );
    assert_eq!(
        at("entries"),
        Some(std::mem::offset_of!(abi::MetaPage, entries))
    );
    let start = value
        .iter()
        .find(|m| m.name.is_some_and(|n| n == "start"))
        .unwrap();
    assert_eq!(
        member_offset(start.attr) as usize,
        std::mem::offset_of!(abi::MapValue, start)
    );
}
