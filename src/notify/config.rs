//! `[notify]`: where local notifications go (`[notify.sinks.<name>]`) and which
//! alerts reach which sink (`[[notify.routes]]`).
//!
//! [`NotifyConfig::validate`] is pure and returns `field.path: message` problems, like
//! the other sections; `config::load` turns them into `file:line:column` diagnostics.

use super::template;
use crate::config::upstreams::{Delivery, DeliveryConfig};
use crate::config::SecretRef;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// The whole `[notify]` section. Empty: no notifications, no cursors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    /// Receivers by name.
    #[serde(default)]
    pub sinks: BTreeMap<String, SinkConfig>,
    /// Which alerts go where. An alert reaches a sink when any route naming the
    /// sink matches it.
    #[serde(default)]
    pub routes: Vec<Route>,
}

/// One rule: alerts of at least `min_severity` from the listed devices or groups go
/// to the listed sinks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Names from `[notify.sinks]`.
    pub sinks: Vec<String>,
    /// 1..5 (the cloud's severity); an episode that opens below it and escalates to
    /// it is notified at the escalation, as an opening.
    #[serde(default = "one")]
    pub min_severity: u8,
    /// Device ids; a trailing `*` matches a prefix (`press-*`). With neither
    /// `devices` nor `groups`, every device.
    #[serde(default)]
    pub devices: Vec<String>,
    /// Device groups (`group = "..."` of a `[[devices]]` entry).
    #[serde(default)]
    pub groups: Vec<String>,
}

fn one() -> u8 {
    1
}

/// One receiver.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum SinkConfig {
    /// An HTTP POST per notification.
    Webhook(WebhookSink),
    /// A message on a local broker from `[mqtt_brokers]`.
    Mqtt(MqttSink),
    /// An email over SMTP.
    Smtp(SmtpSink),
    /// A coil or register write (a stack light, a PLC input).
    Modbus(ModbusSink),
}

/// `kind = "webhook"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSink {
    /// `http://` or `https://` URL the notification is POSTed to.
    pub url: String,
    /// CA certificate (PEM) for an `https://` receiver with a private CA; the
    /// system's roots are used besides.
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<SecretRef>,
    /// Request body with `{{field}}` placeholders (see docs/notifications.md); the
    /// default is a JSON object with every field. With a JSON content type, values
    /// are escaped for a JSON string.
    pub template: Option<String>,
    #[serde(default = "json_content_type")]
    pub content_type: String,
    /// Openings and escalations per hour at most; 0 = no limit.
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_hour: u32,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// `kind = "mqtt"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSink {
    /// A broker from `[mqtt_brokers]` (its TLS and credentials apply).
    pub broker: String,
    /// Topic template.
    #[serde(default = "default_topic")]
    pub topic: String,
    /// Payload template; default: a JSON object with every field.
    pub template: Option<String>,
    /// Retained, so a panel that subscribes later sees the last notification.
    #[serde(default)]
    pub retain: bool,
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_hour: u32,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_topic() -> String {
    "edgegw/{{gateway}}/notify/{{device}}".into()
}

/// How the SMTP connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS before anything else (port 587);
    /// refused if the server does not offer it.
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on the same host, never with credentials.
    None,
}

/// `kind = "smtp"`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpSink {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default = "starttls")]
    pub tls: SmtpTls,
    /// CA certificate (PEM) of a relay with a private CA; the system's roots are
    /// used besides.
    pub ca_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<SecretRef>,
    /// Sender address.
    pub from: String,
    /// Recipients.
    pub to: Vec<String>,
    /// Subject template.
    pub subject: Option<String>,
    /// Body template (plain text).
    pub body: Option<String>,
    #[serde(default = "default_rate_limit")]
    pub rate_limit_per_hour: u32,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_smtp_port() -> u16 {
    587
}
fn starttls() -> SmtpTls {
    SmtpTls::Starttls
}

/// `kind = "modbus"`: a level, not a message. While at least one routed episode is
/// open the `on` values are written, when the last one closes the `off` values.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusSink {
    /// `host:port` of a Modbus TCP server (the stack light's or PLC's).
    pub address: String,
    #[serde(default = "one")]
    pub unit: u8,
    /// The only addresses this gateway may ever write: `coil:N` or `holding:N`
    /// (wire addresses, 0-based, as in profiles). Every write must be listed.
    pub allow: Vec<String>,
    pub writes: Vec<ModbusWrite>,
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

/// One write of a Modbus sink.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusWrite {
    /// `coil:N` or `holding:N`.
    pub target: String,
    /// What is written.
    #[serde(default)]
    pub value: WriteValue,
    /// Written while an episode is open (`value = "level"`).
    #[serde(default = "one_u16")]
    pub on: u16,
    /// Written when none is.
    #[serde(default)]
    pub off: u16,
}

fn one_u16() -> u16 {
    1
}

