//! The C library: `cargo xtask capi --prefix DIR` installs libscx_hints
//! (shared and static), its header and its pkg-config file; the test step
//! installs it into a scratch prefix and builds and runs the C, C++ and
//! Python examples against that prefix, as a user would.

use crate::util::{self, step};
use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(clap::Args)]
pub struct CapiArgs {
    /// Where to install: PREFIX/lib, PREFIX/include, PREFIX/lib/pkgconfig.
    #[arg(long, value_name = "DIR", default_value = "/usr/local")]
    pub prefix: PathBuf,

    /// Build without optimisations (what the tests use: faster to build).
    #[arg(long)]
    pub debug: bool,

    /// Do not install: build and run the C, C++ and Python examples against
    /// a scratch prefix, as `cargo xtask test` does.
    #[arg(long, conflicts_with = "prefix")]
    pub examples: bool,
}

const SONAME: &str = "libscx_hints.so.0";

fn version() -> Result<String> {
    let toml = std::fs::read_to_string(util::root().join("capi/Cargo.toml"))?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .context("no version in capi/Cargo.toml")
}

/// Builds the library and lays it out under `prefix`.
pub fn install(prefix: &Path, debug: bool) -> Result<()> {
    step(format!(
        "building and installing libscx_hints into {}",
        prefix.display()
    ));
    let mut build = util::cargo();
    build.args(["build", "--quiet", "-p", "scx_hints_capi"]);
    if !debug {
        build.arg("--release");
    }
    util::run(&mut build)?;
    let built = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
        .join(if debug { "debug" } else { "release" });
    let version = version()?;
    let (lib, include, pc) = (
        prefix.join("lib"),
        prefix.join("include"),
        prefix.join("lib/pkgconfig"),
    );
    for d in [&lib, &include, &pc] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let real = format!("libscx_hints.so.{version}");
    replace_file(&built.join("libscx_hints.so"), &lib.join(&real))?;
    for link in [SONAME, "libscx_hints.so"] {
        let path = lib.join(link);
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink(&real, &path)?;
    }
    replace_file(&built.join("libscx_hints.a"), &lib.join("libscx_hints.a"))?;
    replace_file(
        &util::root().join("capi/include/scx_hints.h"),
        &include.join("scx_hints.h"),
    )?;
    let template = std::fs::read_to_string(util::root().join("capi/scx_hints.pc.in"))?;
    let prefix_str = prefix
        .to_str()
        .context("the prefix must be valid UTF-8 for pkg-config")?;
    std::fs::write(
        pc.join("scx_hints.pc"),
        template
            .replace("@PREFIX@", prefix_str)
            .replace("@VERSION@", &version),
    )?;
    Ok(())
}

/// Copies `from` next to `to` and renames it over `to`, as install(1) does:
/// a program running with the old library keeps its mapping intact instead
/// of seeing the file rewritten under it (and crashing).
fn replace_file(from: &Path, to: &Path) -> Result<()> {
    let mut tmp = to.as_os_str().to_owned();
    tmp.push(".new");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(from, &tmp)
        .with_context(|| format!("copying {} to {}", from.display(), tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))
}

pub fn cmd(args: CapiArgs) -> Result<i32> {
    if args.examples {
        let bin = examples()?;
        println!("examples built in {} and passed", bin.display());
        return Ok(0);
    }
    install(&args.prefix, args.debug)?;
    println!(
        "installed; compile with: cc prog.c $(pkg-config --cflags --libs scx_hints){}",
        if args.prefix == Path::new("/usr/local") {
            String::new()
        } else {
            format!(" (PKG_CONFIG_PATH={}/lib/pkgconfig)", args.prefix.display())
        }
    );
    Ok(0)
}

/// `pkg-config ARGS scx_hints` against the scratch prefix, split into words.
fn pkg_config(prefix: &Path, args: &[&str]) -> Result<Vec<String>> {
    let out = util::output(
        Command::new("pkg-config")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
            .args(args)
            .arg("scx_hints"),
    )?;
    Ok(out.split_whitespace().map(str::to_string).collect())
}

/// Runs a built example with no map pinned; it must pass its own checks and
/// report the state it was told to expect.
fn run_example(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .env("SCX_HINTS_TLD_MAP", "/nonexistent/scx_hints/tld")
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {}", util::show(cmd)))?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    eprint!("{}", String::from_utf8_lossy(&out.stderr));
    ensure!(
        out.status.success(),
        "{} failed: {}",
        util::show(cmd),
        out.status
    );
    ensure!(
        String::from_utf8_lossy(&out.stdout).contains("all checks passed"),
        "{} did not report its checks",
        util::show(cmd)
    );
    Ok(())
}

