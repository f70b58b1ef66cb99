//! The gateway config (`/etc/edgegw/edgegw.toml`): serde structs, loading with
//! figment (the TOML file, then environment overrides `EDGEGW_<SECTION>__<KEY>`, with
//! `__` between nested keys; an `EDGEGW_` variable without `__`, or one the file names
//! as a secret, is no override), and validation that reports every problem with
//! file:line:column.
//!
//! The sections of the sources (`[devices.<transport>]`, `[serial_ports]`,
//! `[mqtt_brokers]`) are owned by their folders (`sources/<kind>/config.rs`) and
//! re-exported here; this module ties them into [`GatewayConfig`] and [`Transport`].
//!
//! `config/edgegw.toml` in the repository documents every option; keep it in step.

mod load;
mod secret;
pub(crate) mod upstreams;

pub(crate) use load::profile_name;
pub use load::{check_all, load, CheckReport, Loaded};
pub use secret::{SecretError, SecretRef};
pub use upstreams::{
    Delivery, DeliveryConfig, HttpUpstream, MqttUpstream, RedisUpstream, TimescaleUpstream,
    UpstreamsConfig,
};

pub use crate::sources::modbus::config::{ModbusRtuTransport, ModbusTcpTransport};
pub use crate::sources::mqtt::config::{MqttBrokerConfig, MqttTransport};
pub use crate::sources::serial::config::{FlowControl, Parity, SerialPortConfig, SerialTransport};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Default location of the config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/edgegw/edgegw.toml";

/// The whole gateway config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Who this gateway is and where its files are.
    pub gateway: GatewaySection,
    /// The sensors this gateway reads.
    #[serde(default)]
    pub devices: Vec<DeviceConfig>,
    /// Serial ports by name: RS-485 buses for Modbus RTU, or ports of ASCII sensors.
    #[serde(default)]
    pub serial_ports: BTreeMap<String, SerialPortConfig>,
    /// MQTT brokers that sensors publish to, by name.
    #[serde(default)]
    pub mqtt_brokers: BTreeMap<String, MqttBrokerConfig>,
    /// Windows, features, detection, alerts and summaries.
    #[serde(default)]
    pub pipeline: crate::pipeline::PipelineSettings,
    /// Detection models.
    #[serde(default)]
    pub models: ModelsConfig,
    /// The SQLite store-and-forward buffer.
    #[serde(default)]
    pub outbox: crate::outbox::OutboxSettings,
    /// Where data goes: the Smart Maintenance cloud.
    #[serde(default)]
    pub upstreams: UpstreamsConfig,
    /// The local status and metrics listener.
    #[serde(default)]
    pub http: HttpConfig,
    /// Local notifications (webhook, MQTT, email, Modbus write) that do not need
    /// the cloud.
    #[serde(default)]
    pub notify: crate::notify::NotifyConfig,
    #[serde(default)]
    pub logging: LoggingConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Unique id of this gateway in the plant; part of every record key, so two
    /// gateways must never share one.
    pub id: String,
    /// Free text: plant, hall, line. Sent upstream as metadata.
    #[serde(default)]
    pub site: String,
    /// Where the outbox and model cache live (systemd `StateDirectory=`). A relative
    /// path is relative to the config file (made absolute when the config is loaded).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Directory of hardware profiles. A relative path is relative to the config file.
    #[serde(default = "default_profile_dir")]
    pub profile_dir: PathBuf,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/edgegw")
}

fn default_profile_dir() -> PathBuf {
    PathBuf::from("hardware-profiles")
}

fn yes() -> bool {
    true
}

/// One sensor (or one sensor head of a multi-channel transmitter).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceConfig {
    /// Unique device id; upstream sensor ids are `<id>.<channel>`.
    pub id: String,
    /// Hardware profile: a file stem in `gateway.profile_dir` (`acme-vt420`) or a path
    /// to a `.toml` file.
    pub profile: String,
    /// A disabled device is validated but not read.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// How often to poll (Modbus, serial query/response). MQTT and free-running
    /// serial sensors push on their own.
    #[serde(default = "default_poll_interval_ms")]
    pub poll_interval_ms: u64,
    /// Where the sensor is mounted; sent upstream as the sensor's location.
    #[serde(default)]
    pub location: String,
    /// A group of devices (a line, a hall) that `[[notify.routes]]` can name.
    pub group: Option<String>,
    /// Pin a model bundle for this device instead of choosing by sensor type.
    pub model: Option<ModelPin>,
    /// Facts about the machine at this measuring point (shaft speed, bearing, ISO
    /// 20816-3 group and foundation), for the physics that needs no training.
    #[serde(default)]
    pub machine: Option<crate::pipeline::settings::MachineSettings>,
    /// Per-device overrides of the `[pipeline]` detection settings (learning period,
    /// window, rolling window, envelope band).
    #[serde(default)]
    pub detection: Option<crate::pipeline::settings::DetectionOverrides>,
    /// Modbus TCP transport.
    pub modbus_tcp: Option<ModbusTcpTransport>,
    /// Modbus RTU transport (a unit on an RS-485 bus from `[serial_ports]`).
    pub modbus_rtu: Option<ModbusRtuTransport>,
    /// ASCII serial transport (a port from `[serial_ports]`).
    pub serial: Option<SerialTransport>,
    /// MQTT transport (a broker from `[mqtt_brokers]`).
    pub mqtt: Option<MqttTransport>,
}

