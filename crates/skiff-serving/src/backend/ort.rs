//! ONNX Runtime backend: loads libonnxruntime at run time (`ort` with `load-dynamic`) and runs sessions.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType, ValueType};

use super::{Backend, BackendError, Capabilities, LoadOptions, Model, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor, TensorData};

const NAME: &str = "onnxruntime";

/// The process-wide ONNX Runtime environment; the library can be loaded only once per process.
static ENV: OnceLock<Result<ort::environment::Environment, String>> = OnceLock::new();

/// ONNX Runtime through a dynamically loaded libonnxruntime.
pub struct OrtBackend {
    env: ort::environment::Environment,
    library: PathBuf,
}

impl OrtBackend {
    /// Finds and loads libonnxruntime (see [`find_library`]); fails with the places searched.
    pub fn new() -> Result<OrtBackend, BackendError> {
        let library = find_library()?;
        let env = ENV
            .get_or_init(|| {
                ort::init_from(&library)
                    .map_err(|e| format!("loading {}: {e}", library.display()))?
                    .with_name("skiff-serving")
                    .build()
                    .map_err(|e| e.to_string())
            })
            .clone()
            .map_err(|reason| BackendError::Unavailable {
                backend: NAME,
                reason,
            })?;
        tracing::debug!(library = %library.display(), "ONNX Runtime loaded");
        Ok(OrtBackend { env, library })
    }

    /// The shared library in use.
    pub fn library(&self) -> &Path {
        &self.library
    }
}

/// Locates libonnxruntime: `ORT_DYLIB_PATH`, else the `onnxruntime` Python package's `capi/`
/// directory as reported by the Python in `SKIFF_PYTHON`, a `.venv` in or above the working
/// directory or the executable, or `python3`.
pub fn find_library() -> Result<PathBuf, BackendError> {
    let unavailable = |reason: String| BackendError::Unavailable {
        backend: NAME,
        reason,
    };
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(unavailable(format!(
                "ORT_DYLIB_PATH={} is not a file",
                p.display()
            )))
        };
    }
    let mut tried = Vec::new();
    for python in python_candidates() {
        // Looking inside a virtualenv directly avoids starting Python (about 0.3 s) at start-up.
        if let Some(lib) = venv_library(&python) {
            return Ok(lib);
        }
        let out = std::process::Command::new(&python)
            .args([
                "-c",
                "import onnxruntime,os;print(os.path.dirname(onnxruntime.__file__))",
            ])
            .stderr(std::process::Stdio::null())
            .output();
        let dir = match out {
            Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
            _ => {
                tried.push(python.display().to_string());
                continue;
            }
        };
        if let Some(lib) = library_in(&dir.join("capi")) {
            return Ok(lib);
        }
        tried.push(format!("{} (no capi/libonnxruntime.so*)", python.display()));
    }
    Err(unavailable(format!(
        "no libonnxruntime found: set ORT_DYLIB_PATH or install the onnxruntime Python package (tried {})",
        tried.join(", ")
    )))
}

/// `<venv>/lib*/python*/site-packages/onnxruntime/capi/libonnxruntime.so*` for `<venv>/bin/python3`.
fn venv_library(python: &Path) -> Option<PathBuf> {
    let root = python.parent()?.parent()?;
    ["lib", "lib64"].iter().find_map(|lib| {
        std::fs::read_dir(root.join(lib))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("python"))
            .find_map(|e| library_in(&e.path().join("site-packages/onnxruntime/capi")))
    })
}

fn library_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
            })
        })
        .collect();
    found.sort();
    found.pop()
}

fn python_candidates() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(p) = std::env::var_os("SKIFF_PYTHON") {
        out.push(PathBuf::from(p));
    }
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    if let Ok(exe) = std::env::current_exe() {
        roots.push(exe);
    }
    for root in roots {
        for dir in root.ancestors() {
            let py = dir.join(".venv/bin/python3");
            if py.is_file() && !out.contains(&py) {
                out.push(py);
            }
        }
    }
    out.push(PathBuf::from("python3"));
    out
}

impl Backend for OrtBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: NAME,
            platform: "onnxruntime_onnx",
            datatypes: DataType::ALL.to_vec(),
        }
    }

    fn load(&self, path: &Path, opts: &LoadOptions) -> Result<Box<dyn Model>, BackendError> {
        let load_err = |reason: String| BackendError::Load {
            path: path.display().to_string(),
            reason,
        };
        let session = Session::builder(&self.env)
            .map_err(|e| load_err(e.to_string()))?
            .with_intra_threads(opts.intra_op_threads.max(1))
            .map_err(|e| load_err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load_err(e.to_string()))?
            // Spinning pool threads would steal the CPU the HTTP workers need between small requests.
            .with_intra_op_spinning(false)
            .map_err(|e| load_err(e.to_string()))?
            .commit_from_file(path)
            .map_err(|e| load_err(load_failure(path, &e.to_string())))?;
        let spec = |o: &ort::value::Outlet| -> Result<TensorSpec, BackendError> {
            match o.dtype() {
                ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                    name: o.name().to_string(),
                    datatype: datatype(*ty).ok_or_else(|| {
                        load_err(format!(
                            "{:?} has unsupported element type {ty:?}",
                            o.name()
                        ))
                    })?,
                    shape: shape.iter().copied().collect(),
                }),
                other => Err(load_err(format!(
                    "{:?} is a {other:?}, only tensors are served (convert sklearn classifiers with zipmap=False)",
                    o.name()
                ))),
            }
        };
        let signature = Signature {
            inputs: session
                .inputs()
                .iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
            outputs: session
                .outputs()
                .iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
        };
        Ok(Box::new(OrtModel { session, signature }))
    }
}

