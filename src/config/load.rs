//! Loading and checking: the file is checked with spans (every problem, with its
//! line), then figment merges the `EDGEGW_<SECTION>__<KEY>` environment overrides
//! (not the variables the file names as secrets), relative paths are made relative
//! to the config file, then the semantic checks run across config and profiles.

use super::*;
use crate::diag::{deserialize_all, Diagnostic, FieldPath, SourceFile};
use crate::profiles::{self, LoadedProfile};
use figment::providers::{Env, Serialized};
use figment::Figment;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use toml::de::DeValue;

mod checks;

use checks::check_config;

/// A config with every profile it uses, plus whatever was wrong with the rest.
#[derive(Debug)]
pub struct Loaded {
    pub config: GatewayConfig,
    pub config_path: PathBuf,
    /// Profiles by name, for the devices that can run.
    pub profiles: BTreeMap<String, LoadedProfile>,
    /// Devices that are enabled and whose profile and transport are valid.
    pub runnable: Vec<DeviceConfig>,
    /// Every problem found; devices with errors are left out of `runnable`.
    pub diags: Vec<Diagnostic>,
}

/// The result of `edgegw check`.
#[derive(Debug, Default)]
pub struct CheckReport {
    pub diags: Vec<Diagnostic>,
    pub files: Vec<PathBuf>,
    /// Whether `run` (and a reload) would take this config: the same rule as
    /// [`load`] — an error in the config file itself refuses it; a bad profile only
    /// leaves out the devices that use it.
    pub startable: bool,
    /// Enabled devices that would not run (a problem in their entry or profile).
    pub left_out: Vec<String>,
}

impl CheckReport {
    pub fn errors(&self) -> usize {
        self.diags.iter().filter(|d| d.is_error()).count()
    }
}

/// Loads the config for running. Errors in the file itself are fatal (`Err` with all
/// of them); a device with a bad profile is reported and left out, the rest runs.
pub fn load(path: &Path) -> Result<Loaded, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let Some(text) = SourceFile::read_text(path, &mut diags) else {
        return Err(diags);
    };
    let file = SourceFile::parse(path, &text, &mut diags);
    let Some(config) = parse_config(&file, &mut diags) else {
        return Err(diags);
    };
    let mut profiles = BTreeMap::new();
    let runnable = check_config(&file, &config, &mut profiles, &mut diags);
    let fatal = diags.iter().any(|d| d.is_error() && d.file == file.path);
    if fatal {
        return Err(diags);
    }
    Ok(Loaded {
        config,
        config_path: path.to_path_buf(),
        profiles,
        runnable,
        diags,
    })
}

/// `edgegw check`: the config, every profile it references and every profile file in
/// the profile directory; all problems at once.
pub fn check_all(path: &Path) -> CheckReport {
    let mut report = CheckReport::default();
    report.files.push(path.to_path_buf());
    let Some(text) = SourceFile::read_text(path, &mut report.diags) else {
        return report;
    };
    let file = SourceFile::parse(path, &text, &mut report.diags);
    let Some(config) = parse_config(&file, &mut report.diags) else {
        return report;
    };
    let mut profiles = BTreeMap::new();
    let runnable = check_config(&file, &config, &mut profiles, &mut report.diags);
    report.startable = !report
        .diags
        .iter()
        .any(|d| d.is_error() && d.file == file.path);
    report.left_out = config
        .devices
        .iter()
        .filter(|d| d.enabled && !runnable.iter().any(|r| r.id == d.id))
        .map(|d| d.id.clone())
        .collect();
    let dir = profile_dir(&file.path, &config);
    let checked: BTreeSet<PathBuf> = profiles.values().map(|p| p.path.clone()).collect();
    report.files.extend(checked.iter().cloned());
    if let Ok(files) = profiles::profile_files(&dir) {
        for f in files {
            if checked.contains(&f) || report.diags.iter().any(|d| d.file == f) {
                continue;
            }
            report.files.push(f.clone());
            profiles::load_profile(&f, &mut report.diags);
        }
    }
    report
}

/// The profile directory, relative paths taken from the config file's directory.
pub fn profile_dir(config_path: &Path, config: &GatewayConfig) -> PathBuf {
    let dir = &config.gateway.profile_dir;
    if dir.is_absolute() {
        dir.clone()
    } else {
        config_path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(dir)
    }
}

/// The prefix of our environment variables.
const ENV_PREFIX: &str = "EDGEGW_";

/// Environment variables with our prefix that are not config overrides.
const NOT_OVERRIDES: &[&str] = &["CONFIG", "LOG_FORMAT"];

