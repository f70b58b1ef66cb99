//! `kind = "webhook"`: one HTTP POST per notification. 2xx is delivered; 408, 429,
//! 5xx and network errors are retried; any other answer refuses that notification
//! for good (dead-lettered for the sink, counted, logged), 401/403 also as an
//! authentication failure.

use super::config::WebhookSink;
use super::{template, Notification, SendError};
use crate::config::upstreams::Delivery;
use crate::upstream::UpstreamError;

pub(super) struct Webhook {
    cfg: WebhookSink,
    delivery: Delivery,
    client: Option<reqwest::Client>,
}

const UPSTREAM: &str = "notify webhook";

impl Webhook {
    pub(super) fn new(cfg: WebhookSink, delivery: Delivery) -> Webhook {
        Webhook {
            cfg,
            delivery,
            client: None,
        }
    }

    fn client(&mut self) -> Result<reqwest::Client, SendError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let c =
            crate::upstream::http::client(self.cfg.ca_file.as_deref(), self.delivery.timeout_ms)
                .map_err(|detail| {
                    SendError::Retry(UpstreamError::Config {
                        upstream: UPSTREAM,
                        detail,
                    })
                })?;
        self.client = Some(c.clone());
        Ok(c)
    }

    pub(super) async fn send(&mut self, n: &Notification<'_>) -> Result<(), SendError> {
        let client = self.client()?;
        let json = self.cfg.content_type.contains("json");
        let body = match &self.cfg.template {
            Some(t) => template::render(
                t,
                |f| n.field(f),
                if json {
                    template::Escape::JsonString
                } else {
                    template::Escape::None
                },
            ),
            None => n.json().to_string(),
        };
        let mut req = client
            .post(&self.cfg.url)
            .header(reqwest::header::CONTENT_TYPE, &self.cfg.content_type)
            .header("Idempotency-Key", n.key)
            .body(body);
        if let Some(token) = &self.cfg.token {
            let token = token.resolve().map_err(|e| {
                SendError::Retry(UpstreamError::Config {
                    upstream: UPSTREAM,
                    detail: format!("token: {e}"),
                })
            })?;
            req = req.bearer_auth(token);
        }
        let target = self.cfg.url.clone();
        let resp = req.send().await.map_err(|e| {
            SendError::Retry(if e.is_connect() {
                UpstreamError::Connect {
                    upstream: UPSTREAM,
                    target: target.clone(),
                    detail: e.to_string(),
                }
            } else {
                UpstreamError::Write {
                    upstream: UPSTREAM,
                    target: target.clone(),
                    detail: e.to_string(),
                }
            })
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(());
        }
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            return Err(SendError::Retry(UpstreamError::Write {
                upstream: UPSTREAM,
                target,
                detail: format!("HTTP {status}: {text}"),
            }));
        }
        Err(SendError::Refused {
            reason: format!("{target} answered HTTP {status}: {text}"),
            auth: code == 401 || code == 403,
        })
    }
}
