//! tract backend: pure-Rust ONNX inference, the fallback when no libonnxruntime is installed.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

use super::{Backend, BackendError, Capabilities, LoadOptions, Model, Signature, TensorSpec};
use crate::tensor::{DataType, Tensor as SkiffTensor, TensorData};

const NAME: &str = "tract";

/// Runs ONNX graphs with tract (no native dependencies; fewer operators than ONNX Runtime).
#[derive(Debug, Default)]
pub struct TractBackend;

impl TractBackend {
    pub fn new() -> TractBackend {
        TractBackend
    }
}

fn datatype(dt: DatumType) -> Option<DataType> {
    Some(match dt {
        DatumType::Bool => DataType::Bool,
        DatumType::U8 => DataType::Uint8,
        DatumType::U16 => DataType::Uint16,
        DatumType::U32 => DataType::Uint32,
        DatumType::U64 => DataType::Uint64,
        DatumType::I8 => DataType::Int8,
        DatumType::I16 => DataType::Int16,
        DatumType::I32 => DataType::Int32,
        DatumType::I64 => DataType::Int64,
        DatumType::F16 => DataType::Fp16,
        DatumType::F32 => DataType::Fp32,
        DatumType::F64 => DataType::Fp64,
        DatumType::String => DataType::Bytes,
        _ => return None,
    })
}

/// The whole error chain: tract names the failing operator in an inner cause.
fn chain(e: &TractError) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

impl Backend for TractBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: NAME,
            platform: "tract_onnx",
            datatypes: DataType::ALL.to_vec(),
        }
    }

    fn load(&self, path: &Path, _opts: &LoadOptions) -> Result<Box<dyn Model>, BackendError> {
        let load_err = |reason: String| BackendError::Load {
            path: path.display().to_string(),
            reason,
        };
        let mut model = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(|e| load_err(chain(&e)))?;
        // Exporters (skl2onnx among them) leave the batch dimension unnamed; tract needs a symbol
        // there to type the graph, so unknown dimensions become symbols.
        let batch = model.symbols.sym("batch");
        for ix in 0..model.inputs.len() {
            let fact = model
                .input_fact(ix)
                .map_err(|e| load_err(chain(&e)))?
                .clone();
            let Some(dt) = fact.datum_type.concretize() else {
                continue;
            };
            if fact.shape.is_open() {
                continue;
            }
            let dims: TVec<TDim> = fact
                .shape
                .dims()
                .enumerate()
                .map(|(k, d)| {
                    d.concretize().unwrap_or_else(|| {
                        if k == 0 {
                            batch.to_dim()
                        } else {
                            model.symbols.sym(&format!("d{ix}_{k}")).to_dim()
                        }
                    })
                })
                .collect();
            model
                .set_input_fact(ix, InferenceFact::dt_shape(dt, dims))
                .map_err(|e| load_err(chain(&e)))?;
        }
        let typed = model
            .into_typed()
            .and_then(|m| m.into_decluttered())
            .map_err(|e| load_err(chain(&e)))?;
        let spec = |outlet: OutletId, name: String| -> Result<TensorSpec, BackendError> {
            let fact = typed.outlet_fact(outlet).map_err(|e| load_err(chain(&e)))?;
            Ok(TensorSpec {
                datatype: datatype(fact.datum_type).ok_or_else(|| {
                    load_err(format!(
                        "{name:?} has unsupported type {:?}",
                        fact.datum_type
                    ))
                })?,
                shape: fact
                    .shape
                    .iter()
                    .map(|d| d.to_i64().unwrap_or(-1))
                    .collect(),
                name,
            })
        };
        let inputs = typed
            .input_outlets()
            .map_err(|e| load_err(chain(&e)))?
            .to_vec();
        let outputs = typed
            .output_outlets()
            .map_err(|e| load_err(chain(&e)))?
            .to_vec();
        let signature = Signature {
            inputs: inputs
                .iter()
                .map(|o| spec(*o, typed.node(o.node).name.clone()))
                .collect::<Result<_, _>>()?,
            outputs: outputs
                .iter()
                .map(|o| {
                    let name = typed
                        .outlet_label(*o)
                        .map(str::to_string)
                        .unwrap_or_else(|| typed.node(o.node).name.clone());
                    spec(*o, name)
                })
                .collect::<Result<_, _>>()?,
        };
        let plan = typed
            .into_optimized()
            .and_then(|m| m.into_runnable())
            .map_err(|e| load_err(chain(&e)))?;
        Ok(Box::new(TractModel { plan, signature }))
    }
}

