//! The Debian package: `scripts/package-deb` run on the debug binary this test run
//! already built (no second, release build), then its file list and modes, control
//! fields, maintainer scripts, man pages and copyright file, and lintian reporting no
//! errors on it.
//!
//! Needs dpkg-deb (Debian); without it every test here says SKIPPED and passes.
//! lintian is optional in the same way unless EDGEGW_REQUIRE_LINTIAN=1 (scripts/test
//! sets it when it has just installed lintian and runs this file again).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The .deb and, next to it, its contents (`root/`) and control files
/// (`root/DEBIAN/`), made once for all the tests here.
struct Package {
    deb: PathBuf,
    root: PathBuf,
}

fn package() -> Option<&'static Package> {
    static PACKAGE: OnceLock<Option<Package>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| {
            if !have("dpkg-deb") {
                eprintln!("package_deb: SKIPPED: dpkg-deb is not installed (not Debian?)");
                return None;
            }
            let arch = match std::env::consts::ARCH {
                "aarch64" => "aarch64",
                "arm" => "armv7",
                _ => "x86_64",
            };
            let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("package_deb");
            let _ = std::fs::remove_dir_all(&out);
            let started = std::time::Instant::now();
            run(Command::new(root().join("scripts/package-deb"))
                .arg(arch)
                .arg("--bin")
                .arg(env!("CARGO_BIN_EXE_edgegw"))
                .arg("--out")
                .arg(&out)
                .arg("--fast"));
            eprintln!("package_deb: built in {:.1?}", started.elapsed());
            let deb = std::fs::read_dir(&out)
                .expect("the output directory")
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| p.extension().is_some_and(|x| x == "deb"))
                .expect("scripts/package-deb wrote no .deb");
            let root = out.join("root");
            run(Command::new("dpkg-deb")
                .arg("--extract")
                .arg(&deb)
                .arg(&root));
            run(Command::new("dpkg-deb")
                .arg("--control")
                .arg(&deb)
                .arg(root.join("DEBIAN")));
            Some(Package { deb, root })
        })
        .as_ref()
}

/// (path, mode) of every entry, paths as `./usr/bin/edgegw`.
fn entries(deb: &Path) -> Vec<(String, String)> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            (fields[5].to_string(), fields[0].to_string())
        })
        .collect()
}

fn gunzip(path: &Path) -> String {
    String::from_utf8_lossy(&run(Command::new("gzip").arg("-dc").arg(path)).stdout).into_owned()
}

