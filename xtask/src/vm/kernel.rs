//! The guest kernel: a Debian kernel with sched_ext, downloaded with
//! `apt-get download` and unpacked under `target/xtask/guest/kernels/<abi>/`.
//! Nothing is ever installed into the host system.

use super::{guest_dir, run_to_stderr};
use crate::setup;
use crate::util::{self, loud, step};
use anyhow::{anyhow, bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default suite (its Debian 7.3 kernels have sched_ext).
pub const DEFAULT_SUITE: &str = "trixie-backports";

/// Name of the file that marks a complete kernel directory.
const READY: &str = "scx-hints-kernel";

/// Which kernel to boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelChoice {
    /// The newest kernel of a Debian suite (`trixie-backports` or `sid`).
    Suite(String),
    /// A Debian kernel ABI such as `7.3.4+deb13-amd64`.
    Abi(String),
    /// A vmlinuz file, or a directory holding `usr/lib/modules/<abi>/vmlinuz`.
    Path(PathBuf),
}

impl KernelChoice {
    /// Reads an override value: a path if it contains a `/` or exists,
    /// an ABI string otherwise.
    pub fn parse_override(s: &str) -> KernelChoice {
        if s.contains('/') || Path::new(s).exists() {
            KernelChoice::Path(PathBuf::from(s))
        } else {
            KernelChoice::Abi(s.to_string())
        }
    }
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// The release (`uname -r` in the guest).
    pub release: String,
    /// The version banner from the image header, e.g. `7.3.4+deb13-amd64
    /// (debian-kernel@lists.debian.org) #1 SMP PREEMPT_DYNAMIC Debian ...`.
    pub banner: String,
    /// Where it came from, for the progress line.
    pub origin: String,
}

/// Reads the version banner of an x86 bzImage: the setup header (magic
/// `HdrS` at 0x202) points to it with a 16-bit offset at 0x20e, relative to
/// 0x200.
pub fn bzimage_banner(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let off = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize;
    if off == 0 {
        return None;
    }
    let start = off + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().take(512).position(|&b| b == 0)?;
    let s = std::str::from_utf8(&rest[..end]).ok()?.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn read_banner(vmlinuz: &Path) -> Result<String> {
    use std::io::Read;
    let mut head = Vec::new();
    std::fs::File::open(vmlinuz)
        .with_context(|| format!("cannot open {}", vmlinuz.display()))?
        .take(0x10400)
        .read_to_end(&mut head)?;
    bzimage_banner(&head).ok_or_else(|| anyhow!("{} is not an x86 bzImage", vmlinuz.display()))
}

/// Splits a `Depends:` value into (package, exact version if `(= v)`).
fn split_depends(depends: &str) -> Vec<(String, Option<String>)> {
    depends
        .split([',', '|'])
        .filter_map(|dep| {
            let dep = dep.trim();
            let (name, rest) = dep.split_once(' ').unwrap_or((dep, ""));
            if name.is_empty() {
                return None;
            }
            let version = rest
                .trim()
                .strip_prefix("(=")
                .and_then(|v| v.strip_suffix(')'))
                .map(|v| v.trim().to_string());
            Some((name.to_string(), version))
        })
        .collect()
}

/// Parses `apt-cache show linux-image-amd64/<suite>` (first stanza) and
/// returns the ABI and the package version of the image it depends on:
/// `Depends: ..., linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), ...`.
pub fn parse_meta_depends(show: &str) -> Option<(String, String)> {
    let (_, depends) = parse_stanza(show);
    depends.into_iter().find_map(|(name, version)| {
        let abi = name.strip_prefix("linux-image-")?;
        abi.starts_with(|c: char| c.is_ascii_digit())
            .then(|| (abi.to_string(), version.unwrap_or_default()))
    })
}

/// The `Version:` and the `Depends:` of the first stanza of `apt-cache
/// show` output.
pub fn parse_stanza(show: &str) -> (Option<String>, Vec<(String, Option<String>)>) {
    let stanza = show.split("\n\n").next().unwrap_or("");
    let field = |name: &str| {
        stanza
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    (
        field("Version").map(str::to_string),
        field("Depends").map(split_depends).unwrap_or_default(),
    )
}

fn kernels_dir() -> PathBuf {
    guest_dir().join("kernels")
}

/// What the marker file of a cached kernel records.
struct Cached {
    dir: PathBuf,
    abi: String,
    version: String,
    suite: String,
}

fn read_cached(dir: &Path) -> Option<Cached> {
    let text = std::fs::read_to_string(dir.join(READY)).ok()?;
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .map(str::to_string)
    };
    let abi = get("abi")?;
    let cached = Cached {
        dir: dir.to_path_buf(),
        version: get("version").unwrap_or_default(),
        suite: get("suite").unwrap_or_default(),
        abi,
    };
    find_vmlinuz(dir, &cached.abi).map(|_| cached)
}

fn cached(abi: &str) -> Option<Cached> {
    read_cached(&kernels_dir().join(abi))
}

/// The most recently unpacked kernel of `suite`.
fn newest_cached(suite: &str) -> Option<Cached> {
    let mut all: Vec<(std::time::SystemTime, Cached)> = std::fs::read_dir(kernels_dir())
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let c = read_cached(&e.path())?;
            let t = std::fs::metadata(e.path().join(READY))
                .ok()?
                .modified()
                .ok()?;
            Some((t, c))
        })
        .filter(|(_, c)| c.suite == suite)
        .collect();
    all.sort_by_key(|(t, _)| *t);
    all.pop().map(|(_, c)| c)
}

