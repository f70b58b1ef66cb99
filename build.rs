//! Link settings of the `edgegw` binary.
//!
//! On glibc Linux the binary's relative relocations are packed (`-z
//! pack-relative-relocs`, DT_RELR, glibc >= 2.36: Debian 12, Raspberry Pi OS bookworm).
//! A position-independent executable has one such relocation for every pointer in its
//! read-only data (vtables, string tables, ...): 1.2 MB of `.rela.dyn` at 24 bytes each
//! in the x86_64 `dist` binary, 12 kB packed, the same code (docs/PERFORMANCE.md,
//! "Binary size"). The binary then names `GLIBC_ABI_DT_RELR` among its symbol versions,
//! so an older glibc refuses to load it with a message that says so, and
//! `scripts/package-deb` makes the package depend on libc6 >= 2.36.
//!
//! Debian 12's aarch64 and armhf cross linkers (GNU ld 2.40) do not pack them yet: they
//! warn "-z pack-relative-relocs ignored" and link as before, and the package's
//! Depends stays what the binary's other symbol versions say.
//!
//! `EDGEGW_PACK_RELOCS=0` leaves them unpacked, for a build against an older glibc
//! (cross/README.md, "glibc of older Pi OS releases").

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EDGEGW_PACK_RELOCS");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let wanted = std::env::var("EDGEGW_PACK_RELOCS").map_or(true, |v| v != "0");
    if os == "linux" && env == "gnu" && wanted {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
