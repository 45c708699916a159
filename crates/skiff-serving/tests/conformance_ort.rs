//! Runs the backend conformance suite against ONNX Runtime (needs libonnxruntime; see `find_library`).

use skiff_serving::backend::Backend;
use skiff_serving::backend::ort::OrtBackend;

fn ort_backend() -> Box<dyn Backend> {
    Box::new(
        OrtBackend::new()
            .unwrap_or_else(|e| panic!("ONNX Runtime must be installed for these tests: {e}")),
    )
}

skiff_serving::conformance_tests!(ort_backend);
