//! PostgreSQL servers of a test's own, on 127.0.0.1 and a free port, run as the
//! `postgres` user (initdb and postgres refuse root), `trust` for user `edgegw`,
//! database `postgres`: a plain primary (`initdb` into a temp dir), a streaming
//! replica of it (`pg_basebackup -R`, promotable), or a TLS-only server presenting a
//! given certificate (`tests/tls_*.rs`). Each is stopped (fast shutdown) on drop;
//! the temp dirs go with it.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn user_ids(user: &str) -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id")
            .args([flag, user])
            .output()
            .expect("run id");
        assert!(
            out.status.success(),
            "no user {user} (apt-get install postgresql creates it)"
        );
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("numeric id")
    };
    (id("-u"), id("-g"))
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.is_file())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found.pop().unwrap_or_else(|| {
        panic!("no /usr/lib/postgresql/*/bin/{name}: apt-get install postgresql")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs a PostgreSQL tool as the `postgres` user; panics with its stderr on failure.
fn run_as_postgres(tool: &str, args: &[&str], cwd: &Path) {
    let (uid, gid) = user_ids("postgres");
    let out = Command::new(pg_bin(tool))
        .args(args)
        .current_dir(cwd)
        .uid(uid)
        .gid(gid)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct PgServer {
    child: Child,
    pub port: u16,
    data: PathBuf,
    dir: tempfile::TempDir,
}

impl PgServer {
    /// A fresh primary: user `edgegw`, database `postgres`, replication allowed from
    /// 127.0.0.1.
    pub fn primary() -> PgServer {
        let (dir, data) = initdb();
        std::fs::write(
            data.join("pg_hba.conf"),
            "host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        PgServer::start(dir, data, &[])
    }

    /// A server that admits TLS connections only (`hostssl ... trust`: a plain
    /// connection finds no entry and is refused), presenting `cert` and `key`.
    pub fn tls_only(cert: &Path, key: &Path) -> PgServer {
        let (dir, data) = initdb();
        let (uid, gid) = user_ids("postgres");
        // The key must belong to the server's user and be private to it.
        for (src, name) in [(cert, "server.crt"), (key, "server.key")] {
            let dst = data.join(name);
            std::fs::copy(src, &dst).expect("copy cert");
            std::os::unix::fs::chown(&dst, Some(uid), Some(gid)).expect("chown");
            std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        }
        std::fs::write(
            data.join("pg_hba.conf"),
            "hostssl all all 127.0.0.1/32 trust\n",
        )
        .expect("pg_hba.conf");
        let tls = [
            "ssl=on",
            "ssl_cert_file=server.crt",
            "ssl_key_file=server.key",
        ];
        PgServer::start(dir, data, &tls)
    }

    /// A streaming replica of `primary` (hot standby: read-only sessions only).
    pub fn replica_of(primary: &PgServer) -> PgServer {
        let dir = owned_tempdir();
        let data = dir.path().join("data");
        let port = primary.port.to_string();
        run_as_postgres(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "edgegw",
                "-D",
                data.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
            dir.path(),
        );
        PgServer::start(dir, data, &[])
    }

    /// Ends recovery: the replica becomes a primary that accepts writes.
    pub fn promote(&self) {
        run_as_postgres(
            "pg_ctl",
            &["promote", "-w", "-D", self.data.to_str().unwrap()],
            self.dir.path(),
        );
    }

    /// A `key=value` conninfo for tokio-postgres.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=edgegw dbname=postgres",
            self.port
        )
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
    }

    /// `settings`: extra `-c` settings (`name=value`).
    fn start(dir: tempfile::TempDir, data: PathBuf, settings: &[&str]) -> PgServer {
        let (uid, gid) = user_ids("postgres");
        let port = free_port();
        let log = dir.path().join("postgres.log");
        let child = Command::new(pg_bin("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("port={port}"))
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args([
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "shared_buffers=16MB",
                "-c",
                "max_connections=20",
            ])
            .args(settings.iter().flat_map(|s| ["-c", s]))
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start postgres");
        let server = PgServer {
            child,
            port,
            data,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        // "ready to accept connections" or, for a standby, "... read-only connections".
        while !server.log().contains("ready to accept") {
            assert!(
                Instant::now() < deadline,
                "postgres did not start on {port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }
}

/// `initdb` into a fresh temp dir the `postgres` user owns: (dir, data dir).
fn initdb() -> (tempfile::TempDir, PathBuf) {
    let dir = owned_tempdir();
    let data = dir.path().join("data");
    run_as_postgres(
        "initdb",
        &[
            "-D",
            data.to_str().unwrap(),
            "-A",
            "trust",
            "-U",
            "edgegw",
            "--no-sync",
            "--no-instructions",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        dir.path(),
    );
    (dir, data)
}

/// A temp dir the `postgres` user owns.
fn owned_tempdir() -> tempfile::TempDir {
    let (uid, gid) = user_ids("postgres");
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
    dir
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT: fast shutdown (backends end, shared memory is released).
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
