//! Secrets (passwords, API keys, S3 keys) are never written in the TOML itself: the
//! TOML names where to find them — an environment variable, a file, or a systemd
//! credential (`LoadCredential=` puts it under `$CREDENTIALS_DIRECTORY`).
//!
//! An environment variable named as a secret is never taken for a config override,
//! even with the `EDGEGW_` prefix (`{ env = "EDGEGW_REDIS_PASSWORD" }` is fine).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::PathBuf;

/// Where a secret lives. `Debug` never shows the secret, only where it comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `{ env = "EDGEGW_PG_PASSWORD" }`
    Env(String),
    /// `{ file = "/etc/edgegw/pg-password" }` (trailing newline stripped)
    File(PathBuf),
    /// `{ credential = "pg-password" }`: `$CREDENTIALS_DIRECTORY/pg-password`
    Credential(String),
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} is not set (the config names it as a secret)")]
    EnvMissing(String),
    #[error("cannot read secret file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("systemd credential {0:?} requested but $CREDENTIALS_DIRECTORY is not set (add LoadCredential= to the unit)")]
    NoCredentialsDirectory(String),
}

impl SecretRef {
    /// Reads the secret now. The error names where it looked, never the value.
    pub fn resolve(&self) -> Result<String, SecretError> {
        match self {
            SecretRef::Env(var) => {
                std::env::var(var).map_err(|_| SecretError::EnvMissing(var.clone()))
            }
            SecretRef::File(path) => read_trimmed(path),
            SecretRef::Credential(name) => {
                let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                    .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone()))?;
                read_trimmed(&PathBuf::from(dir).join(name))
            }
        }
    }

    /// Where the secret comes from, for messages.
    pub fn describe(&self) -> String {
        match self {
            SecretRef::Env(v) => format!("environment variable {v}"),
            SecretRef::File(p) => format!("file {}", p.display()),
            SecretRef::Credential(c) => format!("systemd credential {c}"),
        }
    }
}

fn read_trimmed(path: &PathBuf) -> Result<String, SecretError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|source| SecretError::File {
            path: path.clone(),
            source,
        })
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretRef({})", self.describe())
    }
}

const HOW: &str = "secrets are never read from the config file itself: write \
{ env = \"VARIABLE\" }, { file = \"/path/to/file\" } or { credential = \"name\" } (systemd LoadCredential=)";

impl<'de> Deserialize<'de> for SecretRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = SecretRef;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(HOW)
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<SecretRef, E> {
                Err(E::custom(HOW))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretRef, A::Error> {
                let mut out: Option<SecretRef> = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value: String = map.next_value()?;
                    let r = match key.as_str() {
                        "env" => SecretRef::Env(value),
                        "file" => SecretRef::File(PathBuf::from(value)),
                        "credential" => SecretRef::Credential(value),
                        other => {
                            return Err(de::Error::custom(format!(
                                "unknown key `{other}` in a secret; {HOW}"
                            )))
                        }
                    };
                    if out.is_some() {
                        return Err(de::Error::custom(format!(
                            "a secret has exactly one source; {HOW}"
                        )));
                    }
                    out = Some(r);
                }
                out.ok_or_else(|| de::Error::custom(HOW))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_string_is_refused_with_advice() {
        #[derive(Deserialize, Debug)]
        struct T {
            #[allow(dead_code)]
            password: SecretRef,
        }
        let err = toml::from_str::<T>("password = \"hunter2\"").unwrap_err();
        assert!(
            err.message().contains("never read from the config file"),
            "{err}"
        );
        // `edgegw check` prints the message, which must not echo the value.
        assert!(!err.message().contains("hunter2"), "{}", err.message());
        let ok: T = toml::from_str("password = { env = \"PG_PW\" }").unwrap();
        assert_eq!(
            format!("{:?}", ok.password),
            "SecretRef(environment variable PG_PW)"
        );
    }

    #[test]
    fn resolves_env_and_file_without_showing_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "s3cret\n").unwrap();
        assert_eq!(SecretRef::File(p.clone()).resolve().unwrap(), "s3cret");
        let missing = SecretRef::Env("EDGEGW_TEST_SURELY_UNSET_VAR".into())
            .resolve()
            .unwrap_err();
        assert!(missing.to_string().contains("EDGEGW_TEST_SURELY_UNSET_VAR"));
        let debug = format!("{:?}", SecretRef::File(p));
        assert!(!debug.contains("s3cret"));
    }
}
