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

/// Beyond the suite: ONNX Runtime's own load errors are put in a user's words.
#[test]
fn load_errors_say_what_the_file_is() {
    use skiff_serving::backend::LoadOptions;
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("model.onnx");
    std::fs::write(&garbage, b"this is not an onnx model").unwrap();
    let backend = ort_backend();
    let load = |path: &std::path::Path| match backend.load(
        path,
        &LoadOptions {
            intra_op_threads: 1,
        },
    ) {
        Ok(_) => panic!("{} loaded", path.display()),
        Err(e) => e.to_string(),
    };
    let err = load(&garbage);
    assert!(err.contains("not a valid ONNX model file"), "{err}");
    assert!(!err.contains("Load model from"), "{err}");
    let err = load(dir.path());
    assert!(err.contains("it is a directory"), "{err}");
}
