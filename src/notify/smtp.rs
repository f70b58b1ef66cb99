//! `kind = "smtp"`: an email per notification, through lettre (STARTTLS required by
//! default, or TLS from the first byte; never credentials in the clear). A new
//! connection per email: notifications are rare, and a relay that dropped an idle
//! connection costs nothing then.
//!
//! A permanent answer (5xx) to a notification refuses it for good (dead-lettered
//! for the sink); a refusal of our credentials (530, 534, 535) is retried instead,
//! so notifications wait for a fixed password rather than being thrown away.

use super::config::{SmtpSink, SmtpTls};
use super::{template, Notification, SendError};
use crate::upstream::UpstreamError;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::time::Duration;

const UPSTREAM: &str = "notify smtp";

const DEFAULT_SUBJECT: &str =
    "[{{gateway}}] {{event}}: {{anomaly_type}} on {{sensor_id}} (severity {{severity}})";
const DEFAULT_BODY: &str = "Gateway:     {{gateway}} {{site}}
Device:      {{device}} ({{location}})
Sensor:      {{sensor_id}}
Event:       {{event}} (episode since {{episode}})
Severity:    {{severity}} of 5, confidence {{confidence}}
Anomaly:     {{anomaly_type}}
At:          {{ts}}

{{description}}

Recommended: {{actions}}

-- 
edgegw notification {{key}}
";

pub(super) struct Smtp {
    cfg: SmtpSink,
    gateway: String,
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
}

impl Smtp {
    pub(super) fn new(cfg: SmtpSink, gateway: &str) -> Smtp {
        Smtp {
            cfg,
            gateway: gateway.to_string(),
            transport: None,
        }
    }

    pub(super) fn reset(&mut self) {
        self.transport = None;
    }

    fn config_err(detail: String) -> SendError {
        SendError::Retry(UpstreamError::Config {
            upstream: UPSTREAM,
            detail,
        })
    }

    fn transport(&mut self) -> Result<AsyncSmtpTransport<Tokio1Executor>, SendError> {
        if let Some(t) = &self.transport {
            return Ok(t.clone());
        }
        let c = &self.cfg;
        let params = || -> Result<TlsParameters, SendError> {
            let mut b = TlsParameters::builder(c.host.clone());
            if let Some(ca) = &c.ca_file {
                let pem = std::fs::read(ca)
                    .map_err(|e| Self::config_err(format!("ca_file {}: {e}", ca.display())))?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| Self::config_err(format!("ca_file {}: {e}", ca.display())))?;
                b = b.add_root_certificate(cert);
            }
            b.build_rustls()
                .map_err(|e| Self::config_err(format!("TLS: {e}")))
        };
        let tls = match c.tls {
            SmtpTls::Starttls => Tls::Required(params()?),
            SmtpTls::Tls => Tls::Wrapper(params()?),
            SmtpTls::None => Tls::None,
        };
        let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.host.clone())
            .port(c.port)
            .tls(tls)
            .timeout(Some(Duration::from_secs(30)))
            .hello_name(ClientId::Domain(self.gateway.clone()));
        if let Some(user) = &c.username {
            let pw = match &c.password {
                Some(p) => p
                    .resolve()
                    .map_err(|e| Self::config_err(format!("password: {e}")))?,
                None => String::new(),
            };
            b = b.credentials(Credentials::new(user.clone(), pw));
        }
        let t = b.build();
        self.transport = Some(t.clone());
        Ok(t)
    }

    pub(super) async fn send(&mut self, n: &Notification<'_>) -> Result<(), SendError> {
        let c = &self.cfg;
        let subject = template::render(
            c.subject.as_deref().unwrap_or(DEFAULT_SUBJECT),
            |f| n.field(f),
            template::Escape::None,
        );
        // One line: a newline in a field must not start a header.
        let subject: String = subject.replace(['\r', '\n'], " ");
        let body = template::render(
            c.body.as_deref().unwrap_or(DEFAULT_BODY),
            |f| n.field(f),
            template::Escape::None,
        );
        let refused = |reason: String| SendError::Refused {
            reason,
            auth: false,
        };
        let mut m = Message::builder()
            .from(c.from.parse().map_err(|e| refused(format!("from: {e}")))?)
            .subject(subject)
            .message_id(Some(format!("<{}@edgegw>", n.key.replace(':', "."))))
            .header(ContentType::TEXT_PLAIN);
        for to in &c.to {
            m = m.to(to.parse().map_err(|e| refused(format!("to {to}: {e}")))?);
        }
        let email = m
            .body(body)
            .map_err(|e| refused(format!("cannot build the email: {e}")))?;
        let target = format!("{}:{}", c.host, c.port);
        let transport = self.transport()?;
        match transport.send(email).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.status().map(|s| s.to_string());
                if e.is_permanent()
                    && !matches!(code.as_deref(), Some("530") | Some("534") | Some("535"))
                {
                    Err(refused(format!("{target} refused the email: {e}")))
                } else {
                    self.reset();
                    Err(SendError::Retry(UpstreamError::Write {
                        upstream: UPSTREAM,
                        target,
                        detail: e.to_string(),
                    }))
                }
            }
        }
    }
}
