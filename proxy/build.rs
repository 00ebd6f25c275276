//! How the static release build (the images' binary: `x86_64-unknown-linux-gnu` with
//! `crt-static`, linked by lld) links the proxy, to keep an idle proxy's resident text small. A
//! read fault on the executable maps the page-cache pages around it, 64 KiB or more at a time
//! ("fault-around"), so what is resident is every block the proxy ran anything in, not just what
//! it ran.
//!
//! - **Link order.** The functions `link-order.txt` names go first, in its order (lld's
//!   `--symbol-ordering-file`). They are the functions the proxy runs (`tandem-bench link-order`
//!   writes the file), so they take a few contiguous megabytes instead of being spread over all
//!   of the text. A name the build does not have is ignored: only the layout changes.
//! - **Packed relative relocations** (`-z pack-relative-relocs`, DT_RELR): the static PIE's
//!   relocation table, read in full at every start, shrinks from about 540 KB to 7 KB. Only when
//!   the glibc the build links is 2.36 or later, the first whose static start-up applies them.
//!
//! Other builds (dynamic, debug, other targets) are left alone. Both options need lld, the
//! default linker on this target since Rust 1.90. A build does without them when its rustc is
//! older, when it is given a linker of its own (`target.<triple>.linker`, `-Clinker`), when its
//! flags turn lld off (`-Clinker-features=-lld`, `-Clink-self-contained=-linker`, a
//! `-Clinker-flavor` without lld, `-fuse-ld=` anything but `lld`), and with
//! `TANDEM_LINK_ORDER=off`.

use std::env;
use std::path::Path;
use std::process::Command;

/// The target of the container images.
const IMAGE_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=TANDEM_LINK_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let static_build = env::var("CARGO_CFG_TARGET_FEATURE")
        .is_ok_and(|features| features.split(',').any(|f| f == "crt-static"));
    let wanted = env::var("TANDEM_LINK_ORDER").as_deref() != Ok("off");
    if target != IMAGE_TARGET || !release || !static_build || !wanted || !links_with_lld() {
        return;
    }
    // Cargo sets RUSTC_LINKER when a linker is configured; rustc 1.90 made lld the default.
    if env::var_os("RUSTC_LINKER").is_some() || !rustc_at_least(1, 90) {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let file = Path::new(&dir).join("link-order.txt");
    // -Xlinker passes its argument whole: -Wl, would split a path with a comma in it.
    linker_arg(&format!("--symbol-ordering-file={}", file.display()));
    linker_arg("--no-warn-symbol-ordering");
    if glibc_at_least(2, 36) {
        linker_arg("-z");
        linker_arg("pack-relative-relocs");
    }
}

fn linker_arg(arg: &str) {
    println!("cargo:rustc-link-arg-bin=tandem-proxy=-Xlinker");
    println!("cargo:rustc-link-arg-bin=tandem-proxy={arg}");
}

/// False when the flags of this build turn (rust-)lld off or choose another linker. Values may
/// be lists (`-Clinker-features=+cc,-lld`); a `-fuse-ld=` path to an lld also reads as another
/// linker, which only costs the layout.
fn links_with_lld() -> bool {
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    !flags.split('\x1f').any(|flag| {
        let other_ld = flag
            .split_once("-fuse-ld=")
            .is_some_and(|(_, ld)| ld != "lld");
        let other_flavor = flag
            .split_once("linker-flavor=")
            .is_some_and(|(_, flavor)| !flavor.contains("lld"));
        let own_linker = flag.starts_with("linker=") || flag.starts_with("-Clinker=");
        other_ld
            || other_flavor
            || own_linker
            || flag
                .split([',', '='])
                .any(|item| item == "-lld" || item == "-linker")
    })
}

/// Whether the rustc building this is `major.minor` or later (`rustc 1.95.0 (...)`).
fn rustc_at_least(major: u32, minor: u32) -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// Whether the glibc that `cc` (rustc's link driver when no linker is configured) links is
/// `major.minor` or later: its `features.h` defines `__GLIBC__` and `__GLIBC_MINOR__`. False
/// when they cannot be read.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("cc")
        .args([
            "-dM",
            "-E",
            "-include",
            "features.h",
            "-x",
            "c",
            "/dev/null",
        ])
        .output()
    else {
        return false;
    };
    let macros = String::from_utf8_lossy(&out.stdout);
    let define = |name: &str| {
        macros.lines().find_map(|l| {
            let rest = l.strip_prefix("#define ")?.strip_prefix(name)?;
            rest.strip_prefix(' ')?.trim().parse::<u32>().ok()
        })
    };
    match (define("__GLIBC__"), define("__GLIBC_MINOR__")) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