fn default_poll_interval_ms() -> u64 {
    1000
}

/// The transport of a device, once validated (exactly one is set).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transport<'a> {
    ModbusTcp(&'a ModbusTcpTransport),
    ModbusRtu(&'a ModbusRtuTransport),
    Serial(&'a SerialTransport),
    Mqtt(&'a MqttTransport),
}

impl DeviceConfig {
    /// This device's detection settings, resolved against `[pipeline]`.
    pub fn detection_settings(
        &self,
        pipeline: &crate::pipeline::PipelineSettings,
    ) -> crate::pipeline::settings::DeviceDetection {
        crate::pipeline::settings::DeviceDetection::resolve(
            pipeline,
            self.detection.as_ref(),
            self.machine.as_ref(),
        )
    }

    /// The device's transport; `None` when the config sets none or several (which
    /// validation reports).
    pub fn transport(&self) -> Option<Transport<'_>> {
        let all = [
            self.modbus_tcp.as_ref().map(Transport::ModbusTcp),
            self.modbus_rtu.as_ref().map(Transport::ModbusRtu),
            self.serial.as_ref().map(Transport::Serial),
            self.mqtt.as_ref().map(Transport::Mqtt),
        ];
        let mut set = all.into_iter().flatten();
        match (set.next(), set.next()) {
            (Some(t), None) => Some(t),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPin {
    /// Bundle name, e.g. `vibration-default`.
    pub name: String,
    /// Exact version; absent = the newest cached version of that name.
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// CA certificate (PEM) that signed the server's certificate.
    pub ca_file: PathBuf,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key_file: Option<SecretRef>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    /// Where synced model bundles are cached; default `<state_dir>/models`. A
    /// relative path is relative to the config file.
    pub cache_dir: Option<PathBuf>,
    /// Where the cloud team publishes bundles. Absent: no sync; the cached bundles
    /// (if any) and the built-in defaults are used.
    pub s3: Option<ModelsS3Config>,
}

impl ModelsConfig {
    /// The cache directory: `cache_dir`, else `<state_dir>/models`.
    pub fn cache_dir(&self, state_dir: &std::path::Path) -> PathBuf {
        self.cache_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("models"))
    }

    /// Problems as `field.path: message` (the loader adds file and line).
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let Some(s3) = &self.s3 else {
            return problems;
        };
        let p = "models.s3";
        match reqwest::Url::parse(&s3.endpoint) {
            Err(e) => problems.push(format!("{p}.endpoint: {e}: expected a URL like https://s3.eu-central-1.amazonaws.com or http://127.0.0.1:9000")),
            Ok(u) => {
                if !matches!(u.scheme(), "http" | "https") {
                    problems.push(format!("{p}.endpoint: scheme `{}` is not supported; use https (or http on a trusted network)", u.scheme()));
                }
                if !u.username().is_empty() || u.password().is_some() {
                    problems.push(format!("{p}.endpoint: must not contain credentials; use [models.s3.credentials]"));
                }
                if u.host_str().is_none_or(str::is_empty) {
                    problems.push(format!("{p}.endpoint: has no host"));
                }
                if u.query().is_some() {
                    problems.push(format!("{p}.endpoint: must not have a query string"));
                }
            }
        }
        if s3.bucket.trim().is_empty() {
            problems.push(format!("{p}.bucket: must not be empty"));
        } else if !s3.path_style && s3.bucket.contains('.') && s3.endpoint.starts_with("https") {
            problems.push(format!("{p}.bucket: a bucket name with dots does not match the TLS certificate in virtual-host style; set path_style = true"));
        }
        if s3.prefix.starts_with('/') || s3.prefix.ends_with('/') || s3.prefix.contains("//") {
            problems.push(format!(
                "{p}.prefix: write it without leading or trailing `/` (e.g. \"edge/models\")"
            ));
        }
        if s3.region.trim().is_empty() {
            problems.push(format!(
                "{p}.region: must not be empty (S3-compatible servers usually accept us-east-1)"
            ));
        }
        if s3.interval_secs < 60 {
            problems.push(format!("{p}.interval_secs: must be at least 60 seconds"));
        }
        if !(1..=600).contains(&s3.timeout_secs) {
            problems.push(format!("{p}.timeout_secs: must be 1 to 600 seconds"));
        }
        if !(1..=1024).contains(&s3.max_bundle_mb) {
            problems.push(format!("{p}.max_bundle_mb: must be 1 to 1024 MB"));
        }
        let c = &s3.credentials;
        match (&c.access_key_id, &c.secret_access_key, &c.file) {
            (Some(_), Some(_), None) | (None, None, Some(_)) => {}
            (None, None, None) => {}
            (Some(_), None, _) | (None, Some(_), _) => problems.push(format!(
                "{p}.credentials: set both access_key_id and secret_access_key"
            )),
            (Some(_), Some(_), Some(_)) => problems.push(format!(
                "{p}.credentials: set either the keys or `file`, not both"
            )),
        }
        if c.profile.is_some() && c.file.is_none() {
            problems.push(format!("{p}.credentials.profile: only used with `file`"));
        }
        if s3.ca_file.is_some() && !s3.endpoint.starts_with("https://") {
            problems.push(format!(
                "{p}.ca_file: set, but the endpoint is not https://, so no TLS is used"
            ));
        }
        upstreams::pem_file_problem(
            &format!("{p}.ca_file"),
            s3.ca_file.as_deref(),
            &mut problems,
        );
        problems
    }
}

/// The S3 bucket (any S3-compatible server) that model bundles are synced from. The
/// layout inside it is described in docs/models.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsS3Config {
    /// Base URL of the S3 API, without the bucket: `https://s3.eu-central-1.amazonaws.com`,
    /// `http://minio.plant.local:9000`.
    pub endpoint: String,
    pub bucket: String,
    /// Key prefix of the model area in the bucket (`<prefix>/index.json`); "" = the
    /// bucket root.
    #[serde(default = "default_models_prefix")]
    pub prefix: String,
    /// Signing region; S3-compatible servers (MinIO, Garage, Ceph) usually want
    /// `us-east-1` or their configured region name.
    #[serde(default = "default_models_region")]
    pub region: String,
    /// `true`: `endpoint/bucket/key` (MinIO, Ceph, Garage, dotted bucket names);
    /// `false`: `bucket.endpoint/key` (AWS's virtual-host style).
    #[serde(default)]
    pub path_style: bool,
    /// Where the keys come from. Default: the environment variables
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[serde(default)]
    pub credentials: S3CredentialsConfig,
    /// Time between syncs; each wait is jittered by +-10 % so a fleet does not hit the
    /// bucket in step. The cloud's loader caches for 60 minutes; so do we by default.
    #[serde(default = "default_models_interval_secs")]
    pub interval_secs: u64,
    /// Limit for one request (connect, headers and body); a hung server never stalls
    /// the sync for longer.
    #[serde(default = "default_models_timeout_secs")]
    pub timeout_secs: u64,
    /// A bundle (model.onnx) larger than this is refused while downloading.
    #[serde(default = "default_max_bundle_mb")]
    pub max_bundle_mb: u64,
    /// CA certificate (PEM) that signed an https endpoint's certificate (a plant's
    /// own MinIO or Garage); then only this CA is trusted. Default: the system's
    /// trusted roots.
    pub ca_file: Option<PathBuf>,
}

fn default_models_prefix() -> String {
    "edge-models".into()
}

fn default_models_region() -> String {
    "us-east-1".into()
}

fn default_models_interval_secs() -> u64 {
    3600
}

fn default_models_timeout_secs() -> u64 {
    30
}

fn default_max_bundle_mb() -> u64 {
    64
}

/// S3 keys: both as secrets (`{ env = .. }`, `{ file = .. }`, `{ credential = .. }`),
/// or an AWS shared-credentials file. Nothing set: `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY` from the environment.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3CredentialsConfig {
    /// The access key id (treated as a secret too: never logged).
    pub access_key_id: Option<SecretRef>,
    pub secret_access_key: Option<SecretRef>,
    /// An AWS shared-credentials file (`~/.aws/credentials` format) instead of the
    /// two secrets; readable only by the gateway's user.
    pub file: Option<PathBuf>,
    /// The section of `file` to use; default `default`.
    pub profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Address of the status and metrics listener (`/healthz`, `/readyz`,
    /// `/metrics`). Keep it on 127.0.0.1 unless a token is set.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// Bearer token required when listening beyond loopback.
    pub token: Option<SecretRef>,
    /// Switch the listener off entirely.
    #[serde(default = "yes")]
    pub enabled: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: default_http_listen(),
            token: None,
            enabled: true,
        }
    }
}

impl HttpConfig {
    /// Problems as `field.path: message`, for `edgegw check`.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !self.enabled {
            return problems;
        }
        let valid = match self.listen.rsplit_once(':') {
            _ if self.listen.parse::<std::net::SocketAddr>().is_ok() => true,
            // A host name (`localhost:9187`); an IPv6 address needs brackets.
            Some((host, port)) => {
                !host.is_empty() && !host.contains(':') && port.parse::<u16>().is_ok()
            }
            None => false,
        };
        if !valid {
            problems.push(format!(
                "http.listen: {:?} is not an address to listen on; use IP:port, e.g. \
                 \"127.0.0.1:9187\" (loopback, the default), \"0.0.0.0:9187\" with \
                 http.token set, or \"[::1]:9187\"",
                self.listen
            ));
        }
        problems
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:9187".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// Level or tracing filter (`info`, `edgegw=debug,info`); `RUST_LOG` wins.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `auto` (human on a terminal, JSON otherwise), `human` or `json`;
    /// `--log-format` wins.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_log_level(),
            format: LogFormat::Auto,
        }
    }
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Auto,
    Human,
    Json,
}