/// What a Modbus write carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteValue {
    /// `on` while an episode is open, `off` when none is.
    #[default]
    Level,
    /// The highest severity (1..5) among the open episodes, 0 when none (a holding
    /// register only).
    MaxSeverity,
}

fn json_content_type() -> String {
    "application/json".into()
}

/// Openings and escalations per hour and sink, by default: enough for a bad shift,
/// not a mail storm when a whole line trips at once.
fn default_rate_limit() -> u32 {
    30
}

/// A Modbus address a sink may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Coil(u16),
    Holding(u16),
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        let (table, addr) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not `coil:N` or `holding:N`"))?;
        let addr: u16 = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: the address must be 0..65535"))?;
        match table.trim() {
            "coil" => Ok(Target::Coil(addr)),
            "holding" => Ok(Target::Holding(addr)),
            other => Err(format!(
                "{s:?}: {other:?} is not writable here; use `coil:N` or `holding:N`"
            )),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Coil(a) => write!(f, "coil:{a}"),
            Target::Holding(a) => write!(f, "holding:{a}"),
        }
    }
}

impl SinkConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Webhook(_) => "webhook",
            SinkConfig::Mqtt(_) => "mqtt",
            SinkConfig::Smtp(_) => "smtp",
            SinkConfig::Modbus(_) => "modbus",
        }
    }

    /// The forwarder's knobs: one notification at a time by default, a minute
    /// between attempts at most, no drain limit (the rate limit is per hour).
    pub fn delivery(&self) -> Delivery {
        let d = match self {
            SinkConfig::Webhook(s) => &s.delivery,
            SinkConfig::Mqtt(s) => &s.delivery,
            SinkConfig::Smtp(s) => &s.delivery,
            SinkConfig::Modbus(s) => &s.delivery,
        };
        let mut out = d.resolve(20, 0.0);
        if d.backoff_max_ms.is_none() {
            out.backoff_max_ms = 60_000;
        }
        if d.breaker_open_secs.is_none() {
            out.breaker_open_secs = 60;
        }
        out
    }

    /// Openings and escalations per hour (0: no limit). A Modbus sink writes a
    /// level, which is never held back.
    pub fn rate_limit_per_hour(&self) -> u32 {
        match self {
            SinkConfig::Webhook(s) => s.rate_limit_per_hour,
            SinkConfig::Mqtt(s) => s.rate_limit_per_hour,
            SinkConfig::Smtp(s) => s.rate_limit_per_hour,
            SinkConfig::Modbus(_) => 0,
        }
    }
}

impl Route {
    /// Whether an alert of `device` (in `group`) at `severity` goes to `sink`.
    pub fn matches(&self, sink: &str, device: &str, group: Option<&str>, severity: u8) -> bool {
        if severity < self.min_severity || !self.sinks.iter().any(|s| s == sink) {
            return false;
        }
        if self.devices.is_empty() && self.groups.is_empty() {
            return true;
        }
        self.devices.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => device.starts_with(prefix),
            None => p == device,
        }) || group.is_some_and(|g| self.groups.iter().any(|x| x == g))
    }
}

