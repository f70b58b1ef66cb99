//! Test support for model sync: a real `s3s-fs` server (SigV4-checking S3) per test,
//! bundle variants made from the committed default bundle, and publishing helpers.
#![allow(dead_code)]

use edgegw::config::{GatewayConfig, ModelsS3Config, S3CredentialsConfig, SecretRef};
use edgegw::inference::s3::S3Client;
use sha2::{Digest, Sha256};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ACCESS_KEY: &str = "AKIDEDGEGWTEST0001";
pub const SECRET_KEY: &str = "sEcReT-edgegw-test-0b5e2c9a7f";
pub const BUCKET: &str = "models";
pub const PREFIX: &str = "edge";

/// A running `s3s-fs` on 127.0.0.1 with its own data directory; killed on drop.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub data: tempfile::TempDir,
}

fn s3s_fs() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("s3s-fs"))
            .find(|f| f.is_file())
    });
    let home = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cargo/bin/s3s-fs"))
        .filter(|f| f.is_file());
    on_path.or(home).unwrap_or_else(|| {
        panic!(
            "s3s-fs is not installed, and the model sync tests need a real S3 server: \
             run `cargo install s3s-fs@0.14.1 --locked --features binary` (scripts/test does it)"
        )
    })
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn spawn(port: u16, data: &Path) -> Child {
    let child = Command::new(s3s_fs())
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--access-key",
            ACCESS_KEY,
            "--secret-key",
            SECRET_KEY,
        ])
        .arg(data)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start s3s-fs");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s3s-fs did not listen on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

impl S3Server {
    pub fn start() -> S3Server {
        let data = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(data.path().join(BUCKET)).expect("bucket dir");
        let port = free_port();
        let child = spawn(port, data.path());
        S3Server { child, port, data }
    }

    /// Starts the server again on the same port with the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.child = spawn(self.port, self.data.path());
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (the test goes on with the server "down").
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Where s3s-fs keeps an object, to corrupt it behind the server's back.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.data.path().join(BUCKET).join(key)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Files holding the keys (so tests never touch the process environment).
pub struct Keys {
    pub dir: tempfile::TempDir,
}

impl Keys {
    pub fn new(access: &str, secret: &str) -> Keys {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("ak"), format!("{access}\n")).expect("ak");
        std::fs::write(dir.path().join("sk"), format!("{secret}\n")).expect("sk");
        Keys { dir }
    }

    pub fn good() -> Keys {
        Keys::new(ACCESS_KEY, SECRET_KEY)
    }

    pub fn credentials(&self) -> S3CredentialsConfig {
        S3CredentialsConfig {
            access_key_id: Some(SecretRef::File(self.dir.path().join("ak"))),
            secret_access_key: Some(SecretRef::File(self.dir.path().join("sk"))),
            file: None,
            profile: None,
        }
    }
}

pub fn s3_config(endpoint: &str, keys: &Keys) -> ModelsS3Config {
    ModelsS3Config {
        endpoint: endpoint.to_string(),
        bucket: BUCKET.into(),
        prefix: PREFIX.into(),
        region: "us-east-1".into(),
        path_style: true,
        credentials: keys.credentials(),
        interval_secs: 3600,
        timeout_secs: 5,
        max_bundle_mb: 4,
        ca_file: None,
    }
}

/// A gateway config with the model cache in `state_dir` and S3 at `endpoint`.
pub fn gateway_config(state_dir: &Path, s3: Option<ModelsS3Config>) -> GatewayConfig {
    let text = format!(
        "[gateway]\nid = \"gw-test\"\nstate_dir = {:?}\n",
        state_dir.display().to_string()
    );
    let mut c: GatewayConfig = toml::from_str(&text).expect("config");
    c.models.s3 = s3;
    c
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bundle as bytes: (manifest JSON value, model.onnx).
#[derive(Clone)]
pub struct Bundle {
    pub manifest: serde_json::Value,
    pub onnx: Vec<u8>,
}

impl Bundle {
    /// The committed `vibration-default`, renamed and versioned: a "cloud" bundle.
    pub fn vibration(name: &str, version: &str, threshold: f64) -> Bundle {
        let dir = root().join("models/vibration-default");
        let mut manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).expect("manifest"))
                .expect("json");
        manifest["name"] = name.into();
        manifest["version"] = version.into();
        manifest["threshold"] = threshold.into();
        let onnx = std::fs::read(dir.join("model.onnx")).expect("onnx");
        Bundle { manifest, onnx }
    }

    pub fn name(&self) -> String {
        self.manifest["name"].as_str().expect("name").to_string()
    }

    pub fn version(&self) -> String {
        self.manifest["version"]
            .as_str()
            .expect("version")
            .to_string()
    }

    pub fn detector(&self) -> String {
        format!("{}@{}", self.name(), self.version())
    }

    /// Recomputes the manifest's sha256 for the current `onnx`.
    pub fn reseal(mut self) -> Bundle {
        self.manifest["sha256"] = sha256_hex(&self.onnx).into();
        self
    }
}

pub fn client(endpoint: &str, keys: &Keys) -> S3Client {
    S3Client::new(&s3_config(endpoint, keys)).expect("client")
}

/// Uploads a bundle (model first, manifest second, as the publish tool does).
pub async fn publish(client: &S3Client, b: &Bundle) {
    let base = format!("{PREFIX}/{}/{}", b.name(), b.version());
    client
        .put(&format!("{base}/model.onnx"), b.onnx.clone())
        .await
        .expect("put model");
    client
        .put(
            &format!("{base}/manifest.json"),
            serde_json::to_vec_pretty(&b.manifest).expect("json"),
        )
        .await
        .expect("put manifest");
}

/// Writes `index.json` naming `entries` (sensor type, bundle).
pub async fn publish_index(client: &S3Client, entries: &[(&str, &Bundle)]) {
    let mut models = serde_json::Map::new();
    for (t, b) in entries {
        models.insert(
            t.to_string(),
            serde_json::json!({"name": b.name(), "version": b.version()}),
        );
    }
    let index = serde_json::json!({"format": 1, "models": models});
    client
        .put(
            &format!("{PREFIX}/index.json"),
            serde_json::to_vec_pretty(&index).expect("json"),
        )
        .await
        .expect("put index");
}
