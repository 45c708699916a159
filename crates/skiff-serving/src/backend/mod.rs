//! The seam between the server and inference engines: `Backend` loads models, `Model` runs them.

pub mod conformance;
pub mod ort;
#[cfg(feature = "tract")]
pub mod tract;

use std::path::Path;

use crate::tensor::{DataType, Tensor};

/// Why a backend could not load or run a model; shown to clients and operators.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("backend {backend} is not available: {reason}")]
    Unavailable {
        backend: &'static str,
        reason: String,
    },
    #[error("cannot load model {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("input {name:?} is not an input of the model (inputs: {known})")]
    UnknownInput { name: String, known: String },
    #[error("missing input {0:?}")]
    MissingInput(String),
    #[error("input {name:?}: expected datatype {expected} but got {got}")]
    InputDatatype {
        name: String,
        expected: DataType,
        got: DataType,
    },
    #[error("input {name:?}: expected shape {expected:?} (-1 = any) but got {got:?}")]
    InputShape {
        name: String,
        expected: Vec<i64>,
        got: Vec<i64>,
    },
    #[error("input {name:?}: element {element} {why}; BYTES inputs of ONNX models are strings")]
    InputNotText {
        name: String,
        element: usize,
        why: &'static str,
    },
    #[error("output {0:?} is requested twice")]
    DuplicateOutput(String),
    #[error("unknown output {name:?} (outputs: {known})")]
    UnknownOutput { name: String, known: String },
    #[error("inference failed: {0}")]
    Run(String),
}

impl BackendError {
    /// True when the client sent something the model cannot take (a 400, not a 500).
    pub fn is_client_error(&self) -> bool {
        matches!(
            self,
            BackendError::UnknownInput { .. }
                | BackendError::MissingInput(_)
                | BackendError::InputDatatype { .. }
                | BackendError::InputShape { .. }
                | BackendError::InputNotText { .. }
                | BackendError::DuplicateOutput(_)
                | BackendError::UnknownOutput { .. }
        )
    }
}

/// What a backend can do, checked once instead of scattered through the server.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    /// Short name used in logs, metadata `platform` and errors.
    pub name: &'static str,
    /// The `platform` string reported in model metadata.
    pub platform: &'static str,
    /// Datatypes its models accept and produce.
    pub datatypes: Vec<DataType>,
}

/// Name, datatype and shape (-1 for a dynamic dimension) of one model input or output.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

/// The inputs and outputs of a loaded model, read from its graph.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl Signature {
    /// Whether every input and output has a dynamic first dimension, so requests can be merged.
    pub fn batchable(&self) -> bool {
        self.inputs
            .iter()
            .chain(&self.outputs)
            .all(|t| t.shape.first() == Some(&-1))
            && !self.inputs.is_empty()
    }

    /// Validates request tensors against the inputs: names, datatypes and static dimensions.
    pub fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), BackendError> {
        for t in inputs {
            let spec = self
                .inputs
                .iter()
                .find(|s| s.name == t.name)
                .ok_or_else(|| BackendError::UnknownInput {
                    name: t.name.clone(),
                    known: names(&self.inputs),
                })?;
            if spec.datatype != t.datatype() {
                return Err(BackendError::InputDatatype {
                    name: t.name.clone(),
                    expected: spec.datatype,
                    got: t.datatype(),
                });
            }
            let shape_ok = spec.shape.len() == t.shape.len()
                && spec
                    .shape
                    .iter()
                    .zip(&t.shape)
                    .all(|(&s, &g)| s < 0 || s == g);
            if !shape_ok {
                return Err(BackendError::InputShape {
                    name: t.name.clone(),
                    expected: spec.shape.clone(),
                    got: t.shape.clone(),
                });
            }
            // Checked per request: a bad element found in a merged batch would fail the others.
            if let Some((element, why)) = t.data.first_non_string() {
                return Err(BackendError::InputNotText {
                    name: t.name.clone(),
                    element,
                    why,
                });
            }
        }
        for spec in &self.inputs {
            if !inputs.iter().any(|t| t.name == spec.name) {
                return Err(BackendError::MissingInput(spec.name.clone()));
            }
        }
        Ok(())
    }

    /// Validates requested output names.
    pub fn check_outputs(&self, outputs: &[String]) -> Result<(), BackendError> {
        for (i, name) in outputs.iter().enumerate() {
            if !self.outputs.iter().any(|s| &s.name == name) {
                return Err(BackendError::UnknownOutput {
                    name: name.clone(),
                    known: names(&self.outputs),
                });
            }
            if outputs[..i].contains(name) {
                return Err(BackendError::DuplicateOutput(name.clone()));
            }
        }
        Ok(())
    }
}

