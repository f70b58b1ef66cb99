//! A minimal S3 client for model sync: signed GET (and PUT, for publishing and tests)
//! of single objects on any S3-compatible server.
//!
//! Requests are signed with AWS Signature V4 by `rusty-s3` (query-string signing,
//! sans-IO, RustCrypto HMAC) and sent with reqwest over rustls with the ring provider;
//! with `ca_file`, the TLS config comes from the program's one builder
//! (`upstream::tls`) and trusts only that CA.
//! Path-style (`endpoint/bucket/key`) and virtual-host style (`bucket.endpoint/key`)
//! both work; the region only enters the signature.
//!
//! Credentials never leave this module in text form: [`S3Client`]'s `Debug` shows the
//! endpoint and bucket only, errors name the bucket and key but never a URL (a signed
//! URL carries the access key id and a signature), and S3's error bodies are reduced to
//! their `<Code>` (a `SignatureDoesNotMatch` body echoes the access key id).
//!
//! It does not retry, cache or interpret objects: that is `sync.rs`.

use crate::config::{ModelsS3Config, S3CredentialsConfig, SecretError, SecretRef};
use rusty_s3::{Bucket, Credentials, S3Action, UrlStyle};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// How long a signed request stays valid. Short: it only has to reach the server.
const SIGNATURE_VALID: Duration = Duration::from_secs(300);

/// Why an S3 request failed. Never contains a credential or a signed URL.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("S3 credentials: {0}")]
    Secret(#[from] SecretError),
    #[error("S3 credentials file {path}: {reason}", path = path.display())]
    CredentialsFile { path: PathBuf, reason: String },
    #[error("S3 endpoint {endpoint}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("s3://{bucket}/{key}: access denied (HTTP {status}, {code}): check the access key, the secret and the bucket policy")]
    Denied {
        bucket: String,
        key: String,
        status: u16,
        code: String,
    },
    #[error("s3://{bucket}/{key}: not found (HTTP 404, {code})")]
    NotFound {
        bucket: String,
        key: String,
        code: String,
    },
    #[error("s3://{bucket}/{key}: HTTP {status} ({code})")]
    Status {
        bucket: String,
        key: String,
        status: u16,
        code: String,
    },
    #[error("s3://{bucket}/{key}: no answer within {secs} s")]
    Timeout {
        bucket: String,
        key: String,
        secs: u64,
    },
    #[error("s3://{bucket}/{key}: cannot reach {endpoint}: {message}")]
    Connect {
        bucket: String,
        key: String,
        endpoint: String,
        message: String,
    },
    #[error("s3://{bucket}/{key}: transfer failed: {message}")]
    Transfer {
        bucket: String,
        key: String,
        message: String,
    },
    #[error("s3://{bucket}/{key}: larger than the limit of {limit} bytes")]
    TooLarge {
        bucket: String,
        key: String,
        limit: u64,
    },
    #[error("s3://{bucket}/{key}: cannot write {path}: {source}", path = path.display())]
    Io {
        bucket: String,
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl S3Error {
    /// Errors worth retrying at the next sync (the network or the server), as
    /// opposed to a refusal of what we asked for.
    pub fn is_transient(&self) -> bool {
        !matches!(self, S3Error::TooLarge { .. })
    }
}

/// The result of a conditional GET.
#[derive(Debug)]
pub enum Fetched {
    /// `304 Not Modified`: the ETag we sent is still current.
    NotModified,
    /// The object, with its ETag if the server sent one.
    Object {
        bytes: Vec<u8>,
        etag: Option<String>,
    },
}

/// A signed-request client for one bucket.
pub struct S3Client {
    http: reqwest::Client,
    bucket: Bucket,
    credentials: Credentials,
    /// The configured endpoint, for messages (validated to carry no userinfo).
    endpoint: String,
    timeout_secs: u64,
}

impl fmt::Debug for S3Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket.name())
            .field("region", &self.bucket.region())
            .finish_non_exhaustive()
    }
}