fn datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

struct OrtModel {
    session: Session,
    signature: Signature,
}

fn to_value(t: Tensor) -> Result<DynValue, BackendError> {
    let run = |e: ort::Error| BackendError::Run(format!("input {:?}: {e}", t.name));
    let shape = t.shape.clone();
    Ok(match t.data {
        TensorData::Bool(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Uint8(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Uint16(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Uint32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Uint64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Int8(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Int16(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Int32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Int64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Fp16(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Fp32(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Fp64(v) => OrtTensor::from_array((shape, v)).map_err(run)?.into_dyn(),
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    String::from_utf8(b).map_err(|_| {
                        BackendError::Run(format!(
                            "input {:?}: element {i} is not UTF-8; ONNX string tensors must be UTF-8",
                            t.name
                        ))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            OrtTensor::from_string_array((shape, strings.as_slice()))
                .map_err(run)?
                .into_dyn()
        }
    })
}

/// ONNX Runtime's load error in a user's words: its "Load model from PATH failed:" prefix
/// repeats the path the caller already names, and "Protobuf parsing failed" means the file is
/// not an ONNX model at all.
fn load_failure(path: &Path, ort_message: &str) -> String {
    if path.is_dir() {
        return "it is a directory; give the path of the model.onnx file".into();
    }
    let detail = ort_message
        .split_once(" failed:")
        .filter(|(head, _)| head.starts_with("Load model from"))
        .map_or(ort_message, |(_, rest)| rest)
        .trim();
    if detail.contains("Protobuf parsing failed") {
        format!("not a valid ONNX model file ({detail})")
    } else {
        detail.to_string()
    }
}

fn from_value(name: &str, v: &DynValue) -> Result<Tensor, BackendError> {
    let ty = match v.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(BackendError::Run(format!(
                "output {name:?} is a {other:?}, not a tensor"
            )));
        }
    };
    let err = |e: ort::Error| BackendError::Run(format!("output {name:?}: {e}"));
    macro_rules! prim {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(err)?;
            (shape.to_vec(), TensorData::$variant(data.to_vec()))
        }};
    }
    let (shape, data) = match ty {
        TensorElementType::Bool => prim!(bool, Bool),
        TensorElementType::Uint8 => prim!(u8, Uint8),
        TensorElementType::Uint16 => prim!(u16, Uint16),
        TensorElementType::Uint32 => prim!(u32, Uint32),
        TensorElementType::Uint64 => prim!(u64, Uint64),
        TensorElementType::Int8 => prim!(i8, Int8),
        TensorElementType::Int16 => prim!(i16, Int16),
        TensorElementType::Int32 => prim!(i32, Int32),
        TensorElementType::Int64 => prim!(i64, Int64),
        TensorElementType::Float16 => prim!(half::f16, Fp16),
        TensorElementType::Float32 => prim!(f32, Fp32),
        TensorElementType::Float64 => prim!(f64, Fp64),
        TensorElementType::String => {
            let (shape, data) = v.try_extract_strings().map_err(err)?;
            (
                shape.to_vec(),
                TensorData::Bytes(data.into_iter().map(String::into_bytes).collect()),
            )
        }
        other => {
            return Err(BackendError::Run(format!(
                "output {name:?} has unsupported element type {other:?}"
            )));
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        shape,
        data,
    })
}

impl Model for OrtModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn infer(
        &mut self,
        inputs: Vec<Tensor>,
        outputs: &[String],
    ) -> Result<Vec<Tensor>, BackendError> {
        let values = inputs
            .into_iter()
            .map(|t| Ok((t.name.clone(), to_value(t)?)))
            .collect::<Result<Vec<(String, DynValue)>, BackendError>>()?;
        let results = self
            .session
            .run(values)
            .map_err(|e| BackendError::Run(e.to_string()))?;
        let wanted: Vec<&str> = if outputs.is_empty() {
            self.signature
                .outputs
                .iter()
                .map(|o| o.name.as_str())
                .collect()
        } else {
            outputs.iter().map(String::as_str).collect()
        };
        wanted
            .into_iter()
            .map(|name| {
                let v = results.get(name).ok_or_else(|| {
                    BackendError::Run(format!("output {name:?} was not produced"))
                })?;
                from_value(name, v)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_library_inside_a_virtualenv() {
        let dir = tempfile::tempdir().unwrap();
        let venv = dir.path().join("venv");
        std::fs::create_dir_all(venv.join("bin")).unwrap();
        let capi = venv.join("lib/python3.11/site-packages/onnxruntime/capi");
        std::fs::create_dir_all(&capi).unwrap();
        assert_eq!(venv_library(&venv.join("bin/python3")), None);
        std::fs::write(capi.join("libonnxruntime_providers_shared.so"), b"").unwrap();
        std::fs::write(capi.join("libonnxruntime.so.1.32.0"), b"").unwrap();
        assert_eq!(
            venv_library(&venv.join("bin/python3")),
            Some(capi.join("libonnxruntime.so.1.32.0"))
        );
    }
}
