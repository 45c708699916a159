//! The REST router in-process on a real ONNX Runtime model: answers, status codes, and fuzzed bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, StatusCode};
use serde_json::{Value, json};
use skiff_serving::backend::conformance::{add_model, write_temp};
use skiff_serving::backend::ort::OrtBackend;
use skiff_serving::http::{AppState, router};
use skiff_serving::metrics::Metrics;
use skiff_serving::repository::{Repository, ServingConfig};
use tower::ServiceExt;

fn app() -> axum::Router {
    let backend =
        Arc::new(OrtBackend::new().expect("ONNX Runtime must be installed for these tests"));
    let config = ServingConfig {
        intra_op_threads: 1,
        instances: 1,
        max_batch_size: 8,
        batch_delay: Duration::from_millis(1),
        queue_capacity: 64,
    };
    let model = write_temp("model.onnx", &add_model());
    let repo = Arc::new(Repository::new(
        backend,
        config,
        None,
        vec![("add".into(), model)],
        Arc::new(Metrics::new()),
    ));
    repo.sync(false);
    router(AppState {
        repo,
        max_body_bytes: 4096,
    })
}

async fn call(app: &axum::Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn infer_metadata_and_errors() {
    let app = app();
    let body = json!({"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3, 4]}],
                      "outputs": [{"name": "sum"}]});
    let (status, out) = call(
        &app,
        "POST",
        "/v2/models/add/infer",
        body.to_string().into_bytes(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&out));
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["outputs"][0]["name"], "sum");
    assert_eq!(v["outputs"][0]["data"], json!([11.0, 22.0, 13.0, 24.0]));

    let (status, out) = call(&app, "GET", "/v2/models/add", vec![]).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        v["inputs"][0],
        json!({"name": "x", "datatype": "FP32", "shape": [-1, 2]})
    );

    let (status, out) = call(
        &app,
        "POST",
        "/predict",
        br#"{"instances": [[1, 1]]}"#.to_vec(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["predictions"], json!([[11.0, 21.0]]));

    for (uri, body, want) in [
        (
            "/v2/models/nope/infer",
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
        ),
        (
            "/v2/models/add/infer",
            b"{".to_vec(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v2/models/add/infer",
            vec![b' '; 5000],
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/models/add:explain",
            b"{}".to_vec(),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (status, out) = call(&app, "POST", uri, body).await;
        assert_eq!(status, want, "{uri}");
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert!(v["error"].is_string(), "{uri}: {v}");
    }
}

#[tokio::test]
async fn fuzzed_bodies_get_4xx_never_5xx() {
    use rand::{Rng, SeedableRng};
    let app = app();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let seeds: [&[u8]; 3] = [
        br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}"#,
        br#"{"instances": [[1, 2], [3, 4]]}"#,
        br#"{"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}"#,
    ];
    let uris = ["/v2/models/add/infer", "/predict", "/v1/models/add:predict"];
    for i in 0..1500 {
        let mut body = seeds[i % 3].to_vec();
        for _ in 0..rng.random_range(1..4) {
            let pos = rng.random_range(0..body.len());
            body[pos] = rng.random();
        }
        let (status, _) = call(&app, "POST", uris[rng.random_range(0..3)], body).await;
        assert!(
            status.is_success() || status.is_client_error(),
            "status {status}"
        );
    }
    let (status, _) = call(&app, "GET", "/v2/health/live", vec![]).await;
    assert_eq!(status, StatusCode::OK);
}
