// SPDX-License-Identifier: GPL-2.0-only OR MIT
//! The per-task view map (bpf/task_view.bpf.h): pinned as `tasks` beside the
//! TLD map, root:root 0644, so that `scx-hint show` can read by pidfd what
//! the scheduler applies to each thread, and nobody but root can write it.
//!
//! Unlike the TLD map it is not reused across restarts: it holds only what
//! this instance computed (every task is recomputed when it attaches). The
//! new map is pinned under a temporary name and renamed over the old pin,
//! so readers always find a view; the pin is removed at exit, so a stale
//! view is never read as a live one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use log::warn;

pub struct ViewPin {
    path: PathBuf,
}

/// Pins `map` as `<dir>/tasks`, replacing an older pin atomically.
pub fn pin(map: &libbpf_rs::MapMut<'_>, dir: &Path) -> Result<ViewPin> {
    let path = dir.join(scx_hints::view::PIN_NAME);
    // bpffs refuses names with a dot.
    let tmp = dir.join(format!("{}_new", scx_hints::view::PIN_NAME));
    let _ = fs::remove_file(&tmp);
    libbpf_rs::MapHandle::try_from(map)
        .and_then(|mut handle| handle.pin(&tmp))
        .with_context(|| format!("pinning the task view at {}", tmp.display()))?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("chmod {}", tmp.display()))?;
    fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(ViewPin { path })
}

impl Drop for ViewPin {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            warn!("removing the task view pin {}: {e}", self.path.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::{offset_of, size_of};

    use scx_hints::view::{RawView, Source};

    use crate::bpf_intf::*;

    /// scx_hints reads the view with its own copy of the layout: any field
    /// added or moved in intf.h without it fails here.
    #[test]
    fn the_reader_s_layout_is_the_bpf_one() {
        assert_eq!(size_of::<RawView>(), size_of::<hinted_task_view>());
        assert_eq!(offset_of!(RawView, cls), offset_of!(hinted_task_view, cls));
        assert_eq!(
            offset_of!(RawView, prio),
            offset_of!(hinted_task_view, prio)
        );
        assert_eq!(
            offset_of!(RawView, weight),
            offset_of!(hinted_task_view, weight)
        );
        assert_eq!(
            offset_of!(RawView, rule_id),
            offset_of!(hinted_task_view, rule_id)
        );
        assert_eq!(
            offset_of!(RawView, class_source),
            offset_of!(hinted_task_view, class_source)
        );
        assert_eq!(
            offset_of!(RawView, prio_source),
            offset_of!(hinted_task_view, prio_source)
        );
        assert_eq!(
            offset_of!(RawView, registered),
            offset_of!(hinted_task_view, registered)
        );
        assert_eq!(
            offset_of!(RawView, clamped),
            offset_of!(hinted_task_view, clamped)
        );
        assert_eq!(
            offset_of!(RawView, own_class),
            offset_of!(hinted_task_view, own_class)
        );
    }

    #[test]
    fn the_reader_s_sources_are_the_bpf_ones() {
        for (raw, want) in [
            (hinted_source_HINTED_SRC_DEFAULT, Source::Default),
            (hinted_source_HINTED_SRC_OWN, Source::Own),
            (hinted_source_HINTED_SRC_RULE, Source::Rule),
            (hinted_source_HINTED_SRC_INHERITED, Source::Inherited),
            (hinted_source_HINTED_SRC_POLICY, Source::Policy),
        ] {
            assert_eq!(Source::from_raw(raw as u8), want);
        }
    }
}
