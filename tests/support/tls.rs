//! Test support for the TLS tests (`tests/tls_*.rs`): a PKI made with rcgen in each
//! test (a CA, a server certificate for 127.0.0.1 and localhost, one for another host
//! name, one from a CA nobody trusts, a client certificate), rustls server configs
//! (ring), a TLS-terminating TCP proxy, and real servers with TLS listeners on free
//! ports: Redis and Mosquitto (PostgreSQL with TLS is `support/pg.rs`,
//! `PgServer::tls_only`). Every server is stopped on drop.
#![allow(dead_code)]

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A certificate and its key, as PEM files.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The test PKI. Files are world-readable (Mosquitto reads them after dropping to
/// its own user); the directory goes away on drop.
pub struct Pki {
    pub dir: tempfile::TempDir,
    /// The CA the gateway is told to trust.
    pub ca: PathBuf,
    /// For 127.0.0.1 and localhost, signed by `ca`.
    pub server: CertPair,
    /// For `wrong.example` only, signed by `ca`: a valid certificate for another host.
    pub wrong_host: CertPair,
    /// For 127.0.0.1 and localhost, signed by a CA the gateway does not trust.
    pub untrusted: CertPair,
    /// A client certificate (mutual TLS), signed by `ca`.
    pub client: CertPair,
}

pub const WRONG_HOST: &str = "wrong.example";

fn ca_params(name: &str) -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn leaf(
    names: &[&str],
    cn: &str,
    usage: rcgen::ExtendedKeyUsagePurpose,
    issuer: &rcgen::Issuer<'_, rcgen::KeyPair>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let mut p = rcgen::CertificateParams::new(names).expect("leaf params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, cn.to_string());
    p.extended_key_usages = vec![usage];
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = p.signed_by(&key, issuer).expect("sign");
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let write = |name: &str, text: &str| -> PathBuf {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write PEM");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
            p
        };
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params("edgegw test CA"), ca_key).expect("CA");
        let other_key = rcgen::KeyPair::generate().expect("CA key");
        let other = rcgen::CertifiedIssuer::self_signed(ca_params("an untrusted CA"), other_key)
            .expect("untrusted CA");
        let server_use = rcgen::ExtendedKeyUsagePurpose::ServerAuth;
        let pair = |name: &str, (cert, key): (String, String)| CertPair {
            cert: write(&format!("{name}.pem"), &cert),
            key: write(&format!("{name}.key"), &key),
        };
        let ca_path = write("ca.pem", &ca.pem());
        let server = pair(
            "server",
            leaf(
                &["127.0.0.1", "localhost"],
                "localhost",
                server_use.clone(),
                &ca,
            ),
        );
        let wrong_host = pair(
            "wrong-host",
            leaf(&[WRONG_HOST], WRONG_HOST, server_use.clone(), &ca),
        );
        let untrusted = pair(
            "untrusted",
            leaf(&["127.0.0.1", "localhost"], "localhost", server_use, &other),
        );
        let client = pair(
            "client",
            leaf(
                &["edgegw-gw-test"],
                "edgegw-gw-test",
                rcgen::ExtendedKeyUsagePurpose::ClientAuth,
                &ca,
            ),
        );
        Pki {
            ca: ca_path,
            server,
            wrong_host,
            untrusted,
            client,
            dir,
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn wait_listening(port: u16, what: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            let log = log
                .and_then(|l| std::fs::read_to_string(l).ok())
                .unwrap_or_default();
            panic!("{what} did not listen on {port}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A rustls server config (ring) presenting `pair`; with `client_ca`, a client
/// certificate signed by it is required.
pub fn server_config(pair: &CertPair, client_ca: Option<&Path>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&pair.cert)
        .expect("cert")
        .collect::<Result<_, _>>()
        .expect("cert");
    let key = PrivateKeyDer::from_pem_file(&pair.key).expect("key");
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).expect("ca") {
                roots.add(c.expect("ca")).expect("ca");
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    Arc::new(builder.with_single_cert(certs, key).expect("server config"))
}

/// Accepts TLS on a free port and forwards the plain bytes to `target` (a
/// TLS-terminating proxy, like a load balancer in front of an S3 server). Records
/// why handshakes failed. Stops with the runtime.
pub struct TlsProxy {
    pub port: u16,
    pub handshake_errors: Arc<Mutex<Vec<String>>>,
}

impl TlsProxy {
    pub async fn start(target: u16, config: Arc<rustls::ServerConfig>) -> TlsProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let errors = Arc::new(Mutex::new(Vec::new()));
        let errs = errors.clone();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, errs) = (acceptor.clone(), errs.clone());
                tokio::spawn(async move {
                    let mut tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            errs.lock().unwrap().push(e.to_string());
                            return;
                        }
                    };
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut up).await;
                });
            }
        });
        TlsProxy {
            port,
            handshake_errors: errors,
        }
    }
}