/// The image inside an unpacked kernel directory.
fn find_vmlinuz(dir: &Path, abi: &str) -> Option<PathBuf> {
    [
        dir.join("usr/lib/modules").join(abi).join("vmlinuz"),
        dir.join("lib/modules").join(abi).join("vmlinuz"),
        dir.join("boot").join(format!("vmlinuz-{abi}")),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

fn apt_cache_show(what: &str) -> Result<String> {
    let out = util::output(Command::new("apt-cache").args(["show", "--no-all-versions", what]))?;
    if out.trim().is_empty() {
        bail!("`apt-cache show {what}` found nothing");
    }
    Ok(out)
}

fn apt_update() -> Result<()> {
    step("apt-get update (looking for the current guest kernel packages)");
    run_to_stderr(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "update"]),
    )
}

/// Where a downloaded kernel came from: a suite's meta package, or an ABI
/// asked for by name.
#[derive(Clone, Copy)]
enum Source<'a> {
    Suite(&'a str),
    Abi,
}

impl Source<'_> {
    fn label(&self) -> &str {
        match self {
            Source::Suite(s) => s,
            Source::Abi => "by ABI",
        }
    }
}

/// Downloads the packages of kernel `abi` (image package version
/// `version`, empty for apt's candidate) and unpacks them into the cache.
/// Returns the kernel directory.
fn download(abi: &str, version: &str, source: Source) -> Result<PathBuf> {
    let image = format!("linux-image-{abi}");
    let show = if version.is_empty() {
        apt_cache_show(&image)?
    } else {
        apt_cache_show(&format!("{image}={version}"))?
    };
    let (image_version, depends) = parse_stanza(&show);
    let version = image_version.unwrap_or_else(|| version.to_string());
    // Debian's 7.x kernels split the image into linux-binary, linux-base and
    // linux-modules; older ones ship everything in linux-image-<abi>.
    let mut pkgs: Vec<String> = depends
        .iter()
        .filter(|(name, _)| {
            ["binary", "base", "modules"]
                .iter()
                .any(|part| *name == format!("linux-{part}-{abi}"))
        })
        .map(|(name, v)| format!("{name}={}", v.as_deref().unwrap_or(&version)))
        .collect();
    if pkgs.is_empty() {
        pkgs.push(format!("{image}={version}"));
    }
    let kernels = kernels_dir();
    let debs = kernels.join(format!(".debs-{abi}"));
    let tmp = kernels.join(format!(".unpack-{abi}"));
    for d in [&debs, &tmp] {
        if d.exists() {
            std::fs::remove_dir_all(d)?;
        }
        std::fs::create_dir_all(d)?;
    }
    step(format!(
        "downloading guest kernel {abi} ({version}, {}): {} (about 120 MB)",
        source.label(),
        pkgs.join(" ")
    ));
    let mut get = Command::new("apt-get");
    get.current_dir(&debs).args(["-q", "download"]);
    if util::is_root() {
        // apt's sandbox user may not write into target/.
        get.args(["-o", "APT::Sandbox::User=root"]);
    }
    get.args(&pkgs);
    run_to_stderr(&mut get)?;
    step(format!("unpacking {abi} into {}", kernels.display()));
    for deb in std::fs::read_dir(&debs)? {
        let deb = deb?.path();
        if deb.extension().is_some_and(|e| e == "deb") {
            util::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
        }
    }
    // The debs carry no modules.dep; vng would otherwise run depmod on
    // every boot.
    let usr = if tmp.join("usr/lib/modules").is_dir() {
        tmp.join("usr")
    } else {
        tmp.clone()
    };
    if usr.join("lib/modules").join(abi).is_dir() {
        step(format!("depmod for {abi} (once, about 10 s)"));
        util::run(
            Command::new("depmod")
                .arg("-a")
                .arg("-b")
                .arg(&usr)
                .arg(abi),
        )?;
    }
    if find_vmlinuz(&tmp, abi).is_none() {
        bail!("the packages of {abi} hold no vmlinuz");
    }
    let suite = match source {
        Source::Suite(s) => s,
        Source::Abi => "",
    };
    std::fs::write(
        tmp.join(READY),
        format!("abi={abi}\nversion={version}\nsuite={suite}\n"),
    )?;
    let dest = kernels.join(abi);
    if dest.exists() {
        std::fs::remove_dir_all(&dest)?;
    }
    std::fs::rename(&tmp, &dest)?;
    std::fs::remove_dir_all(&debs)?;
    Ok(dest)
}