impl S3Client {
    /// Resolves the credentials and builds the client (no request is sent).
    pub fn new(config: &ModelsS3Config) -> Result<S3Client, S3Error> {
        let credentials = resolve_credentials(&config.credentials)?;
        let endpoint_err = |reason: String| S3Error::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&config.endpoint).map_err(|e| endpoint_err(e.to_string()))?;
        let style = if config.path_style {
            UrlStyle::Path
        } else {
            UrlStyle::VirtualHost
        };
        let bucket = Bucket::new(url, style, config.bucket.clone(), config.region.clone())
            .map_err(|e| endpoint_err(e.to_string()))?;
        // The whole project uses ring; reqwest built without a provider takes the
        // process default. Installing twice is harmless (the first one stays).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let timeout = Duration::from_secs(config.timeout_secs.max(1));
        let mut builder = reqwest::Client::builder();
        if let Some(ca) = &config.ca_file {
            // A private CA: the program's one TLS builder, trusting only this CA
            // (host name verified as always).
            let tls = crate::upstream::tls::client_config(Some(ca))
                .map_err(|e| endpoint_err(e.to_string()))?;
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .user_agent(concat!("edgegw/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| endpoint_err(error_chain(&e.without_url())))?;
        Ok(S3Client {
            http,
            bucket,
            credentials,
            endpoint: config.endpoint.clone(),
            timeout_secs: config.timeout_secs.max(1),
        })
    }

    pub fn bucket(&self) -> &str {
        self.bucket.name()
    }

    /// GET `key` into memory, at most `max_bytes`. With `if_none_match`, a `304`
    /// answer is [`Fetched::NotModified`].
    pub async fn get(
        &self,
        key: &str,
        if_none_match: Option<&str>,
        max_bytes: u64,
    ) -> Result<Fetched, S3Error> {
        let url = self.signed(rusty_s3::actions::GetObject::new(
            &self.bucket,
            Some(&self.credentials),
            key,
        ));
        let mut req = self.http.get(url);
        if let Some(etag) = if_none_match {
            req = req.header(reqwest::header::IF_NONE_MATCH, etag);
        }
        let mut resp = self.send(key, req).await?;
        if resp.status() == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(Fetched::NotModified);
        }
        let etag = resp
            .headers()
            .get(reqwest::header::ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        // Some S3-compatible servers (s3s-fs among them) ignore If-None-Match on GET
        // and answer 200 with the same ETag: that is "not modified" too.
        if if_none_match.is_some() && etag.as_deref() == if_none_match {
            return Ok(Fetched::NotModified);
        }
        let mut bytes = Vec::new();
        self.check_length(key, &resp, max_bytes)?;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transfer(key, e))? {
            if bytes.len() as u64 + chunk.len() as u64 > max_bytes {
                return Err(self.too_large(key, max_bytes));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Fetched::Object { bytes, etag })
    }

    /// GET `key` into a new file at `path`, at most `max_bytes`; returns the size.
    /// The caller owns the file's directory (a staging directory in the cache).
    pub async fn get_to_file(
        &self,
        key: &str,
        path: &Path,
        max_bytes: u64,
    ) -> Result<u64, S3Error> {
        let url = self.signed(rusty_s3::actions::GetObject::new(
            &self.bucket,
            Some(&self.credentials),
            key,
        ));
        let mut resp = self.send(key, self.http.get(url)).await?;
        self.check_length(key, &resp, max_bytes)?;
        let io = |source| S3Error::Io {
            bucket: self.bucket().to_string(),
            key: key.to_string(),
            path: path.to_path_buf(),
            source,
        };
        let mut file = tokio::fs::File::create(path).await.map_err(io)?;
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.transfer(key, e))? {
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(self.too_large(key, max_bytes));
            }
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.sync_all().await.map_err(io)?;
        Ok(size)
    }

    /// PUT `body` as `key` (publishing bundles; the gateway itself never writes).
    pub async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        let url = self.signed(rusty_s3::actions::PutObject::new(
            &self.bucket,
            Some(&self.credentials),
            key,
        ));
        self.send(key, self.http.put(url).body(body)).await?;
        Ok(())
    }

