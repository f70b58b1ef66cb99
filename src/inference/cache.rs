//! The model cache the daemon owns: `<cache>/<name>/<version>/{model.onnx,manifest.json}`,
//! staging directories for downloads in `<cache>/.staging/`, and `<cache>/state.json`
//! (which bundle is active per sensor type, and the ETag of the index it came from).
//!
//! A bundle only enters `<name>/<version>/` by an atomic rename of a staging directory
//! whose contents already passed every check, so a crash leaves either the whole
//! bundle or none of it. Names and versions are single path segments from a strict
//! alphabet, so nothing from the bucket can point outside the cache, and bundles are
//! only ever loaded from directories under it (never through a symlink).
//!
//! It does no network I/O and does not decide what is active: that is `sync.rs`.

use super::{InferenceError, ModelBundle};
use crate::record::SensorType;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the cache cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("model cache {path}: {source}", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model cache: {what} {value:?} is not a valid bundle {what}: use letters, digits, `.`, `_`, `-` (at most 100, not starting with `.`)")]
    BadName { what: &'static str, value: String },
    #[error("model cache {path}: another process writes it (a running gateway syncs this cache itself, every [models.s3] interval_secs; `edgegw models sync` is for a stopped gateway)", path = path.display())]
    Busy { path: PathBuf },
}

/// The one-writer lock of a cache directory (`<cache>/.lock`, an advisory `flock`):
/// held by the daemon's sync task for its whole life and by `edgegw models sync` for
/// its one sync, so the two never write the same cache. Released on drop, and by
/// the kernel when the process dies (even by SIGKILL).
#[derive(Debug)]
pub struct CacheLock {
    _file: std::fs::File,
}

impl CacheLock {
    /// Takes the lock of `dir` (created if needed). `wait`: block until the holder
    /// lets go; otherwise fail with [`CacheError::Busy`].
    pub fn acquire(dir: &Path, wait: bool) -> Result<CacheLock, CacheError> {
        let io = |source| CacheError::Io {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(".lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io)?;
        // rustix's flock (std's File::lock is newer than our rust-version, 1.85).
        use rustix::fs::{flock, FlockOperation};
        let op = if wait {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::NonBlockingLockExclusive
        };
        match flock(&file, op) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(CacheError::Busy {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) => return Err(io(e.into())),
        }
        Ok(CacheLock { _file: file })
    }
}

/// A bundle reference: `name@version`. Other fields (in a newer index) are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BundleRef {
    pub name: String,
    pub version: String,
}

impl std::fmt::Display for BundleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.name, self.version)
    }
}

impl BundleRef {
    /// Checks that both parts are safe single path segments.
    pub fn check(&self) -> Result<(), CacheError> {
        check_segment("name", &self.name)?;
        check_segment("version", &self.version)
    }
}

/// What survives a restart: the active bundle per sensor type and the index ETag
/// they were derived from (absent when the last sync did not finish).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheState {
    #[serde(default)]
    pub index_etag: Option<String>,
    #[serde(default)]
    pub active: BTreeMap<SensorType, BundleRef>,
}

/// `true` when `s` can be a bundle name or version (and so a path segment).
pub fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn check_segment(what: &'static str, value: &str) -> Result<(), CacheError> {
    if valid_segment(value) {
        Ok(())
    } else {
        Err(CacheError::BadName {
            what,
            value: value.to_string(),
        })
    }
}