/// The symbols the shared library exports, compared with the header.
fn exports_match_header(prefix: &Path) -> Result<()> {
    let nm = util::output(
        Command::new("nm")
            .args(["-D", "--defined-only"])
            .arg(prefix.join("lib").join(SONAME)),
    )?;
    let mut exported: Vec<&str> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter(|s| s.starts_with("scx_hints_"))
        .collect();
    exported.sort();
    let header = std::fs::read_to_string(prefix.join("include/scx_hints.h"))?;
    let declared = declared_functions(&header);
    ensure!(
        exported == declared,
        "libscx_hints exports {exported:?} but scx_hints.h declares {declared:?}"
    );
    Ok(())
}

/// The `scx_hints_*` functions a header declares (names followed by `(`
/// outside `#define` lines), sorted.
fn declared_functions(header: &str) -> Vec<String> {
    let mut declared: Vec<String> = header
        .lines()
        .filter(|l| !l.trim_start().starts_with("#define"))
        .flat_map(|l| l.match_indices("scx_hints_").map(move |(i, _)| &l[i..]))
        .filter_map(|rest| {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            rest[end..]
                .starts_with('(')
                .then(|| rest[..end].to_string())
        })
        .collect();
    declared.sort();
    declared.dedup();
    declared
}

/// Installs into a scratch prefix, then builds and runs every example.
/// Returns the directory holding the built examples.
pub fn examples() -> Result<PathBuf> {
    for tool in ["cc", "c++", "pkg-config", "nm", "python3"] {
        if !util::have(tool) {
            bail!("{tool} is needed to test the C library (cargo xtask setup installs it)");
        }
    }
    let prefix = util::root().join("target/xtask-capi");
    let _ = std::fs::remove_dir_all(&prefix);
    install(&prefix, true)?;
    exports_match_header(&prefix)?;
    let examples = util::root().join("capi/examples");
    let bin = prefix.join("bin");
    std::fs::create_dir_all(&bin)?;
    let cflags = pkg_config(&prefix, &["--cflags"])?;
    let libs = pkg_config(&prefix, &["--libs"])?;
    let static_libs = pkg_config(&prefix, &["--libs", "--static"])?;

    step("C example (shared library, pkg-config)");
    util::run(
        Command::new("cc")
            .args(["-std=c11", "-Wall", "-Wextra", "-Werror"])
            .args(&cflags)
            .arg(examples.join("hints_example.c"))
            .arg("-o")
            .arg(bin.join("hints_example"))
            .args(&libs)
            .arg("-pthread"),
    )?;
    run_example(
        Command::new(bin.join("hints_example"))
            .arg("no-map")
            .env("LD_LIBRARY_PATH", prefix.join("lib")),
    )?;

    step("C++ example (static library)");
    util::run(
        Command::new("c++")
            .args(["-std=c++17", "-Wall", "-Wextra", "-Werror"])
            .args(&cflags)
            .arg(examples.join("hints_example.cpp"))
            .arg("-o")
            .arg(bin.join("hints_example_cpp"))
            .arg("-Wl,-Bstatic")
            .args(
                static_libs
                    .iter()
                    .filter(|a| *a == "-lscx_hints" || a.starts_with("-L")),
            )
            .arg("-Wl,-Bdynamic")
            .args(
                static_libs
                    .iter()
                    .filter(|a| a.starts_with("-l") && *a != "-lscx_hints"),
            )
            .arg("-pthread"),
    )?;
    let ldd = util::output(Command::new("ldd").arg(bin.join("hints_example_cpp")))?;
    ensure!(
        !ldd.contains("libscx_hints"),
        "the C++ example should be linked statically:\n{ldd}"
    );
    run_example(&mut Command::new(bin.join("hints_example_cpp")))?;

    step("Python example (ctypes)");
    run_example(
        Command::new("python3")
            .arg(examples.join("hints_example.py"))
            .arg(prefix.join("lib").join(SONAME)),
    )?;
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::declared_functions;

    #[test]
    fn finds_the_functions_the_header_declares() {
        let header = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../capi/include/scx_hints.h"),
        )
        .unwrap();
        let found = declared_functions(&header);
        assert!(found.contains(&"scx_hints_set_latency_class".to_string()));
        assert!(found.contains(&"scx_hints_key_ptr".to_string()));
        assert!(!found
            .iter()
            .any(|f| f == "scx_hints_saved" || f == "scx_hints_key"));
        assert_eq!(found.len(), 12, "{found:?}");
    }
}