    fn signed<'a>(&self, action: impl S3Action<'a>) -> reqwest::Url {
        action.sign(SIGNATURE_VALID)
    }

    /// Sends and maps every failure (status included) to an [`S3Error`].
    async fn send(
        &self,
        key: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, S3Error> {
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                self.timeout(key)
            } else if e.is_connect() {
                S3Error::Connect {
                    bucket: self.bucket().to_string(),
                    key: key.to_string(),
                    endpoint: self.endpoint.clone(),
                    message: error_chain(&e.without_url()),
                }
            } else {
                self.transfer(key, e)
            }
        })?;
        let status = resp.status();
        if status.is_success() || status == reqwest::StatusCode::NOT_MODIFIED {
            return Ok(resp);
        }
        // Only the <Code> of the error body: the rest may echo the access key id.
        let body = tokio::time::timeout(Duration::from_secs(self.timeout_secs), resp.bytes())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        let code = error_code(&body).unwrap_or_else(|| "no error code".to_string());
        let (bucket, key) = (self.bucket().to_string(), key.to_string());
        Err(match status.as_u16() {
            401 | 403 => S3Error::Denied {
                bucket,
                key,
                status: status.as_u16(),
                code,
            },
            404 => S3Error::NotFound { bucket, key, code },
            s => S3Error::Status {
                bucket,
                key,
                status: s,
                code,
            },
        })
    }

    fn check_length(
        &self,
        key: &str,
        resp: &reqwest::Response,
        max_bytes: u64,
    ) -> Result<(), S3Error> {
        match resp.content_length() {
            Some(n) if n > max_bytes => Err(self.too_large(key, max_bytes)),
            _ => Ok(()),
        }
    }

    fn too_large(&self, key: &str, limit: u64) -> S3Error {
        S3Error::TooLarge {
            bucket: self.bucket().to_string(),
            key: key.to_string(),
            limit,
        }
    }

    fn timeout(&self, key: &str) -> S3Error {
        S3Error::Timeout {
            bucket: self.bucket().to_string(),
            key: key.to_string(),
            secs: self.timeout_secs,
        }
    }

    fn transfer(&self, key: &str, e: reqwest::Error) -> S3Error {
        if e.is_timeout() {
            return self.timeout(key);
        }
        S3Error::Transfer {
            bucket: self.bucket().to_string(),
            key: key.to_string(),
            message: error_chain(&e.without_url()),
        }
    }
}

/// `error: cause: cause`, without URLs (the caller strips them from reqwest errors).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The `<Code>` of an S3 XML error body, if it looks like one (letters only).
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    (!code.is_empty() && code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| code.to_string())
}

/// The keys, from the config's secrets, a credentials file, or the environment.
fn resolve_credentials(c: &S3CredentialsConfig) -> Result<Credentials, S3Error> {
    if let Some(path) = &c.file {
        let profile = c.profile.as_deref().unwrap_or("default");
        return credentials_file(path, profile);
    }
    let key = c
        .access_key_id
        .clone()
        .unwrap_or_else(|| SecretRef::Env("AWS_ACCESS_KEY_ID".into()))
        .resolve()?;
    let secret = c
        .secret_access_key
        .clone()
        .unwrap_or_else(|| SecretRef::Env("AWS_SECRET_ACCESS_KEY".into()))
        .resolve()?;
    Ok(Credentials::new(key, secret))
}