/// Downloads `abi`, and if that fails (stale apt lists: the mirror dropped
/// that version) updates apt's lists once and tries again, with the suite's
/// new ABI if the suite moved on. Returns the directory and the ABI.
fn download_retrying(abi: &str, version: &str, source: Source) -> Result<(PathBuf, String)> {
    match download(abi, version, source) {
        Ok(dir) => Ok((dir, abi.to_string())),
        Err(first) if util::is_root() => {
            loud(format!(
                "getting {abi} failed ({first:#}); updating apt lists and retrying"
            ));
            apt_update()?;
            let (abi, version) = match source {
                Source::Suite(suite) => resolve_suite(suite)?,
                Source::Abi => (abi.to_string(), String::new()),
            };
            if let Some(c) = cached(&abi) {
                return Ok((c.dir, abi));
            }
            Ok((download(&abi, &version, source)?, abi))
        }
        Err(e) => Err(e),
    }
}

/// The ABI and image version that `linux-image-amd64/<suite>` points at.
fn resolve_suite(suite: &str) -> Result<(String, String)> {
    let show = apt_cache_show(&format!("linux-image-amd64/{suite}"))?;
    parse_meta_depends(&show)
        .ok_or_else(|| anyhow!("no linux-image-<abi> in the Depends of linux-image-amd64/{suite}"))
}

/// When apt's lists of `suite` last changed (apt-get update replaces them).
fn lists_stamp(suite: &str) -> Option<u128> {
    let pattern = format!("_dists_{suite}_");
    std::fs::read_dir("/var/lib/apt/lists")
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(&pattern))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .filter_map(|t| Some(t.duration_since(std::time::UNIX_EPOCH).ok()?.as_nanos()))
        .max()
}

/// [`resolve_suite`], remembered until apt's lists of the suite change
/// (`apt-cache show` takes seconds with sid's lists).
fn resolve_suite_cached(suite: &str) -> Result<(String, String)> {
    let memo = kernels_dir().join(format!(".resolved-{suite}"));
    let stamp = lists_stamp(suite);
    if let (Some(stamp), Ok(text)) = (stamp, std::fs::read_to_string(&memo)) {
        let mut words = text.split_whitespace();
        if let (Some(s), Some(abi), version) = (words.next(), words.next(), words.next()) {
            if s == stamp.to_string() {
                return Ok((abi.to_string(), version.unwrap_or_default().to_string()));
            }
        }
    }
    let (abi, version) = resolve_suite(suite)?;
    if let Some(stamp) = stamp {
        let _ = std::fs::write(&memo, format!("{stamp} {abi} {version}\n"));
    }
    Ok((abi, version))
}