/// The config's own environment overrides: `EDGEGW_<SECTION>__<KEY>` (every setting is
/// in a section, so an override always has `__`), except the variables the config
/// names as secrets (`password = { env = "EDGEGW_REDIS_PASSWORD" }`): those hold a
/// value for a setting, they are not settings.
fn env_overrides(file: &SourceFile) -> Env {
    let secrets: Vec<String> = secret_variables(file)
        .into_iter()
        .filter_map(|v| {
            let prefix = v.get(..ENV_PREFIX.len())?;
            prefix
                .eq_ignore_ascii_case(ENV_PREFIX)
                .then(|| v[ENV_PREFIX.len()..].to_string())
        })
        .collect();
    Env::prefixed(ENV_PREFIX)
        .ignore(NOT_OVERRIDES)
        .filter(move |key| {
            key.as_str().contains("__") && !secrets.iter().any(|s| s.as_str() == key)
        })
        .split("__")
}

/// Every environment variable the file names as a secret (`{ env = "VAR" }`, wherever
/// it is: upstreams, brokers, S3 keys, the status token).
fn secret_variables(file: &SourceFile) -> Vec<String> {
    fn walk(v: &DeValue<'_>, out: &mut Vec<String>) {
        match v {
            DeValue::Table(t) => {
                if let (1, Some(var)) = (t.len(), t.get("env")) {
                    if let DeValue::String(var) = var.get_ref() {
                        out.push(var.to_string());
                    }
                }
                for v in t.values() {
                    walk(v.get_ref(), out);
                }
            }
            DeValue::Array(a) => {
                for v in a.iter() {
                    walk(v.get_ref(), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(file.root_value().get_ref(), &mut out);
    out
}

/// Makes the paths of the gateway's own files absolute, a relative one taken from the
/// config file's directory (as `profile_dir` is), once, so that the daemon, `check`
/// and the CLI tools find the same outbox and model cache wherever they are started.
fn resolve_paths(c: &mut GatewayConfig, config_path: &Path) {
    let config_path = std::path::absolute(config_path).unwrap_or_else(|_| config_path.into());
    let dir = config_path.parent().unwrap_or_else(|| Path::new("/"));
    let resolve = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    resolve(&mut c.gateway.state_dir);
    if let Some(p) = c.outbox.path.as_mut() {
        resolve(p);
    }
    if let Some(p) = c.models.cache_dir.as_mut() {
        resolve(p);
    }
}

fn parse_config(file: &SourceFile, diags: &mut Vec<Diagnostic>) -> Option<GatewayConfig> {
    let mut config = parse_with_overrides(file, diags)?;
    resolve_paths(&mut config, &file.path);
    Some(config)
}

fn parse_with_overrides(file: &SourceFile, diags: &mut Vec<Diagnostic>) -> Option<GatewayConfig> {
    let before = diags.iter().filter(|d| d.is_error()).count();
    let from_file: Option<GatewayConfig> =
        deserialize_all(file, &FieldPath::root(), file.root_value(), diags);
    if from_file.is_none() || diags.iter().filter(|d| d.is_error()).count() > before {
        // Repaired (offending entries dropped): good enough for the semantic checks
        // to report the rest, never good enough to run.
        return from_file;
    }
    // The file is fine on its own; now apply environment overrides.
    // One TOML stack: the file is read by our `toml` (the same parser and version
    // as the diagnostics), and figment only layers the environment over it (its own
    // TOML provider would bring a second, older toml crate).
    let table: toml::Table = match toml::from_str(file.text) {
        Ok(t) => t,
        Err(e) => {
            diags.push(file.diag(
                &FieldPath::root(),
                format!("cannot read the file again: {e}"),
            ));
            return None;
        }
    };
    let figment = Figment::new()
        .merge(Serialized::defaults(table))
        .merge(env_overrides(file));
    match figment.extract::<GatewayConfig>() {
        Ok(c) => Some(c),
        Err(errors) => {
            for e in errors {
                let key = e.path.join(".");
                let source = e
                    .metadata
                    .as_ref()
                    .map(|m| m.name.to_string())
                    .unwrap_or_else(|| "environment".into());
                let var = format!("EDGEGW_{}", e.path.join("__").to_uppercase());
                diags.push(Diagnostic::file_error(
                    &file.path,
                    format!("{key}: {} (from {source}, e.g. {var})", e.kind),
                ));
            }
            None
        }
    }
}

/// A profile reference is a path when it ends in `.toml`, else a name in the dir.
fn resolve_profile(dir: &Path, reference: &str) -> PathBuf {
    if reference.ends_with(".toml") {
        let p = PathBuf::from(reference);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    } else {
        dir.join(format!("{reference}.toml"))
    }
}

/// The profile name a device reference resolves to (the file stem).
pub(crate) fn profile_name(reference: &str) -> String {
    Path::new(reference)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| reference.to_string())
}