/// Reads `aws_access_key_id` / `aws_secret_access_key` (and `aws_session_token`) of
/// `[profile]` from an AWS shared-credentials file. Errors never quote a line.
fn credentials_file(path: &Path, profile: &str) -> Result<Credentials, S3Error> {
    let bad = |reason: String| S3Error::CredentialsFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let (mut in_profile, mut seen) = (false, false);
    let (mut key, mut secret, mut token) = (None, None, None);
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            seen |= in_profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim().to_string();
            match k.trim() {
                "aws_access_key_id" => key = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    if !seen {
        return Err(bad(format!("no [{profile}] section")));
    }
    match (key, secret, token) {
        (Some(k), Some(s), None) => Ok(Credentials::new(k, s)),
        (Some(k), Some(s), Some(t)) => Ok(Credentials::new_with_token(k, s, t)),
        _ => Err(bad(format!(
            "[{profile}] needs aws_access_key_id and aws_secret_access_key"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: &str, path_style: bool) -> ModelsS3Config {
        // A committed key file ("K"): nothing is written, so nothing is left in /tmp.
        let key_file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/s3-unit-key");
        ModelsS3Config {
            endpoint: endpoint.into(),
            bucket: "models".into(),
            prefix: "edge".into(),
            region: "eu-central-1".into(),
            path_style,
            credentials: S3CredentialsConfig {
                access_key_id: Some(SecretRef::File(key_file.clone())),
                secret_access_key: Some(SecretRef::File(key_file)),
                file: None,
                profile: None,
            },
            interval_secs: 3600,
            timeout_secs: 5,
            max_bundle_mb: 1,
            ca_file: None,
        }
    }

    #[test]
    fn https_clients_build_with_ring_and_both_url_styles_address_the_bucket() {
        // Building an HTTPS-capable client must not need aws-lc (it would panic
        // without a process default provider).
        let vhost = S3Client::new(&config("https://s3.eu-central-1.amazonaws.com", false)).unwrap();
        assert_eq!(
            vhost.bucket.object_url("edge/index.json").unwrap().as_str(),
            "https://models.s3.eu-central-1.amazonaws.com/edge/index.json"
        );
        let path = S3Client::new(&config("http://127.0.0.1:9000", true)).unwrap();
        assert_eq!(
            path.bucket.object_url("edge/index.json").unwrap().as_str(),
            "http://127.0.0.1:9000/models/edge/index.json"
        );
        let debug = format!("{vhost:?}");
        assert!(
            debug.contains("models") && !debug.contains("K\n"),
            "{debug}"
        );
        // A missing secret names where it looked, not a value.
        let mut c = config("https://s3.example.com", false);
        c.credentials.secret_access_key = Some(SecretRef::Env("EDGEGW_SURELY_UNSET_S3_SK".into()));
        let e = S3Client::new(&c).unwrap_err().to_string();
        assert!(e.contains("EDGEGW_SURELY_UNSET_S3_SK"), "{e}");
    }

    #[test]
    fn error_code_takes_only_the_code() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><AWSAccessKeyId>AKIDSECRET</AWSAccessKeyId></Error>";
        assert_eq!(error_code(body).as_deref(), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code(b"<Code><script></Code>"), None);
        assert_eq!(error_code(b"nothing"), None);
    }

    #[test]
    fn credentials_file_sections_and_errors_without_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("credentials");
        std::fs::write(
            &p,
            "[default]\naws_access_key_id = AK1\naws_secret_access_key = SK-ONE\n\n[edge]\naws_access_key_id=AK2\naws_secret_access_key=SK-TWO\n",
        )
        .unwrap();
        let c = credentials_file(&p, "edge").unwrap();
        assert_eq!(c.key(), "AK2");
        assert_eq!(c.secret(), "SK-TWO");
        let e = credentials_file(&p, "missing").unwrap_err().to_string();
        assert!(e.contains("no [missing] section"), "{e}");
        std::fs::write(&p, "[default]\naws_secret_access_key = SK-ONE\n").unwrap();
        let e = credentials_file(&p, "default").unwrap_err().to_string();
        assert!(!e.contains("SK-ONE"), "{e}");
    }
}
