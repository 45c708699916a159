//! The model repository: finds models and versions on disk, loads them, hot-swaps changes, serves lookups.
//!
//! Layout: `DIR/<model>/<version>/model.onnx` with optional per-model settings: MLServer's
//! `DIR/<model>/model-settings.json` (fields used: `name`, `platform`, `max_batch_size`,
//! `max_batch_time` in seconds, `parallel_workers` as instance count, `parameters.version` to pin a
//! version) or, when there is none, Triton's `DIR/<model>/config.pbtxt` (see
//! [`crate::triton_config`]). Without a pin only the highest numeric version is served.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::backend::{Backend, LoadOptions, Signature};
use crate::batcher::{BatchPolicy, Batcher};
use crate::metrics::{Metrics, ModelLabels, ModelMetrics};

/// MLServer's `model-settings.json`, the fields skiff uses.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ModelSettings {
    pub name: Option<String>,
    pub platform: Option<String>,
    pub max_batch_size: Option<usize>,
    /// Seconds, as in MLServer.
    pub max_batch_time: Option<f64>,
    pub parallel_workers: Option<usize>,
    #[serde(default)]
    pub parameters: Option<SettingsParameters>,
    /// Most rows one request may carry: Triton's `max_batch_size` (config.pbtxt), which bounds
    /// every request whether or not requests are merged. MLServer's field bounds merging only.
    #[serde(skip)]
    pub max_request_rows: Option<usize>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct SettingsParameters {
    pub version: Option<String>,
}

/// Server-wide defaults for loading and batching.
#[derive(Debug, Clone)]
pub struct ServingConfig {
    pub intra_op_threads: usize,
    pub instances: usize,
    pub max_batch_size: usize,
    pub batch_delay: Duration,
    pub queue_capacity: usize,
}

/// One loaded model version, ready to take requests.
pub struct Served {
    pub name: String,
    pub version: String,
    pub platform: String,
    pub signature: Signature,
    pub batcher: Batcher,
    pub metrics: ModelMetrics,
    /// See [`ModelSettings::max_request_rows`].
    pub max_request_rows: Option<usize>,
    pub instances: usize,
    /// The version was pinned by the model's settings rather than the latest.
    pub pinned: bool,
    /// The engine's name (`onnxruntime`, `tract`).
    pub backend: &'static str,
}

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// `DIR/<model>/` holding version directories.
    Directory(PathBuf),
    /// `--model name=path`: a single file served as version 1.
    File(PathBuf),
}

/// A file's identity for change detection.
type Stamp = Vec<(PathBuf, Option<SystemTime>, u64)>;

/// Model lifecycle states reported by the repository index.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelState {
    /// Found, its first load not finished yet.
    Loading,
    Ready,
    Unavailable(String),
    Unloaded,
}

impl ModelState {
    /// The state and reason as the repository index reports them (Triton's words).
    pub fn index_state(&self) -> (&'static str, String) {
        match self {
            ModelState::Loading => ("LOADING", String::new()),
            ModelState::Ready => ("READY", String::new()),
            ModelState::Unavailable(r) => ("UNAVAILABLE", r.clone()),
            ModelState::Unloaded => ("UNAVAILABLE", "unloaded".into()),
        }
    }
}

struct Entry {
    source: Source,
    versions: BTreeMap<u64, Arc<Served>>,
    stamps: HashMap<u64, Stamp>,
    state: ModelState,
    /// Unloaded through the API: polling leaves it alone until loaded again.
    pinned_unloaded: bool,
    /// The settings problem last logged while older versions kept serving, so a scan every
    /// second does not repeat it.
    settings_problem: Option<String>,
}

impl Entry {
    fn new(source: Source) -> Entry {
        Entry {
            source,
            versions: BTreeMap::new(),
            stamps: HashMap::new(),
            state: ModelState::Loading,
            pinned_unloaded: false,
            settings_problem: None,
        }
    }
}

/// Which model a request that names none goes to; see [`Repository::default_model`].
#[derive(Debug, PartialEq)]
pub enum DefaultModel {
    One(String),
    NoModels,
    /// Several models, none serving.
    NoneReady,
    Several,
}

/// One row of the repository index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    pub version: Option<String>,
    pub state: ModelState,
}

