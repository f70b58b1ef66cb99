//! The connection to TimescaleDB / PostgreSQL: URL, password secret, TLS, and
//! error messages that name the cause and never the password.

use crate::config::TimescaleUpstream;
use crate::upstream::UpstreamError;
use std::str::FromStr;
use std::time::Duration;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};

/// Connects with the section's URL, password secret and TLS choice. TLS is used when
/// the URL says `sslmode=verify-full` (or `require`, which means the same here): the
/// certificate is verified against `ca_file` (or the system roots), host name
/// included. A refused certificate is a connection error that says why.
pub async fn connect(
    cfg: &TimescaleUpstream,
    connect_timeout: Duration,
) -> Result<Client, UpstreamError> {
    let target = redact(&cfg.url);
    let fail = |detail: String| UpstreamError::Connect {
        upstream: "timescale",
        target: target.clone(),
        detail,
    };
    let config_err = |detail: String| UpstreamError::Config {
        upstream: "timescale",
        detail,
    };
    let (url, tls) = cfg
        .connection_url()
        .map_err(|e| config_err(format!("url {target}: {e}")))?;
    let mut pg = tokio_postgres::Config::from_str(&url)
        .map_err(|e| config_err(format!("url {target}: {e}")))?;
    if let Some(secret) = &cfg.password {
        let pw = secret
            .resolve()
            .map_err(|e| config_err(format!("password: {e}")))?;
        pg.password(pw);
    }
    pg.connect_timeout(connect_timeout);
    pg.application_name("edgegw");
    let client = if tls {
        let tls = crate::upstream::tls::client_config(cfg.ca_file.as_deref())
            .map_err(|e| config_err(e.to_string()))?;
        // Never fall back to plain TCP: the server must speak TLS.
        pg.ssl_mode(SslMode::Require);
        let (client, conn) = pg
            .connect(tokio_postgres_rustls::MakeRustlsConnect::new(tls))
            .await
            .map_err(|e| fail(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        client
    } else {
        // `prefer` (libpq's default), `allow` and `disable` mean plain TCP: a
        // verified TLS setup has to be asked for with sslmode=verify-full.
        pg.ssl_mode(SslMode::Disable);
        let (client, conn) = pg.connect(NoTls).await.map_err(|e| fail(error_chain(&e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "PostgreSQL connection closed");
            }
        });
        client
    };
    Ok(client)
}

/// An error with its causes: tokio-postgres' own message stops at "error performing
/// TLS handshake"; the cause says why ("invalid peer certificate: certificate not
/// valid for name ...", "... UnknownIssuer").
fn error_chain(e: &tokio_postgres::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        source = cause.source();
    }
    s
}

/// The URL without a password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}@{}", &url[..s + 3], user, &url[at + 1..])
        }
        _ => url.to_string(),
    }
}
