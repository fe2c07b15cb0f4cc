//! The hint vocabulary: the Rust mirror of `bpf/hints.h` (the one
//! definition; a unit test checks every value against it).

/// TLD key of the latency class (an `i32`).
pub const KEY_LATENCY_CLASS: &str = "scx_hints.latency_class";
/// TLD key of the priority (an `i32`).
pub const KEY_PRIORITY: &str = "scx_hints.priority";

/// Latency class `normal` (the default: a zeroed block reads as it).
pub const CLASS_NORMAL: i32 = 0;
/// Latency class `critical`.
pub const CLASS_CRITICAL: i32 = 1;
/// Latency class `interactive`.
pub const CLASS_INTERACTIVE: i32 = 2;
/// Latency class `batch`.
pub const CLASS_BATCH: i32 = 3;
/// Latency class `background`.
pub const CLASS_BACKGROUND: i32 = 4;
/// Number of latency classes.
pub const NR_CLASSES: i32 = 5;

/// Lowest priority value (most CPU).
pub const PRIO_MIN: i32 = -20;
/// Highest priority value (least CPU).
pub const PRIO_MAX: i32 = 19;
/// Priority of a thread that sets none.
pub const PRIO_DEFAULT: i32 = 0;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_hints_h() {
        let defs = crate::cdefs::parse(include_str!("../../bpf/hints.h"));
        let num = |n: &str| defs.number(n).unwrap_or_else(|| panic!("{n} missing")) as i32;
        assert_eq!(
            defs.string("SCX_HINT_KEY_LATENCY_CLASS").as_deref(),
            Some(KEY_LATENCY_CLASS)
        );
        assert_eq!(
            defs.string("SCX_HINT_KEY_PRIORITY").as_deref(),
            Some(KEY_PRIORITY)
        );
        assert_eq!(num("SCX_HINT_CLASS_NORMAL"), CLASS_NORMAL);
        assert_eq!(num("SCX_HINT_CLASS_CRITICAL"), CLASS_CRITICAL);
        assert_eq!(num("SCX_HINT_CLASS_INTERACTIVE"), CLASS_INTERACTIVE);
        assert_eq!(num("SCX_HINT_CLASS_BATCH"), CLASS_BATCH);
        assert_eq!(num("SCX_HINT_CLASS_BACKGROUND"), CLASS_BACKGROUND);
        assert_eq!(num("SCX_HINT_NR_CLASSES"), NR_CLASSES);
        assert_eq!(num("SCX_HINT_PRIO_MIN"), PRIO_MIN);
        assert_eq!(num("SCX_HINT_PRIO_MAX"), PRIO_MAX);
        assert_eq!(num("SCX_HINT_PRIO_DEFAULT"), PRIO_DEFAULT);
    }
}