/// Why a lookup or repository action failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RepositoryError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("model {model:?} has no version {version:?} being served")]
    UnknownVersion { model: String, version: String },
    #[error("model {model:?} is not ready: {reason}")]
    NotReady { model: String, reason: String },
    #[error("cannot load model {model:?}: {reason}")]
    Load { model: String, reason: String },
}

/// All models and their served versions.
pub struct Repository {
    backend: Arc<dyn Backend>,
    config: ServingConfig,
    root: Option<PathBuf>,
    models: RwLock<BTreeMap<String, Entry>>,
    metrics: Arc<Metrics>,
    /// Serializes scans and loads so two reloads of one model never race.
    sync_lock: Mutex<()>,
    /// Stamps seen once but not yet loaded: a changed file is loaded only once it stops changing.
    settling: Mutex<HashMap<(String, u64), Stamp>>,
    /// Files that failed to load and why: not retried until they change.
    failed: Mutex<HashMap<(String, u64), (Stamp, String)>>,
}

const MODEL_FILE: &str = "model.onnx";
const SETTINGS_FILE: &str = "model-settings.json";
const TRITON_CONFIG_FILE: &str = "config.pbtxt";

impl Repository {
    pub fn new(
        backend: Arc<dyn Backend>,
        config: ServingConfig,
        root: Option<PathBuf>,
        files: Vec<(String, PathBuf)>,
        metrics: Arc<Metrics>,
    ) -> Repository {
        let mut models = BTreeMap::new();
        for (name, path) in files {
            models.insert(name, Entry::new(Source::File(path)));
        }
        Repository {
            backend,
            config,
            root,
            models: RwLock::new(models),
            metrics,
            sync_lock: Mutex::new(()),
            settling: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
        }
    }

    /// The settings models are loaded with, unless their own configuration overrides them.
    pub fn config(&self) -> &ServingConfig {
        &self.config
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The version to serve for a request (`None` = the newest served).
    pub fn get(&self, model: &str, version: Option<&str>) -> Result<Arc<Served>, RepositoryError> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let entry = models
            .get(model)
            .ok_or_else(|| RepositoryError::UnknownModel(model.to_string()))?;
        let found = match version.filter(|v| !v.is_empty()) {
            None => entry.versions.values().next_back(),
            Some(v) => v.parse::<u64>().ok().and_then(|n| entry.versions.get(&n)),
        };
        match found {
            Some(s) => Ok(s.clone()),
            None if version.is_some_and(|v| !v.is_empty()) && !entry.versions.is_empty() => {
                Err(RepositoryError::UnknownVersion {
                    model: model.to_string(),
                    version: version.unwrap_or_default().to_string(),
                })
            }
            None => Err(RepositoryError::NotReady {
                model: model.to_string(),
                reason: match &entry.state {
                    ModelState::Unavailable(r) => r.clone(),
                    ModelState::Unloaded => "unloaded".into(),
                    ModelState::Loading => "loading".into(),
                    ModelState::Ready => "no version loaded".into(),
                },
            }),
        }
    }