#[test]
fn ships_binary_unit_config_docs_man_pages_and_completions() {
    let Some(p) = package() else { return };
    let entries = entries(&p.deb);
    let paths: BTreeSet<&str> = entries.iter().map(|(p, _)| p.as_str()).collect();
    let mut expected: Vec<String> = [
        "./usr/bin/edgegw",
        "./lib/systemd/system/edgegw.service",
        "./etc/edgegw/edgegw.toml",
        "./etc/edgegw/credentials/",
        "./usr/share/doc/edgegw/copyright",
        "./usr/share/doc/edgegw/changelog.Debian.gz",
        "./usr/share/doc/edgegw/THIRD-PARTY-NOTICES.md.gz",
        "./usr/share/doc/edgegw/README.md",
        "./usr/share/man/man1/edgegw.1.gz",
        "./usr/share/man/man1/edgegw-run.1.gz",
        "./usr/share/man/man1/edgegw-check.1.gz",
        "./usr/share/bash-completion/completions/edgegw",
        "./usr/share/zsh/vendor-completions/_edgegw",
        "./usr/share/fish/vendor_completions.d/edgegw.fish",
    ]
    .map(String::from)
    .into();
    for profile in std::fs::read_dir(root().join("hardware-profiles")).expect("profiles") {
        let name = profile.expect("entry").file_name();
        expected.push(format!(
            "./etc/edgegw/hardware-profiles/{}",
            name.to_string_lossy()
        ));
    }
    let missing: Vec<&String> = expected
        .iter()
        .filter(|e| !paths.contains(e.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the package: {missing:?}\nit has: {paths:#?}"
    );
    // The hidden `generate` subcommand is in no man page or completion.
    assert!(!paths.iter().any(|p| p.contains("generate")), "{paths:#?}");
    for f in [
        "usr/share/bash-completion/completions/edgegw",
        "usr/share/zsh/vendor-completions/_edgegw",
        "usr/share/fish/vendor_completions.d/edgegw.fish",
    ] {
        let text = read(&p.root.join(f));
        assert!(text.contains("outbox"), "{f}");
        assert!(!text.contains("edgegw__generate") && !text.contains("Man pages"));
    }
    // Modes Debian expects: directories 0755, files 0644, the binary 0755. The
    // stricter modes of /etc/edgegw and of its credentials come from postinst's
    // dpkg-statoverride.
    for (path, mode) in &entries {
        let want = if path.ends_with('/') {
            "drwxr-xr-x"
        } else if path == "./usr/bin/edgegw" {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(mode, want, "{path}");
    }
    let man = gunzip(&p.root.join("usr/share/man/man1/edgegw.1.gz"));
    assert!(man.contains(".TH edgegw 1"), "{man}");
    assert!(man.contains("edgegw\\-run(1)"), "{man}");
}

#[test]
fn control_fields_conffiles_and_copyright() {
    let Some(p) = package() else { return };
    let control = read(&p.root.join("DEBIAN/control"));
    let field = |name: &str| {
        control
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")))
            .unwrap_or_else(|| panic!("no {name} in\n{control}"))
            .to_string()
    };
    // The version is the changelog's, and its upstream part is Cargo.toml's.
    let changelog = read(&root().join("packaging/debian/changelog"));
    let version = field("Version");
    assert!(
        changelog.starts_with(&format!("edgegw ({version})")),
        "{version}"
    );
    assert!(
        version.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert_eq!(
        gunzip(&p.root.join("usr/share/doc/edgegw/changelog.Debian.gz")),
        changelog
    );
    let depends = field("Depends");
    assert!(
        depends.starts_with("libc6 (>= 2.") && depends.contains("adduser"),
        "{depends}"
    );
    // The binary's relative relocations are packed (build.rs): its loader is glibc
    // 2.36's, and the package says so.
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        let glibc: Vec<u32> = depends["libc6 (>= ".len()..]
            .split(')')
            .next()
            .unwrap()
            .split('.')
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(glibc >= vec![2, 36], "{depends}");
    }
    assert!(!field("Maintainer").contains("localhost"));
    // Every file under /etc is a conffile (local edits survive upgrades); md5sums
    // covers everything else.
    let conffiles = read(&p.root.join("DEBIAN/conffiles"));
    let md5sums = read(&p.root.join("DEBIAN/md5sums"));
    for (path, _) in entries(&p.deb) {
        let path = path.trim_start_matches('.');
        if path.ends_with('/') {
            continue;
        }
        if path.starts_with("/etc/") {
            assert!(
                conffiles.lines().any(|l| l == path),
                "{path} not a conffile"
            );
        } else {
            assert!(md5sums.contains(&format!("  {}\n", &path[1..])), "{path}");
        }
    }
    // The copyright file is the committed one (scripts/third-party-notices), in the
    // machine-readable format, and names the data sets and the crates.
    let copyright = read(&p.root.join("usr/share/doc/edgegw/copyright"));
    assert_eq!(copyright, read(&root().join("packaging/debian/copyright")));
    assert!(copyright
        .starts_with("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"));
    for needle in [
        "Case Western Reserve University Bearing Data Center",
        "Numenta",
        "Files: crates/tokio-",
        "License: Apache-2.0\n",
    ] {
        assert!(copyright.contains(needle), "{needle}");
    }
}

#[test]
fn maintainer_scripts_use_the_debhelper_systemd_helpers() {
    let Some(p) = package() else { return };
    for script in ["postinst", "prerm", "postrm"] {
        let path = p.root.join("DEBIAN").join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        let text = read(&path);
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            // lintian's maintainer-script-calls-systemctl, which daemon-reload passes.
            let calls_systemctl = line
                .split(';')
                .any(|cmd| cmd.trim_start().starts_with("systemctl"));
            assert!(
                !calls_systemctl || line.contains("daemon-reload"),
                "{script}: bare systemctl (use deb-systemd-helper/-invoke): {line}"
            );
            assert!(!line.contains("chmod"), "{script}: {line}");
        }
    }
    let postinst = read(&p.root.join("DEBIAN/postinst"));
    assert!(postinst.contains("deb-systemd-helper enable 'edgegw.service'"));
    assert!(postinst.contains("deb-systemd-invoke try-restart 'edgegw.service'"));
    assert!(postinst.contains("statoverride root root 0700 /etc/edgegw/credentials"));
    let prerm = read(&p.root.join("DEBIAN/prerm"));
    assert!(prerm.contains("deb-systemd-invoke stop 'edgegw.service'"));
}

#[test]
fn lintian_reports_no_errors() {
    let Some(p) = package() else { return };
    if !have("lintian") {
        assert!(
            std::env::var_os("EDGEGW_REQUIRE_LINTIAN").is_none(),
            "EDGEGW_REQUIRE_LINTIAN is set but lintian is not installed"
        );
        eprintln!("package_deb: lintian SKIPPED: not installed (apt install lintian)");
        return;
    }
    let started = std::time::Instant::now();
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--info", "--pedantic"])
        .arg(&p.deb)
        .output()
        .expect("run lintian");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "package_deb: lintian in {:.1?}:\n{report}",
        started.elapsed()
    );
    assert!(
        out.status.success() && !report.lines().any(|l| l.starts_with("E: ")),
        "lintian reports errors on {}:\n{report}{}",
        p.deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}