impl NotifyConfig {
    /// Problems as `notify.<field>: message`. `brokers`: the names in
    /// `[mqtt_brokers]`.
    pub fn validate(&self, brokers: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for (name, sink) in &self.sinks {
            let at = format!("notify.sinks.{name}");
            if let Some(p) = crate::profiles::name_problem(name) {
                out.push(format!("{at}: sink name {name:?} {p}"));
            }
            let delivery = sink.delivery();
            if delivery.timeout_ms == 0 {
                out.push(format!("{at}.delivery.timeout_ms: must be more than 0"));
            }
            match sink {
                SinkConfig::Webhook(w) => {
                    if !(w.url.starts_with("http://") || w.url.starts_with("https://"))
                        || reqwest::Url::parse(&w.url).is_err()
                    {
                        out.push(format!(
                            "{at}.url: {:?} is not an http:// or https:// URL",
                            w.url
                        ));
                    }
                    if let Some(t) = &w.template {
                        check_template(&format!("{at}.template"), t, &mut out);
                    }
                }
                SinkConfig::Mqtt(m) => {
                    if !brokers.contains(&m.broker.as_str()) {
                        out.push(format!(
                            "{at}.broker: {:?} is not in [mqtt_brokers] (there: {})",
                            m.broker,
                            list(brokers)
                        ));
                    }
                    check_template(&format!("{at}.topic"), &m.topic, &mut out);
                    if m.topic.contains(['+', '#']) {
                        out.push(format!(
                            "{at}.topic: {:?} holds a wildcard (+ or #), which cannot be published to",
                            m.topic
                        ));
                    }
                    if let Some(t) = &m.template {
                        check_template(&format!("{at}.template"), t, &mut out);
                    }
                }
                SinkConfig::Smtp(s) => {
                    if s.host.trim().is_empty() {
                        out.push(format!("{at}.host: must not be empty"));
                    }
                    if s.to.is_empty() {
                        out.push(format!("{at}.to: name at least one recipient"));
                    }
                    for (i, a) in std::iter::once(&s.from).chain(&s.to).enumerate() {
                        if a.parse::<lettre::Address>().is_err() {
                            let field = if i == 0 {
                                "from".to_string()
                            } else {
                                format!("to.{}", i - 1)
                            };
                            out.push(format!("{at}.{field}: {a:?} is not an email address"));
                        }
                    }
                    if s.password.is_some() && s.username.is_none() {
                        out.push(format!("{at}.username: a password needs a username"));
                    }
                    if s.tls == SmtpTls::None && s.username.is_some() {
                        out.push(format!(
                            "{at}.tls: credentials are never sent without TLS; use \"starttls\" or \"tls\""
                        ));
                    }
                    for (field, t) in [("subject", &s.subject), ("body", &s.body)] {
                        if let Some(t) = t {
                            check_template(&format!("{at}.{field}"), t, &mut out);
                        }
                    }
                }
                SinkConfig::Modbus(m) => {
                    if m.address.parse::<std::net::SocketAddr>().is_err()
                        && m.address
                            .rsplit_once(':')
                            .is_none_or(|(_, p)| p.parse::<u16>().is_err())
                    {
                        out.push(format!("{at}.address: {:?} is not host:port", m.address));
                    }
                    let mut allowed = Vec::new();
                    for (i, a) in m.allow.iter().enumerate() {
                        match Target::parse(a) {
                            Ok(t) => allowed.push(t),
                            Err(e) => out.push(format!("{at}.allow.{i}: {e}")),
                        }
                    }
                    if m.writes.is_empty() {
                        out.push(format!("{at}.writes: name at least one write"));
                    }
                    for (i, w) in m.writes.iter().enumerate() {
                        let wat = format!("{at}.writes.{i}");
                        match Target::parse(&w.target) {
                            Err(e) => out.push(format!("{wat}.target: {e}")),
                            Ok(t) => {
                                if !allowed.contains(&t) {
                                    out.push(format!(
                                        "{wat}.target: {t} is not in this sink's allow list ({}); the gateway writes nothing else",
                                        list(&m.allow.iter().map(String::as_str).collect::<Vec<_>>())
                                    ));
                                }
                                if let Target::Coil(_) = t {
                                    if w.value == WriteValue::MaxSeverity {
                                        out.push(format!(
                                            "{wat}.value: a coil holds 0 or 1; \"max_severity\" needs a holding register"
                                        ));
                                    }
                                    if w.on > 1 || w.off > 1 {
                                        out.push(format!("{wat}: a coil's on and off are 0 or 1"));
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("notify.routes.{i}");
            if r.sinks.is_empty() {
                out.push(format!("{at}.sinks: name at least one sink"));
            }
            for (j, s) in r.sinks.iter().enumerate() {
                if !self.sinks.contains_key(s) {
                    let names: Vec<&str> = self.sinks.keys().map(String::as_str).collect();
                    out.push(format!(
                        "{at}.sinks.{j}: {s:?} is not in [notify.sinks] (there: {})",
                        list(&names)
                    ));
                }
            }
            if !(1..=5).contains(&r.min_severity) {
                out.push(format!(
                    "{at}.min_severity: {} is not a severity; use 1..5",
                    r.min_severity
                ));
            }
        }
        out
    }

    /// What is allowed but most likely a mistake: a sink no route names (it gets
    /// no cursor and is never used), a route's device or group that matches no
    /// device (yet: a reload may add one).
    pub fn warnings(&self, devices: &[&str], groups: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        for name in self.sinks.keys() {
            if !self.routes.iter().any(|r| r.sinks.contains(name)) {
                out.push(format!(
                    "notify.sinks.{name}: no [[notify.routes]] entry names this sink, so it is not used"
                ));
            }
        }
        for (i, r) in self.routes.iter().enumerate() {
            let at = format!("notify.routes.{i}");
            for (j, d) in r.devices.iter().enumerate() {
                let known = match d.strip_suffix('*') {
                    Some(prefix) => devices.iter().any(|x| x.starts_with(prefix)),
                    None => devices.contains(&d.as_str()),
                };
                if !known {
                    out.push(format!(
                        "{at}.devices.{j}: no device matches {d:?} (devices: {})",
                        list(devices)
                    ));
                }
            }
            for (j, g) in r.groups.iter().enumerate() {
                if !groups.contains(&g.as_str()) {
                    out.push(format!(
                        "{at}.groups.{j}: no device is in group {g:?} (groups: {})",
                        list(groups)
                    ));
                }
            }
        }
        out
    }
}

fn check_template(at: &str, t: &str, out: &mut Vec<String>) {
    if let Err(e) = template::check(t) {
        out.push(format!("{at}: {e}"));
    }
}

fn list(items: &[&str]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}