    /// Served version numbers of a model, oldest first.
    pub fn versions(&self, model: &str) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models
            .get(model)
            .map(|e| e.versions.keys().map(u64::to_string).collect())
            .unwrap_or_default()
    }

    /// Names of all known models.
    pub fn model_names(&self) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models.keys().cloned().collect()
    }

    /// True once no model is on its first load. A model that failed to load is reported on its
    /// own (its ready endpoint, the index, the log) instead of taking the whole server out of a
    /// Service: the others keep serving. `skiff serve` exits at start-up when a model fails,
    /// unless told to serve the others (`--exit-on-error false`).
    pub fn all_ready(&self) -> bool {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        !models.values().any(|e| e.state == ModelState::Loading)
    }

    /// The model a request that names none is for (`/predict`): the only one serving, else the
    /// only one known. Serving models alone count, so that a broken directory dropped into the
    /// repository does not break clients of the one that works. One pass under the lock: it is
    /// on the path of every such request.
    pub fn default_model(&self) -> DefaultModel {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let mut serving = models.iter().filter(|(_, e)| !e.versions.is_empty());
        match (serving.next(), serving.next()) {
            (Some((one, _)), None) => DefaultModel::One(one.clone()),
            (Some(_), Some(_)) => DefaultModel::Several,
            (None, _) => match models.len() {
                0 => DefaultModel::NoModels,
                1 => DefaultModel::One(models.keys().next().cloned().unwrap_or_default()),
                _ => DefaultModel::NoneReady,
            },
        }
    }

    /// Names of the models with a version being served.
    pub fn serving_names(&self) -> Vec<String> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models
            .iter()
            .filter(|(_, e)| !e.versions.is_empty())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Models that are neither serving nor unloaded on purpose, with why.
    pub fn unavailable(&self) -> Vec<(String, String)> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        models
            .iter()
            .filter_map(|(name, e)| match &e.state {
                ModelState::Unavailable(reason) => Some((name.clone(), reason.clone())),
                _ => None,
            })
            .collect()
    }

    /// The repository index: every model with its served versions and state.
    pub fn index(&self) -> Vec<IndexEntry> {
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (name, e) in models.iter() {
            if e.versions.is_empty() {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: None,
                    state: e.state.clone(),
                });
            }
            for v in e.versions.keys() {
                out.push(IndexEntry {
                    name: name.clone(),
                    version: Some(v.to_string()),
                    state: e.state.clone(),
                });
            }
        }
        out
    }

    /// Scans the repository and loads new or changed versions. `settle` makes a changed file wait
    /// for one more scan (so a file being copied is not read half-written); the first scan and
    /// explicit loads do not wait. Blocking: call off the async runtime.
    pub fn sync(&self, settle: bool) {
        let _guard = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Discover models added to the repository directory.
        if let Some(root) = &self.root {
            let found = match scan_root(root) {
                Ok(found) => Some(found),
                Err(e) => {
                    // Keep serving what is loaded; the next scan tries again.
                    tracing::warn!(root = %root.display(), error = %e, "cannot scan the model repository");
                    None
                }
            };
            if let Some(found) = found {
                self.discover(&found);
            }
        }
        for name in self.model_names() {
            self.sync_model(&name, settle, false);
        }
    }

    /// Adds the models found in the repository and forgets those whose directory is gone.
    fn discover(&self, found: &BTreeMap<String, PathBuf>) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        for (name, dir) in found {
            models
                .entry(name.clone())
                .or_insert_with(|| Entry::new(Source::Directory(dir.clone())));
        }
        // A model whose directory disappeared is no longer served nor listed; requests in
        // flight finish on the versions they hold.
        let removed: Vec<String> = models
            .iter()
            .filter(|(name, e)| {
                matches!(e.source, Source::Directory(_)) && !found.contains_key(*name)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in removed {
            self.forget(&mut models, &name);
        }
    }

    /// Stops serving and listing a model whose directory is gone; requests in flight finish on
    /// the versions they hold.
    fn forget(&self, models: &mut BTreeMap<String, Entry>, name: &str) {
        models.remove(name);
        self.settling
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(model, _), _| model != name);
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(model, _), _| model != name);
        tracing::info!(model = %name, "model directory removed; no longer served");
    }

    /// Loads (or reloads) one model now, clearing an explicit unload.
    pub fn load(&self, name: &str) -> Result<(), RepositoryError> {
        let _guard = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        {
            let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
            // A model whose directory was removed since the last scan is gone, as a scan
            // would find (hot reload may be off).
            if let Some(Entry {
                source: Source::Directory(dir),
                ..
            }) = models.get(name)
                && removed(dir)
            {
                self.forget(&mut models, name);
            }
            if !models.contains_key(name) {
                let dir = self
                    .root
                    .as_ref()
                    .map(|r| r.join(name))
                    .filter(|d| d.is_dir() && valid_name(name))
                    .ok_or_else(|| RepositoryError::UnknownModel(name.to_string()))?;
                models.insert(name.to_string(), Entry::new(Source::Directory(dir)));
            }
            if let Some(e) = models.get_mut(name) {
                e.pinned_unloaded = false;
            }
        }
        self.sync_model(name, false, true);
        let models = self.models.read().unwrap_or_else(|e| e.into_inner());
        match models.get(name).map(|e| &e.state) {
            Some(ModelState::Ready) => Ok(()),
            Some(ModelState::Unavailable(reason)) => Err(RepositoryError::Load {
                model: name.to_string(),
                reason: reason.clone(),
            }),
            _ => Err(RepositoryError::UnknownModel(name.to_string())),
        }
    }

    /// Stops serving a model; in-flight requests finish on the old version.
    pub fn unload(&self, name: &str) -> Result<(), RepositoryError> {
        let _guard = self.sync_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let e = models
            .get_mut(name)
            .ok_or_else(|| RepositoryError::UnknownModel(name.to_string()))?;
        e.versions.clear();
        e.stamps.clear();
        e.state = ModelState::Unloaded;
        e.pinned_unloaded = true;
        Ok(())
    }

    fn sync_model(&self, name: &str, settle: bool, force: bool) {
        let (source, loaded_stamps, pinned_unloaded) = {
            let models = self.models.read().unwrap_or_else(|e| e.into_inner());
            let Some(e) = models.get(name) else { return };
            (e.source.clone(), e.stamps.clone(), e.pinned_unloaded)
        };
        if pinned_unloaded {
            return;
        }
        let (settings, wanted) = match wanted_versions(&source) {
            Ok(w) => w,
            Err(reason) => {
                let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = models.get_mut(name) {
                    if e.versions.is_empty() {
                        if !matches!(&e.state, ModelState::Unavailable(old) if *old == reason) {
                            // Logged once per new reason, like a failed load.
                            tracing::warn!(model = name, %reason, "cannot load");
                        }
                        e.state = ModelState::Unavailable(reason);
                    } else if e.settings_problem.as_ref() != Some(&reason) {
                        // Nothing new loads until this is fixed, a replaced model.onnx included.
                        tracing::warn!(model = name, %reason, "cannot reload; still serving the loaded version");
                        e.settings_problem = Some(reason);
                    }
                }
                return;
            }
        };
        let serving_now = {
            let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
            models.get_mut(name).is_some_and(|e| {
                e.settings_problem = None;
                !e.versions.is_empty()
            })
        };
        let mut new_versions: BTreeMap<u64, Arc<Served>> = BTreeMap::new();
        let mut new_stamps = HashMap::new();
        let mut failure = None;
        for (version, path) in &wanted {
            let stamp = stamp_of(path, &source);
            let current = {
                let models = self.models.read().unwrap_or_else(|e| e.into_inner());
                models
                    .get(name)
                    .and_then(|e| e.versions.get(version).cloned())
            };
            if let Some(cur) = &current
                && loaded_stamps.get(version) == Some(&stamp)
                && !force
            {
                new_versions.insert(*version, cur.clone());
                new_stamps.insert(*version, stamp);
                continue;
            }
            if settle && serving_now {
                let mut settling = self.settling.lock().unwrap_or_else(|e| e.into_inner());
                let key = (name.to_string(), *version);
                if settling.get(&key) != Some(&stamp) {
                    settling.insert(key, stamp.clone());
                    if let Some(cur) = &current {
                        new_versions.insert(*version, cur.clone());
                        new_stamps.insert(
                            *version,
                            loaded_stamps.get(version).cloned().unwrap_or_default(),
                        );
                    }
                    continue;
                }
                settling.remove(&key);
            }
            let key = (name.to_string(), *version);
            if !force {
                let failed = self.failed.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((bad, reason)) = failed.get(&key)
                    && bad == &stamp
                {
                    if let Some(cur) = current {
                        new_versions.insert(*version, cur);
                        new_stamps.insert(*version, stamp);
                    }
                    failure = Some(reason.clone());
                    continue;
                }
            }
            match self.load_version(name, *version, path, &settings) {
                Ok(served) => {
                    tracing::info!(model = name, version, "loaded");
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key);
                    new_versions.insert(*version, Arc::new(served));
                    new_stamps.insert(*version, stamp);
                }
                Err(reason) => {
                    tracing::warn!(model = name, version, %reason, "load failed");
                    self.failed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key, (stamp.clone(), reason.clone()));
                    // Keep serving what was there; a broken replacement must not take a model down.
                    if let Some(cur) = current {
                        new_versions.insert(*version, cur);
                        // Remember the bad stamp so it is not retried every scan.
                        new_stamps.insert(*version, stamp);
                    }
                    failure = Some(reason);
                }
            }
        }
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = models.get_mut(name) {
            if e.pinned_unloaded {
                return;
            }
            if new_versions.is_empty() && !e.versions.is_empty() {
                // A new version is still settling or failed to load: keep serving the old one.
                return;
            }
            e.state = match (&failure, new_versions.is_empty()) {
                (_, false) => ModelState::Ready,
                (Some(r), true) => ModelState::Unavailable(r.clone()),
                (None, true) => ModelState::Unavailable("no version found".into()),
            };
            // The swap: old versions stay alive until their last in-flight request finishes.
            e.versions = new_versions;
            e.stamps = new_stamps;
        }
    }

    fn load_version(
        &self,
        name: &str,
        version: u64,
        path: &Path,
        settings: &ModelSettings,
    ) -> Result<Served, String> {
        // Engine pools and inference threads started here inherit this thread's class.
        crate::sched::with_compute_class(|| self.start_version(name, version, path, settings))
    }

    fn start_version(
        &self,
        name: &str,
        version: u64,
        path: &Path,
        settings: &ModelSettings,
    ) -> Result<Served, String> {
        let instances = settings
            .parallel_workers
            .unwrap_or(self.config.instances)
            .max(1);
        let opts = LoadOptions {
            intra_op_threads: (self.config.intra_op_threads / instances).max(1),
        };
        let models = (0..instances)
            .map(|_| self.backend.load(path, &opts).map_err(|e| e.to_string()))
            .collect::<Result<Vec<_>, _>>()?;
        let signature = models
            .first()
            .map(|m| m.signature().clone())
            .ok_or_else(|| "no instance".to_string())?;
        let policy = BatchPolicy {
            max_batch_size: settings
                .max_batch_size
                .unwrap_or(self.config.max_batch_size),
            max_delay: settings
                .max_batch_time
                .filter(|t| t.is_finite() && *t >= 0.0)
                .map(Duration::from_secs_f64)
                .unwrap_or(self.config.batch_delay),
        };
        let labels = ModelLabels::new(name, &version.to_string());
        let metrics = self.metrics.for_model(&labels);
        let batcher = Batcher::start(
            models,
            policy,
            signature.batchable(),
            self.config.queue_capacity,
            metrics.clone(),
            &labels,
        )
        .map_err(|e| format!("cannot start inference threads: {e}"))?;
        Ok(Served {
            name: name.to_string(),
            version: version.to_string(),
            platform: settings
                .platform
                .clone()
                .unwrap_or_else(|| self.backend.capabilities().platform.to_string()),
            signature,
            batcher,
            metrics,
            max_request_rows: settings.max_request_rows,
            instances,
            pinned: settings
                .parameters
                .as_ref()
                .is_some_and(|p| p.version.is_some()),
            backend: self.backend.capabilities().name,
        })
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains('/') && !name.contains('\\')
}