fn finish(dir: &Path, abi: &str, origin: String) -> Result<Kernel> {
    let vmlinuz = find_vmlinuz(dir, abi)
        .ok_or_else(|| anyhow!("no vmlinuz for {abi} under {}", dir.display()))?;
    let banner = read_banner(&vmlinuz)?;
    Ok(Kernel {
        vmlinuz,
        release: abi.to_string(),
        banner,
        origin,
    })
}

fn from_cache(c: &Cached, how: &str) -> Result<Kernel> {
    let from = if c.suite.is_empty() {
        "by ABI"
    } else {
        &c.suite
    };
    let origin = format!("{from} {}, {how}", c.version);
    finish(&c.dir, &c.abi, origin)
}

/// Makes the chosen kernel available, downloading it if needed.
pub fn ensure(choice: &KernelChoice) -> Result<Kernel> {
    std::fs::create_dir_all(kernels_dir())?;
    match choice {
        KernelChoice::Path(p) => from_path(p),
        KernelChoice::Abi(abi) => {
            if let Some(c) = cached(abi) {
                return from_cache(&c, "cached");
            }
            if util::is_root() {
                setup::ensure_apt_lists()?;
            }
            let (dir, abi) = download_retrying(abi, "", Source::Abi).with_context(|| {
                format!(
                    "cannot get guest kernel {abi} (a Debian kernel ABI from {:?} is expected)",
                    setup::KERNEL_SUITES
                )
            })?;
            finish(&dir, &abi, "downloaded".into())
        }
        KernelChoice::Suite(suite) => from_suite(suite),
    }
}

fn from_suite(suite: &str) -> Result<Kernel> {
    if !setup::KERNEL_SUITES.contains(&suite) {
        bail!(
            "unknown guest kernel suite `{suite}`: use one of {:?}",
            setup::KERNEL_SUITES
        );
    }
    let resolved = if util::is_root() {
        setup::ensure_apt_lists().and_then(|()| resolve_suite_cached(suite))
    } else {
        resolve_suite_cached(suite)
    };
    let (abi, version) = match resolved {
        Ok(r) => r,
        Err(e) => {
            let c = newest_cached(suite).ok_or_else(|| {
                e.context(format!(
                    "cannot find the sched_ext kernel of {suite} with apt, and none is cached in {}",
                    kernels_dir().display()
                ))
            })?;
            loud(format!(
                "apt cannot tell the current {suite} kernel; using the cached {}",
                c.abi
            ));
            return from_cache(&c, "cached, apt unavailable");
        }
    };
    if let Some(c) = cached(&abi) {
        return from_cache(&c, "cached");
    }
    match download_retrying(&abi, &version, Source::Suite(suite)) {
        Ok((dir, abi)) => finish(&dir, &abi, format!("{suite} {version}, downloaded")),
        Err(e) => match newest_cached(suite) {
            Some(c) => {
                loud(format!(
                    "cannot download {abi} ({e:#}); using the cached {}",
                    c.abi
                ));
                from_cache(&c, "cached, download failed")
            }
            None => Err(e.context(format!(
                "cannot get the sched_ext guest kernel {abi} from {suite}"
            ))),
        },
    }
}