/// `redis-server` (Debian's is built with TLS) with a TLS port only, presenting
/// `pair`; `auth_clients`: Redis' `tls-auth-clients` (`yes` requires a client
/// certificate signed by the CA, `optional`, `no`). Killed on drop.
pub struct RedisServer {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    pub fn start(pki: &Pki, pair: &CertPair, auth_clients: &str) -> RedisServer {
        // redis-server cannot take port 0 for TLS, so the port is picked first; a
        // parallel test may take it in between. Then this server exits ("address in
        // use") while the port answers for someone else: wait for this server's own
        // "Ready" line, and try another port when it died.
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = free_port();
            let log = dir.path().join("redis.log");
            let mut child = Command::new("redis-server")
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .arg("--tls-cert-file")
                .arg(&pair.cert)
                .arg("--tls-key-file")
                .arg(&pair.key)
                .arg("--tls-ca-cert-file")
                .arg(&pki.ca)
                .args(["--tls-auth-clients", auth_clients])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start redis-server ({e}); apt-get install redis-server")
                });
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            loop {
                let ready = std::fs::read_to_string(&log)
                    .is_ok_and(|l| l.contains("Ready to accept connections"));
                if ready {
                    wait_listening(port, "redis-server (TLS)", Some(&log));
                    return RedisServer { child, port, dir };
                }
                if child.try_wait().ok().flatten().is_some() {
                    break; // exited: most likely the port was taken; another one
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "redis-server (TLS) not ready in 20 s; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server (TLS) could not start on 5 ports in a row")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Mosquitto with a plain listener (for the test's own clients) and TLS listeners:
/// the right certificate, the same with client certificates required, a certificate
/// for another host, and one from an untrusted CA. No persistence. Killed on drop.
pub struct MosquittoTls {
    child: Child,
    pub plain: u16,
    pub tls: u16,
    pub mutual: u16,
    pub wrong_host: u16,
    pub untrusted: u16,
    dir: tempfile::TempDir,
}

impl MosquittoTls {
    pub fn start(pki: &Pki) -> MosquittoTls {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 5 {
            let p = free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let (plain, tls, mutual, wrong_host, untrusted) =
            (ports[0], ports[1], ports[2], ports[3], ports[4]);
        let listener = |port: u16, pair: &CertPair, require: bool| {
            format!(
                "listener {port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {require}\n",
                pki.ca.display(),
                pair.cert.display(),
                pair.key.display()
            )
        };
        let conf = dir.path().join("mosquitto.conf");
        let log = dir.path().join("mosquitto.log");
        let mut f = std::fs::File::create(&conf).expect("conf");
        write!(
            f,
            "per_listener_settings false\nallow_anonymous true\npersistence false\n\
             log_dest file {}\nlog_type all\n\
             listener {plain} 127.0.0.1\n{}{}{}{}",
            log.display(),
            listener(tls, &pki.server, false),
            listener(mutual, &pki.server, true),
            listener(wrong_host, &pki.wrong_host, false),
            listener(untrusted, &pki.untrusted, false),
        )
        .expect("conf");
        drop(f);
        // Mosquitto drops to its own user: it must be able to write the log.
        let _ = std::fs::File::create(&log);
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start mosquitto ({e}); apt-get install mosquitto"));
        for port in [plain, tls, mutual, wrong_host, untrusted] {
            wait_listening(port, "mosquitto", Some(&log));
        }
        MosquittoTls {
            child,
            plain,
            tls,
            mutual,
            wrong_host,
            untrusted,
            dir,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for MosquittoTls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Log lines written through `tracing` while the guard lives (current thread; use
/// a current-thread runtime so that spawned tasks log here too).
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    pub fn capture() -> (Logs, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Waits for `cond` or panics with `what` after `limit`.
pub async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