fn names(specs: &[TensorSpec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How a model should be loaded.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Threads one inference may use inside the engine.
    pub intra_op_threads: usize,
}

/// An inference engine that turns model files into runnable models.
pub trait Backend: Send + Sync {
    fn capabilities(&self) -> Capabilities;
    fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Box<dyn Model>, BackendError>;
}

/// A loaded model; `infer` is blocking and is only called from inference threads.
pub trait Model: Send {
    fn signature(&self) -> &Signature;
    /// Runs the model on inputs already checked with `Signature::check_inputs`; returns the requested
    /// outputs (all outputs when `outputs` is empty), in the order asked for.
    fn infer(
        &mut self,
        inputs: Vec<Tensor>,
        outputs: &[String],
    ) -> Result<Vec<Tensor>, BackendError>;
}

/// CPUs this process may use: the cgroup CPU quota (v2 `cpu.max` or v1 CFS files) rounded up,
/// capped by the visible CPUs, so a 2-CPU pod does not start a thread per host core.
pub fn cpu_quota() -> usize {
    let visible = std::thread::available_parallelism().map_or(1, |n| n.get());
    let quota = read_cgroup_quota(Path::new("/sys/fs/cgroup"));
    quota.map_or(visible, |q| q.min(visible)).max(1)
}

fn read_cgroup_quota(root: &Path) -> Option<usize> {
    if let Ok(s) = std::fs::read_to_string(root.join("cpu.max")) {
        return parse_cpu_max(&s);
    }
    let quota = std::fs::read_to_string(root.join("cpu/cpu.cfs_quota_us")).ok()?;
    let period = std::fs::read_to_string(root.join("cpu/cpu.cfs_period_us")).ok()?;
    quota_over_period(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

fn parse_cpu_max(s: &str) -> Option<usize> {
    let mut it = s.split_whitespace();
    let quota = it.next()?;
    let period: i64 = it.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
    if quota == "max" {
        return None;
    }
    quota_over_period(quota.parse().ok()?, period)
}

fn quota_over_period(quota: i64, period: i64) -> Option<usize> {
    if quota <= 0 || period <= 0 {
        return None;
    }
    Some(((quota + period - 1) / period) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    #[test]
    fn cpu_max_parsing() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2));
        assert_eq!(parse_cpu_max("150000 100000"), Some(2));
        assert_eq!(parse_cpu_max("50000 100000"), Some(1));
        assert_eq!(parse_cpu_max("garbage"), None);
        assert_eq!(quota_over_period(-1, 100000), None);
    }

    #[test]
    fn cgroup_v1_and_v2_files() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_cgroup_quota(dir.path()), None);
        std::fs::create_dir(dir.path().join("cpu")).unwrap();
        std::fs::write(dir.path().join("cpu/cpu.cfs_quota_us"), "300000\n").unwrap();
        std::fs::write(dir.path().join("cpu/cpu.cfs_period_us"), "100000\n").unwrap();
        assert_eq!(read_cgroup_quota(dir.path()), Some(3));
        std::fs::write(dir.path().join("cpu.max"), "100000 100000\n").unwrap();
        assert_eq!(read_cgroup_quota(dir.path()), Some(1));
        assert!(cpu_quota() >= 1);
    }

    fn sig() -> Signature {
        Signature {
            inputs: vec![TensorSpec {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![-1, 2],
            }],
            outputs: vec![TensorSpec {
                name: "y".into(),
                datatype: DataType::Fp32,
                shape: vec![-1],
            }],
        }
    }

    #[test]
    fn signature_checks() {
        let s = sig();
        assert!(s.batchable());
        let ok = Tensor::new("x", vec![3, 2], TensorData::Fp32(vec![0.0; 6])).unwrap();
        assert!(s.check_inputs(std::slice::from_ref(&ok)).is_ok());
        let wrong_dim = Tensor::new("x", vec![2, 3], TensorData::Fp32(vec![0.0; 6])).unwrap();
        assert!(matches!(
            s.check_inputs(&[wrong_dim]),
            Err(BackendError::InputShape { .. })
        ));
        let wrong_type = Tensor::new("x", vec![1, 2], TensorData::Fp64(vec![0.0; 2])).unwrap();
        assert!(matches!(
            s.check_inputs(&[wrong_type]),
            Err(BackendError::InputDatatype { .. })
        ));
        assert!(matches!(
            s.check_inputs(&[]),
            Err(BackendError::MissingInput(_))
        ));
        assert!(s.check_outputs(&["y".into()]).is_ok());
        assert!(s.check_outputs(&["z".into()]).is_err());
    }
}