/// A kernel given by path: a vmlinuz file, or a directory with one of
/// `usr/lib/modules/<abi>/vmlinuz`, `lib/modules/<abi>/vmlinuz`,
/// `<abi>/vmlinuz` below it, or a `vmlinuz` in it.
fn from_path(p: &Path) -> Result<Kernel> {
    let p = std::path::absolute(p)?;
    let vmlinuz = if p.is_file() {
        p.clone()
    } else if p.is_dir() {
        let mut found: Vec<PathBuf> = ["usr/lib/modules", "lib/modules", "."]
            .iter()
            .filter_map(|sub| std::fs::read_dir(p.join(sub)).ok())
            .flat_map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path().join("vmlinuz")))
            .filter(|v| v.is_file())
            .collect();
        if p.join("vmlinuz").is_file() {
            found.push(p.join("vmlinuz"));
        }
        match found.len() {
            0 => bail!("no vmlinuz found under {}", p.display()),
            1 => found.pop().expect("one"),
            _ => bail!(
                "several kernels under {}: name one vmlinuz ({})",
                p.display(),
                found
                    .iter()
                    .map(|f| f.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    } else {
        bail!("guest kernel {} does not exist", p.display());
    };
    let banner = read_banner(&vmlinuz)?;
    let release = banner
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    Ok(Kernel {
        vmlinuz,
        release,
        banner,
        origin: format!("given as {}", p.display()),
    })
}

/// Warns if the kernel's config (shipped next to a Debian vmlinuz) says it
/// has no sched_ext.
pub fn check_config(k: &Kernel) {
    let Some(dir) = k.vmlinuz.parent() else {
        return;
    };
    let config = [
        dir.join("config"),
        dir.join(format!("config-{}", k.release)),
    ]
    .into_iter()
    .find_map(|p| std::fs::read_to_string(p).ok());
    if let Some(config) = config {
        if !config.lines().any(|l| l == "CONFIG_SCHED_CLASS_EXT=y") {
            loud(format!(
                "guest kernel {} is built without CONFIG_SCHED_CLASS_EXT: sched_ext tests will fail",
                k.release
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "\
Package: linux-image-amd64
Source: linux-signed-amd64 (7.3.4+1~bpo13+1)
Version: 7.3.4-1~bpo13+1
Installed-Size: 13
Depends: linux-base-amd64 (= 7.3.4-1~bpo13+1), linux-image-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), linux-modules-amd64 (= 7.3.4-1~bpo13+1)
Description-en: Linux for 64-bit PCs (meta-package)

Package: linux-image-amd64
Version: 6.12.57-1
Depends: linux-image-6.12.57+deb13-amd64 (= 6.12.57-1)
";

    #[test]
    fn meta_depends_gives_abi_and_version() {
        assert_eq!(
            parse_meta_depends(META),
            Some(("7.3.4+deb13-amd64".into(), "7.3.4-1~bpo13+1".into()))
        );
        assert_eq!(
            parse_meta_depends(
                "Package: linux-image-amd64\nDepends: linux-base-amd64 (= 7.2.13-1), \
                 linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)\n"
            ),
            Some(("7.2.13+deb14-amd64".into(), "7.2.13-1".into()))
        );
        // Alternatives and a missing version constraint.
        assert_eq!(
            parse_meta_depends("Depends: foo | linux-image-7.1.0-3-amd64\n"),
            Some(("7.1.0-3-amd64".into(), String::new()))
        );
        assert_eq!(
            parse_meta_depends("Depends: linux-image-amd64-signed\n"),
            None
        );
        assert_eq!(parse_meta_depends("Package: x\n"), None);
    }

    #[test]
    fn stanza_lists_depends() {
        let (v, deps) = parse_stanza(
            "Package: linux-image-7.3.4+deb13-amd64\nVersion: 7.3.4-1~bpo13+1\n\
             Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, \
             linux-base-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1), \
             linux-binary-7.3.4+deb13-amd64 (= 7.3.4-1~bpo13+1)\n\nVersion: 1\n",
        );
        assert_eq!(v.as_deref(), Some("7.3.4-1~bpo13+1"));
        assert!(deps.contains(&(
            "linux-binary-7.3.4+deb13-amd64".to_string(),
            Some("7.3.4-1~bpo13+1".to_string())
        )));
        assert!(deps.contains(&("initramfs-tools".to_string(), None)));
        assert!(!deps.iter().any(|(d, _)| d.starts_with('(')));
    }

    #[test]
    fn banner_from_setup_header() {
        let mut img = vec![0u8; 0x1000];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let banner = b"7.3.4+deb13-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x500..0x500 + banner.len()].copy_from_slice(banner);
        assert_eq!(
            bzimage_banner(&img).as_deref(),
            Some("7.3.4+deb13-amd64 (debian-kernel@lists.debian.org) #1 SMP")
        );
        img[0x202] = b'X';
        assert_eq!(bzimage_banner(&img), None);
        assert_eq!(bzimage_banner(&[0u8; 16]), None);
    }

    #[test]
    fn override_kinds() {
        assert_eq!(
            KernelChoice::parse_override("7.2.13+deb14-amd64"),
            KernelChoice::Abi("7.2.13+deb14-amd64".into())
        );
        assert_eq!(
            KernelChoice::parse_override("./k/vmlinuz"),
            KernelChoice::Path("./k/vmlinuz".into())
        );
    }
}