struct TractModel {
    plan: Arc<TypedRunnableModel>,
    signature: Signature,
}

fn to_tensor(t: SkiffTensor) -> Result<Tensor, BackendError> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d.max(0) as usize).collect();
    let err = |e: TractError| BackendError::Run(format!("input {:?}: {}", t.name, chain(&e)));
    Ok(match t.data {
        TensorData::Bool(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Uint8(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Uint16(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Uint32(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Uint64(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Int8(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Int16(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Int32(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Int64(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Fp16(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Fp32(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Fp64(v) => Tensor::from_shape(&shape, &v).map_err(err)?,
        TensorData::Bytes(v) => {
            let strings = v
                .into_iter()
                .map(|b| {
                    String::from_utf8(b)
                        .map_err(|_| BackendError::Run(format!("input {:?}: not UTF-8", t.name)))
                })
                .collect::<Result<Vec<_>, _>>()?;
            tract_ndarray::ArrayD::from_shape_vec(tract_ndarray::IxDyn(&shape), strings)
                .map_err(|e| BackendError::Run(format!("input {:?}: {e}", t.name)))?
                .into_tensor()
        }
    })
}

fn from_tensor(name: &str, t: &Tensor) -> Result<SkiffTensor, BackendError> {
    let err = |e: TractError| BackendError::Run(format!("output {name:?}: {}", chain(&e)));
    macro_rules! prim {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                t.to_plain_array_view::<$t>()
                    .map_err(err)?
                    .iter()
                    .cloned()
                    .collect(),
            )
        };
    }
    let data = match t.datum_type() {
        DatumType::Bool => prim!(bool, Bool),
        DatumType::U8 => prim!(u8, Uint8),
        DatumType::U16 => prim!(u16, Uint16),
        DatumType::U32 => prim!(u32, Uint32),
        DatumType::U64 => prim!(u64, Uint64),
        DatumType::I8 => prim!(i8, Int8),
        DatumType::I16 => prim!(i16, Int16),
        DatumType::I32 => prim!(i32, Int32),
        DatumType::I64 => prim!(i64, Int64),
        DatumType::F16 => TensorData::Fp16(
            t.to_plain_array_view::<f16>()
                .map_err(err)?
                .iter()
                .map(|x| half::f16::from_bits(x.to_bits()))
                .collect(),
        ),
        DatumType::F32 => prim!(f32, Fp32),
        DatumType::F64 => prim!(f64, Fp64),
        DatumType::String => TensorData::Bytes(
            t.to_plain_array_view::<String>()
                .map_err(err)?
                .iter()
                .map(|s| s.as_bytes().to_vec())
                .collect(),
        ),
        other => {
            return Err(BackendError::Run(format!(
                "output {name:?} has unsupported type {other:?}"
            )));
        }
    };
    Ok(SkiffTensor {
        name: name.to_string(),
        shape: t.shape().iter().map(|&d| d as i64).collect(),
        data,
    })
}

impl Model for TractModel {
    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn infer(
        &mut self,
        inputs: Vec<SkiffTensor>,
        outputs: &[String],
    ) -> Result<Vec<SkiffTensor>, BackendError> {
        let mut inputs = inputs;
        let mut ordered = TVec::new();
        for spec in &self.signature.inputs {
            let i = inputs
                .iter()
                .position(|t| t.name == spec.name)
                .ok_or_else(|| BackendError::MissingInput(spec.name.clone()))?;
            ordered.push(to_tensor(inputs.swap_remove(i))?.into_tvalue());
        }
        let results = self
            .plan
            .run(ordered)
            .map_err(|e| BackendError::Run(chain(&e)))?;
        let all: Vec<&str> = self
            .signature
            .outputs
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        let wanted: Vec<&str> = if outputs.is_empty() {
            all.clone()
        } else {
            outputs.iter().map(String::as_str).collect()
        };
        wanted
            .into_iter()
            .map(|name| {
                let i = all.iter().position(|n| *n == name).ok_or_else(|| {
                    BackendError::Run(format!("output {name:?} was not produced"))
                })?;
                from_tensor(name, &results[i])
            })
            .collect()
    }
}
