//! How the release build for the images' target links the proxy, to keep an idle proxy's
//! resident text small. A read fault on the executable maps the page-cache pages around it,
//! 64 KiB or more at a time ("fault-around"), so what is resident is every block the proxy ran
//! anything in, not just what it ran.
//!
//! - **Link order.** The functions `link-order.txt` names go first, in its order (lld's
//!   `--symbol-ordering-file`). They are the functions the proxy runs (`tandem-bench link-order`
//!   writes the file), so they take a few contiguous megabytes instead of being spread over all
//!   of the text. A name the build does not have is ignored: only the layout changes.
//! - **Packed relative relocations** (`-z pack-relative-relocs`, DT_RELR): the static PIE's
//!   relocation table, read in full at every start, shrinks from about 540 KB to 7 KB. Only when
//!   the glibc linked in is 2.36 or later, the first whose start-up code applies them.
//!
//! `TANDEM_LINK_ORDER=off` leaves both out, for a linker other than lld (the default one on this
//! target since Rust 1.90) or mold.

use std::env;
use std::path::Path;
use std::process::Command;

/// The target of the container images, whose default linker is lld.
const ORDERED_TARGET: &str = "x86_64-unknown-linux-gnu";

fn main() {
    println!("cargo:rerun-if-changed=link-order.txt");
    println!("cargo:rerun-if-env-changed=TANDEM_LINK_ORDER");
    let target = env::var("TARGET").unwrap_or_default();
    let release = env::var("PROFILE").is_ok_and(|p| p == "release");
    let wanted = env::var("TANDEM_LINK_ORDER").map_or(true, |v| v != "off");
    if target != ORDERED_TARGET || !release || !wanted {
        return;
    }
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let file = Path::new(&dir).join("link-order.txt");
    link_arg(&format!("--symbol-ordering-file={}", file.display()));
    link_arg("--no-warn-symbol-ordering");
    if glibc_at_least(2, 36) {
        link_arg("-z,pack-relative-relocs");
    }
}

fn link_arg(arg: &str) {
    println!("cargo:rustc-link-arg-bin=tandem-proxy=-Wl,{arg}");
}

/// Whether this host's glibc (the one a native `-gnu` build links) is `major.minor` or later,
/// from `getconf GNU_LIBC_VERSION` ("glibc 2.36"); false when that cannot be read.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().strip_prefix("glibc ").unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}