/// Orders versions by their dot-separated parts, numerically where both are numbers
/// (`1.10.0` > `1.9.2`), else as text.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let mut pa = a.split(['.', '-']);
    let mut pb = b.split(['.', '-']);
    loop {
        match (pa.next(), pb.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (x.parse::<u64>(), y.parse::<u64>()) {
                    (Ok(x), Ok(y)) => x.cmp(&y),
                    _ => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

/// The cache directory.
#[derive(Debug, Clone)]
pub struct ModelCache {
    dir: PathBuf,
}

const STAGING: &str = ".staging";
const STATE: &str = "state.json";
/// Staging directories older than this are leftovers of a crash.
const STAGING_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

impl ModelCache {
    /// Creates the directory if needed and clears staging leftovers of a crash (older
    /// than an hour, so that `edgegw models sync` next to a running daemon does not
    /// pull a download from under it).
    pub fn open(dir: impl Into<PathBuf>) -> Result<ModelCache, CacheError> {
        let dir = dir.into();
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        let staging = dir.join(STAGING);
        std::fs::create_dir_all(&staging).map_err(io(&staging))?;
        for e in std::fs::read_dir(&staging).map_err(io(&staging))?.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= STAGING_MAX_AGE);
            if old {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
        Ok(ModelCache { dir })
    }

    /// Opens an existing cache for reading only (`edgegw models list`).
    pub fn at(dir: impl Into<PathBuf>) -> ModelCache {
        ModelCache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<cache>/<name>/<version>`; the reference must be checked.
    pub fn bundle_dir(&self, r: &BundleRef) -> Result<PathBuf, CacheError> {
        r.check()?;
        Ok(self.dir.join(&r.name).join(&r.version))
    }

    /// Whether the bundle's directory exists (a real directory, not a symlink).
    pub fn contains(&self, r: &BundleRef) -> bool {
        self.bundle_dir(r)
            .ok()
            .and_then(|d| std::fs::symlink_metadata(d).ok())
            .is_some_and(|m| m.is_dir())
    }

    /// Loads and checks a cached bundle (CPU work: call from a blocking thread).
    pub fn load(&self, r: &BundleRef) -> Result<ModelBundle, InferenceError> {
        let dir = self
            .bundle_dir(r)
            .map_err(|e| InferenceError::ManifestField {
                bundle: r.to_string(),
                field: "name",
                reason: e.to_string(),
            })?;
        let meta = std::fs::symlink_metadata(&dir).map_err(|source| InferenceError::Io {
            bundle: r.to_string(),
            path: dir.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(InferenceError::Io {
                bundle: r.to_string(),
                path: dir,
                source: std::io::Error::other("not a directory (symlinks are not followed)"),
            });
        }
        super::isolate::check(&dir)?;
        let bundle = ModelBundle::load_dir(&dir)?;
        let m = bundle.manifest();
        if m.name != r.name || m.version != r.version {
            return Err(InferenceError::ManifestField {
                bundle: dir.display().to_string(),
                field: "name",
                reason: format!(
                    "the manifest says {}@{} but the bundle is cached as {r}",
                    m.name, m.version
                ),
            });
        }
        Ok(bundle)
    }

    /// Every `<name>/<version>` directory, sorted by name then version (oldest first).
    pub fn list(&self) -> Vec<BundleRef> {
        let mut out = Vec::new();
        let Ok(names) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        for n in names.flatten() {
            let name = n.file_name().to_string_lossy().into_owned();
            if !valid_segment(&name) || !n.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let Ok(versions) = std::fs::read_dir(n.path()) else {
                continue;
            };
            for v in versions.flatten() {
                let version = v.file_name().to_string_lossy().into_owned();
                if valid_segment(&version) && v.file_type().is_ok_and(|t| t.is_dir()) {
                    out.push(BundleRef {
                        name: name.clone(),
                        version,
                    });
                }
            }
        }
        out.sort_by(|a, b| {
            a.name
                .cmp(&b.name)
                .then_with(|| compare_versions(&a.version, &b.version))
        });
        out
    }

    /// The newest cached version of `name`.
    pub fn newest(&self, name: &str) -> Option<BundleRef> {
        self.list().into_iter().rev().find(|r| r.name == name)
    }

    /// A fresh staging directory (removed when dropped unless installed).
    pub fn staging(&self) -> Result<tempfile::TempDir, CacheError> {
        let parent = self.dir.join(STAGING);
        std::fs::create_dir_all(&parent).map_err(|source| CacheError::Io {
            path: parent.clone(),
            source,
        })?;
        tempfile::Builder::new()
            .prefix("dl-")
            .tempdir_in(&parent)
            .map_err(|source| CacheError::Io {
                path: parent,
                source,
            })
    }

    /// Moves a checked staging directory to `<name>/<version>` with one rename. When
    /// the bundle is already there (another sync got it first), the staging copy is
    /// dropped and the existing one stays.
    pub fn install(
        &self,
        staging: tempfile::TempDir,
        r: &BundleRef,
    ) -> Result<PathBuf, CacheError> {
        let target = self.bundle_dir(r)?;
        let parent = self.dir.join(&r.name);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CacheError::Io { path, source }
        };
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        if self.contains(r) {
            return Ok(target);
        }
        let from = staging.keep();
        if let Err(e) = std::fs::rename(&from, &target) {
            let _ = std::fs::remove_dir_all(&from);
            if self.contains(r) {
                return Ok(target);
            }
            return Err(CacheError::Io {
                path: target,
                source: e,
            });
        }
        // Make the rename durable before the bundle is reported active.
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        Ok(target)
    }

    /// Removes a cached bundle that no longer passes its checks.
    pub fn remove(&self, r: &BundleRef) {
        if let Ok(dir) = self.bundle_dir(r) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// The saved state; default when there is none or it is unreadable.
    pub fn read_state(&self) -> CacheState {
        std::fs::read(self.dir.join(STATE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Saves the state atomically (temporary file, fsync, rename).
    pub fn write_state(&self, state: &CacheState) -> Result<(), CacheError> {
        let path = self.dir.join(STATE);
        let io = |source| CacheError::Io {
            path: path.clone(),
            source,
        };
        let json = serde_json::to_vec_pretty(state).map_err(|e| io(std::io::Error::other(e)))?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir).map_err(io)?;
        std::io::Write::write_all(&mut tmp, &json).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(&path).map_err(|e| io(e.error))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_refuse_paths() {
        for bad in ["", ".", "..", "../x", "a/b", ".hidden", "a b", "ä"] {
            assert!(!valid_segment(bad), "{bad:?}");
        }
        for good in ["vibration-default", "1.0.0", "2025-11-25_rc1"] {
            assert!(valid_segment(good), "{good:?}");
        }
    }

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(compare_versions("1.10.0", "1.9.2"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.1"), Ordering::Less);
        assert_eq!(compare_versions("2.0.0", "2.0.0"), Ordering::Equal);
    }

    #[test]
    fn install_is_a_rename_and_state_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ModelCache::open(dir.path().join("models")).unwrap();
        let r = BundleRef {
            name: "b".into(),
            version: "1.0.0".into(),
        };
        let st = cache.staging().unwrap();
        std::fs::write(st.path().join("x"), b"1").unwrap();
        let target = cache.install(st, &r).unwrap();
        assert!(target.join("x").is_file());
        assert_eq!(cache.list(), vec![r.clone()]);
        assert_eq!(cache.newest("b"), Some(r.clone()));
        let mut state = CacheState::default();
        state.active.insert(SensorType::Vibration, r);
        state.index_etag = Some("\"abc\"".into());
        cache.write_state(&state).unwrap();
        assert_eq!(cache.read_state(), state);
        // A fresh staging directory survives a second open (another process may be
        // downloading into it).
        let fresh = cache.staging().unwrap().keep();
        ModelCache::open(cache.dir()).unwrap();
        assert!(fresh.exists());
    }
}