/// Model directories under the root, by name (a settings `name` does not rename: the directory is the name).
/// The model directories under `root`. Any error reading it is returned, never taken for an
/// empty repository: out of file handles (EMFILE) or a flaky mount must not unload every model.
fn scan_root(root: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    for e in std::fs::read_dir(root)? {
        let e = e?;
        let path = e.path();
        if !std::fs::metadata(&path)?.is_dir() {
            continue;
        }
        if let Some(name) = e.file_name().to_str().filter(|n| valid_name(n)) {
            found.insert(name.to_string(), path);
        }
    }
    Ok(found)
}

/// Whether a model directory is gone for good; an error other than "not found" says nothing.
fn removed(dir: &Path) -> bool {
    matches!(std::fs::metadata(dir), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
}

/// `model-settings.json`, else `config.pbtxt`, else defaults.
fn read_settings(dir: &Path) -> Result<ModelSettings, String> {
    let read = |name: &str| {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some((path, bytes))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    if let Some((path, bytes)) = read(SETTINGS_FILE)? {
        let mut settings: ModelSettings =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        // MLServer merges requests only when max_batch_time is above 0 as well; a file copied
        // from an MLServer setup must not start merging (and so mixing rows) here.
        if settings.max_batch_size.is_some_and(|n| n > 1)
            && !settings.max_batch_time.is_some_and(|t| t > 0.0)
        {
            settings.max_batch_size = Some(1);
        }
        return Ok(settings);
    }
    if let Some((path, bytes)) = read(TRITON_CONFIG_FILE)? {
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        return crate::triton_config::settings_from_pbtxt(text)
            .map_err(|e| format!("{}: {e}", path.display()));
    }
    Ok(ModelSettings::default())
}

/// The version a directory holds: as in Triton, its name is a positive number without a
/// leading zero or sign (`1`, `2`, `10`); anything else (`0`, `01`, `+1`, `v1`) is not a version.
fn version_dir(name: &str) -> Option<u64> {
    let digits = name.bytes().all(|b| b.is_ascii_digit()) && !name.starts_with('0');
    digits.then(|| name.parse().ok()).flatten()
}

/// The settings and the versions to serve under the version policy.
fn wanted_versions(source: &Source) -> Result<(ModelSettings, Vec<(u64, PathBuf)>), String> {
    match source {
        Source::File(path) => Ok((ModelSettings::default(), vec![(1, path.clone())])),
        Source::Directory(dir) => {
            let settings = read_settings(dir)?;
            let dir_name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if let Some(name) = settings.name.as_deref().filter(|n| *n != dir_name) {
                return Err(format!(
                    "{}: the settings name the model {name:?} but its directory is {dir_name:?}; \
                     a model is served under its directory's name, so rename one to match",
                    dir.display()
                ));
            }
            let mut versions: BTreeSet<u64> = BTreeSet::new();
            let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for e in rd.filter_map(|e| e.ok()) {
                let Some(v) = e.file_name().to_str().and_then(version_dir) else {
                    continue;
                };
                if e.path().join(MODEL_FILE).is_file() {
                    versions.insert(v);
                }
            }
            let pinned = settings.parameters.as_ref().and_then(|p| p.version.clone());
            let chosen = match pinned {
                Some(p) => {
                    let v = version_dir(&p).ok_or_else(|| {
                        format!(
                            "parameters.version {p:?} is not a version number (a positive \
                             number without a leading zero)"
                        )
                    })?;
                    if !versions.contains(&v) {
                        return Err(format!("pinned version {v} has no {MODEL_FILE}"));
                    }
                    v
                }
                None => *versions
                    .iter()
                    .next_back()
                    .ok_or_else(|| {
                        format!(
                            "no <version>/{MODEL_FILE} under {} (version directories are positive numbers without a leading zero: 1, 2, ...)",
                            dir.display()
                        )
                    })?,
            };
            Ok((
                settings,
                vec![(chosen, dir.join(chosen.to_string()).join(MODEL_FILE))],
            ))
        }
    }
}

fn stamp_of(model: &Path, source: &Source) -> Stamp {
    let mut files = vec![model.to_path_buf()];
    if let Source::Directory(dir) = source {
        files.push(dir.join(SETTINGS_FILE));
        files.push(dir.join(TRITON_CONFIG_FILE));
    }
    files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (f, modified, len)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latest_version_wins_unless_pinned() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("iris");
        // "04", "0" and "+5" are not versions (Triton ignores them too); "04" would otherwise
        // read as 4 and be loaded from a "4" directory that does not exist.
        for v in ["1", "3", "2", "notaversion", "04", "0", "+5"] {
            std::fs::create_dir_all(m.join(v)).unwrap();
            std::fs::write(m.join(v).join(MODEL_FILE), b"x").unwrap();
        }
        std::fs::create_dir_all(m.join("7")).unwrap(); // no model file: ignored
        let src = Source::Directory(m.clone());
        let (_, w) = wanted_versions(&src).unwrap();
        assert_eq!(w.iter().map(|(v, _)| *v).collect::<Vec<_>>(), vec![3]);
        std::fs::write(
            m.join(SETTINGS_FILE),
            r#"{"name":"iris","parameters":{"version":"2"},"max_batch_size":8,"max_batch_time":0.001}"#,
        )
        .unwrap();
        let (s, w) = wanted_versions(&src).unwrap();
        assert_eq!(w[0].0, 2);
        assert_eq!(s.max_batch_size, Some(8));
        // As in MLServer, max_batch_size alone does not merge requests.
        std::fs::write(m.join(SETTINGS_FILE), r#"{"max_batch_size":8}"#).unwrap();
        assert_eq!(wanted_versions(&src).unwrap().0.max_batch_size, Some(1));
        std::fs::write(m.join(SETTINGS_FILE), r#"{"parameters":{"version":"9"}}"#).unwrap();
        assert!(
            wanted_versions(&src)
                .unwrap_err()
                .contains("pinned version 9")
        );
        std::fs::write(m.join(SETTINGS_FILE), "{not json").unwrap();
        assert!(wanted_versions(&src).is_err());
        // Without model-settings.json, Triton's config.pbtxt is read.
        std::fs::remove_file(m.join(SETTINGS_FILE)).unwrap();
        std::fs::write(
            m.join(TRITON_CONFIG_FILE),
            "max_batch_size: 4\ndynamic_batching { }\nversion_policy { specific { versions: 1 } }",
        )
        .unwrap();
        let (s, w) = wanted_versions(&src).unwrap();
        assert_eq!((w[0].0, s.max_batch_size), (1, Some(4)));
        std::fs::write(m.join(TRITON_CONFIG_FILE), "max_batch_sise: 4").unwrap();
        let e = wanted_versions(&src).unwrap_err();
        assert!(
            e.contains("config.pbtxt") && e.contains("unknown field max_batch_sise"),
            "{e}"
        );
        // model-settings.json wins over config.pbtxt.
        std::fs::write(
            m.join(SETTINGS_FILE),
            r#"{"max_batch_size":2,"max_batch_time":0.01}"#,
        )
        .unwrap();
        assert_eq!(wanted_versions(&src).unwrap().0.max_batch_size, Some(2));
    }

    use crate::backend::{BackendError, Model, TensorSpec};
    use crate::tensor::{DataType, Tensor};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Loads any file whose content does not start with "bad"; counts load attempts.
    struct FakeBackend {
        loads: AtomicUsize,
    }

    struct FakeModel(Signature);

    impl Model for FakeModel {
        fn signature(&self) -> &Signature {
            &self.0
        }
        fn infer(
            &mut self,
            inputs: Vec<Tensor>,
            _: &[String],
        ) -> Result<Vec<Tensor>, BackendError> {
            Ok(inputs)
        }
    }

    impl Backend for FakeBackend {
        fn capabilities(&self) -> crate::backend::Capabilities {
            crate::backend::Capabilities {
                name: "fake",
                platform: "fake",
                datatypes: vec![DataType::Fp32],
            }
        }
        fn load(&self, path: &Path, _: &LoadOptions) -> Result<Box<dyn Model>, BackendError> {
            self.loads.fetch_add(1, Ordering::SeqCst);
            let bytes = std::fs::read(path).map_err(|e| BackendError::Load {
                path: path.display().to_string(),
                reason: e.to_string(),
            })?;
            if bytes.starts_with(b"bad") {
                return Err(BackendError::Load {
                    path: path.display().to_string(),
                    reason: "bad model".into(),
                });
            }
            let name = String::from_utf8_lossy(&bytes).to_string();
            let spec = TensorSpec {
                name,
                datatype: DataType::Fp32,
                shape: vec![-1],
            };
            Ok(Box::new(FakeModel(Signature {
                inputs: vec![spec.clone()],
                outputs: vec![spec],
            })))
        }
    }

    fn repo(root: &Path) -> (Repository, Arc<FakeBackend>) {
        let backend = Arc::new(FakeBackend {
            loads: AtomicUsize::new(0),
        });
        let config = ServingConfig {
            intra_op_threads: 1,
            instances: 1,
            max_batch_size: 4,
            batch_delay: Duration::ZERO,
            queue_capacity: 8,
        };
        let r = Repository::new(
            backend.clone(),
            config,
            Some(root.to_path_buf()),
            vec![],
            Arc::new(Metrics::new()),
        );
        (r, backend)
    }

    fn put(root: &Path, model: &str, version: u64, content: &str) {
        let dir = root.join(model).join(version.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        // Through a rename, as deploy tools do, so the stamp changes at once.
        let tmp = dir.join("model.onnx.tmp");
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, dir.join(MODEL_FILE)).unwrap();
    }

    fn served_input(r: &Repository, model: &str) -> (String, String) {
        let s = r.get(model, None).unwrap();
        (s.version.clone(), s.signature.inputs[0].name.clone())
    }

    #[test]
    fn reload_swaps_only_after_a_change_settles_and_keeps_old_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "m", 1, "one");
        let (r, backend) = repo(dir.path());
        r.sync(true);
        assert_eq!(served_input(&r, "m"), ("1".into(), "one".into()));
        // A new version waits one scan, then replaces the old one.
        put(dir.path(), "m", 2, "two");
        r.sync(true);
        assert_eq!(served_input(&r, "m").0, "1");
        r.sync(true);
        assert_eq!(served_input(&r, "m"), ("2".into(), "two".into()));
        assert_eq!(r.versions("m"), vec!["2".to_string()]);
        // A broken replacement is tried once, then left alone while the old model serves.
        put(dir.path(), "m", 2, "bad!");
        r.sync(true);
        r.sync(true);
        let loads = backend.loads.load(Ordering::SeqCst);
        r.sync(true);
        r.sync(true);
        assert_eq!(
            backend.loads.load(Ordering::SeqCst),
            loads,
            "a failed file was retried"
        );
        assert_eq!(served_input(&r, "m"), ("2".into(), "two".into()));
        assert_eq!(r.index()[0].state, ModelState::Ready);
    }

    #[test]
    fn unload_sticks_until_load_and_unknown_models_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "a", 1, "x");
        put(dir.path(), "b", 3, "bad");
        let (r, _) = repo(dir.path());
        r.sync(false);
        assert!(r.get("a", None).is_ok());
        assert!(matches!(
            r.get("b", None),
            Err(RepositoryError::NotReady { .. })
        ));
        // A model that failed is reported on its own; the server is not held back by it.
        assert!(r.all_ready());
        assert_eq!(
            r.unavailable()
                .into_iter()
                .map(|(m, _)| m)
                .collect::<Vec<_>>(),
            vec!["b".to_string()]
        );
        // The only serving model is the one a request naming none goes to.
        assert_eq!(r.default_model(), DefaultModel::One("a".into()));
        assert!(matches!(
            r.get("a", Some("9")),
            Err(RepositoryError::UnknownVersion { .. })
        ));
        assert!(matches!(
            r.get("zz", None),
            Err(RepositoryError::UnknownModel(_))
        ));
        r.unload("a").unwrap();
        r.sync(false);
        assert!(r.get("a", None).is_err());
        r.load("a").unwrap();
        assert!(r.get("a", Some("1")).is_ok());
        assert!(matches!(r.load("b"), Err(RepositoryError::Load { .. })));
        assert!(matches!(
            r.load("../etc"),
            Err(RepositoryError::UnknownModel(_))
        ));
        // A model directory added later is found by the next scan.
        put(dir.path(), "c", 1, "y");
        r.sync(true);
        assert!(r.get("c", None).is_ok());
    }

    #[test]
    fn a_removed_model_directory_is_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), "a", 1, "x");
        put(dir.path(), "gone", 1, "y");
        let (r, _) = repo(dir.path());
        r.sync(false);
        let held = r.get("gone", None).unwrap();
        std::fs::remove_dir_all(dir.path().join("gone")).unwrap();
        r.sync(true);
        assert_eq!(
            r.get("gone", None).err(),
            Some(RepositoryError::UnknownModel("gone".into()))
        );
        assert_eq!(r.model_names(), vec!["a".to_string()]);
        assert!(r.all_ready());
        // A request that already holds the version finishes on it.
        assert_eq!(held.version, "1");
        // A scan that cannot read the repository keeps what it serves.
        let moved = dir.path().with_extension("away");
        std::fs::rename(dir.path(), &moved).unwrap();
        r.sync(true);
        assert_eq!(r.model_names(), vec!["a".to_string()]);
        assert!(r.get("a", None).is_ok());
        std::fs::rename(&moved, dir.path()).unwrap();
        // Without a scan (hot reload off), an explicit load finds the directory gone.
        put(dir.path(), "later", 1, "z");
        r.load("later").unwrap();
        std::fs::remove_dir_all(dir.path().join("later")).unwrap();
        assert_eq!(
            r.load("later").err(),
            Some(RepositoryError::UnknownModel("later".into()))
        );
        assert_eq!(r.model_names(), vec!["a".to_string()]);
    }

    #[test]
    fn root_scan_skips_hidden_and_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::create_dir(dir.path().join(".hidden")).unwrap();
        std::fs::write(dir.path().join("file"), b"").unwrap();
        let names: Vec<_> = scan_root(dir.path()).unwrap().into_keys().collect();
        assert_eq!(names, vec!["a".to_string()]);
    }
}
