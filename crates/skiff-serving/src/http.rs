//! REST endpoints: Open Inference Protocol v2, its repository extension, KServe V1, `/predict`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::backend::TensorSpec;
use crate::protocol::{TensorRows, decode_infer, encode_infer, rows_to_input, simple_rows};
use crate::repository::{DefaultModel, ModelState, Repository};
use crate::service::{ServeError, check_load_parameters, infer, rejected};
use crate::simple::SimpleBody;
use crate::tensor::Tensor;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub repo: Arc<Repository>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
}

const HEADER_LEN: &str = "inference-header-content-length";

impl IntoResponse for ServeError {
    fn into_response(self) -> Response {
        let status = match &self {
            ServeError::NotFound(_) => StatusCode::NOT_FOUND,
            ServeError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ServeError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ServeError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        (status, axum::Json(json!({ "error": self.to_string() }))).into_response()
    }
}

type Result<T> = std::result::Result<T, ServeError>;

/// All REST routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v2/health/live",
            get(|| async { axum::Json(json!({ "live": true })) }),
        )
        .route("/v2/health/ready", get(server_ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(model_metadata))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route(
            "/v2/models/{model}/versions/{version}/stats",
            get(model_stats),
        )
        .route("/v2/models/{model}/config", get(model_config))
        .route(
            "/v2/models/{model}/versions/{version}/config",
            get(model_config),
        )
        .route("/v2/models/{model}/ready", get(model_ready))
        .route(
            "/v2/models/{model}/versions/{version}/ready",
            get(model_ready),
        )
        .route("/v2/models/{model}/infer", post(infer_v2))
        .route(
            "/v2/models/{model}/versions/{version}/infer",
            post(infer_v2),
        )
        .route(
            "/v2/repository/index",
            post(repository_index).get(repository_index),
        )
        .route("/v2/repository/models/{model}/load", post(repository_load))
        .route(
            "/v2/repository/models/{model}/unload",
            post(repository_unload),
        )
        .route("/v1/models/{model}", get(v1_model).post(v1_predict))
        .route("/predict", post(simple_predict))
        .route("/health", get(simple_health))
        .route("/metrics", get(metrics))
        .fallback(|| async { ServeError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            (
                StatusCode::METHOD_NOT_ALLOWED,
                axum::Json(json!({ "error": format!("{method} is not allowed on this endpoint") })),
            )
        })
        .layer(tower::layer::layer_fn(PlainBodies))
        .with_state(state)
}

/// Refuses compressed request bodies by name. Read as they are, a gzip body would fail with a
/// misleading length or JSON error. A plain service rather than `middleware::from_fn`, which
/// boxes every request's future (measured: about a microsecond per one-row request).
#[derive(Clone)]
struct PlainBodies<S>(S);

impl<S> tower::Service<axum::extract::Request> for PlainBodies<S>
where
    S: tower::Service<axum::extract::Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = futures::future::Either<
        S::Future,
        std::future::Ready<std::result::Result<Response, S::Error>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        let encoding = req.headers().get(header::CONTENT_ENCODING).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        });
        match encoding {
            Some(e) if !e.is_empty() && e != "identity" => {
                futures::future::Either::Right(std::future::ready(Ok((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    axum::Json(json!({
                        "error": format!(
                            "Content-Encoding {e:?} is not supported: send the request body uncompressed"
                        )
                    })),
                )
                    .into_response())))
            }
            _ => futures::future::Either::Left(self.0.call(req)),
        }
    }
}

async fn read_body(state: &AppState, body: Body) -> Result<bytes::Bytes> {
    axum::body::to_bytes(body, state.max_body_bytes)
        .await
        .map_err(|e| {
            let over_limit =
                std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                    e.source()
                })
                .any(|e| e.is::<http_body_util::LengthLimitError>());
            ServeError::BadRequest(if over_limit {
                format!(
                    "request body is larger than the {} byte limit",
                    state.max_body_bytes
                )
            } else {
                format!("request body could not be read to its end: {e}")
            })
        })
}

async fn server_ready(State(s): State<AppState>) -> Response {
    if s.repo.all_ready() {
        axum::Json(json!({ "ready": true })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "ready": false })),
        )
            .into_response()
    }
}

async fn server_metadata() -> axum::Json<Value> {
    axum::Json(json!({
        "name": "skiff",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": crate::service::EXTENSIONS,
    }))
}

fn specs(specs: &[TensorSpec]) -> Vec<Value> {
    specs
        .iter()
        .map(|t| json!({ "name": t.name, "datatype": t.datatype.as_str(), "shape": t.shape }))
        .collect()
}

/// `/v2/models/{model}/...` and `/v2/models/{model}/versions/{version}/...`: one handler serves
/// both, the version absent on the first.
#[derive(Deserialize)]
struct ModelPath {
    model: String,
    version: Option<String>,
}

async fn model_metadata(
    State(s): State<AppState>,
    Path(p): Path<ModelPath>,
) -> Result<axum::Json<Value>> {
    let served = s.repo.get(&p.model, p.version.as_deref())?;
    // A version asked for by number ("01" is 1) is reported as the server names it.
    let versions = match p.version {
        Some(_) => vec![served.version.clone()],
        None => s.repo.versions(&p.model),
    };
    Ok(axum::Json(json!({
        "name": served.name,
        "versions": versions,
        "platform": served.platform,
        "inputs": specs(&served.signature.inputs),
        "outputs": specs(&served.signature.outputs),
    })))
}

fn stats(s: &AppState, model: &str, version: Option<&str>) -> Result<axum::Json<Value>> {
    let stats = crate::statistics::collect(&s.repo, model, version)?;
    Ok(axum::Json(json!({
        "model_stats": stats.iter().map(|m| m.to_json()).collect::<Vec<_>>(),
    })))
}

async fn all_stats(State(s): State<AppState>) -> Result<axum::Json<Value>> {
    stats(&s, "", None)
}

async fn model_stats(
    State(s): State<AppState>,
    Path(p): Path<ModelPath>,
) -> Result<axum::Json<Value>> {
    stats(&s, &p.model, p.version.as_deref())
}

async fn model_config(
    State(s): State<AppState>,
    Path(p): Path<ModelPath>,
) -> Result<axum::Json<Value>> {
    let served = s.repo.get(&p.model, p.version.as_deref())?;
    Ok(axum::Json(
        crate::model_config::ModelConfigView::of(&served).to_json(),
    ))
}

async fn model_ready(
    State(s): State<AppState>,
    Path(p): Path<ModelPath>,
) -> Result<axum::Json<Value>> {
    s.repo.get(&p.model, p.version.as_deref())?;
    Ok(axum::Json(json!({ "name": p.model, "ready": true })))
}

async fn infer_json(
    s: AppState,
    model: String,
    version: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    // The body is read before any answer, errors included: answering first would have hyper
    // close the connection under a client still sending it (Python's requests sends headers
    // and body apart), which the client sees as a dropped connection instead of the answer.
    let bytes = read_body(&s, body).await;
    // An unknown model is a 404 whatever the body holds.
    let target = s.repo.get(&model, version.as_deref())?;
    let decoded = async {
        let header_len = match headers.get(HEADER_LEN) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .ok()
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .ok_or_else(|| {
                        ServeError::BadRequest(
                            "Inference-Header-Content-Length is not a number".into(),
                        )
                    })?,
            ),
        };
        let bytes = bytes?;
        Ok(decode_infer(&bytes, header_len)?)
    }
    .await;
    let mut req = rejected(&target, decoded)?;
    let classes = req.classifications();
    rejected(
        &target,
        crate::classify::check(&classes, &target.signature.outputs),
    )?;
    let inputs = std::mem::take(&mut req.inputs);
    let (served, outputs) = infer(
        &s.repo,
        &model,
        version.as_deref(),
        inputs,
        req.output_names(),
    )
    .await?;
    let outputs = crate::classify::apply(outputs, &classes)?;
    let enc = encode_infer(&served.name, &served.version, &req, &outputs)?;
    let mut resp = Response::new(Body::from(enc.body));
    let h = resp.headers_mut();
    match enc.header_len {
        Some(n) => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(HEADER_LEN, HeaderValue::from(n));
        }
        None => {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok(resp)
}

async fn infer_v2(
    State(s): State<AppState>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response> {
    infer_json(s, p.model, p.version, headers, body).await
}

async fn repository_index(State(s): State<AppState>, body: Body) -> Result<axum::Json<Value>> {
    let bytes = read_body(&s, body).await?;
    let only_ready = if bytes.iter().all(u8::is_ascii_whitespace) {
        false
    } else {
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ServeError::BadRequest(format!("malformed JSON: {e}")))?;
        v.get("ready").and_then(Value::as_bool).unwrap_or(false)
    };
    let rows: Vec<Value> = s
        .repo
        .index()
        .into_iter()
        .filter(|e| !only_ready || e.state == ModelState::Ready)
        .map(|e| {
            let (state, reason) = e.state.index_state();
            let mut row = json!({ "name": e.name, "state": state, "reason": reason });
            if let Some(v) = e.version {
                row["version"] = json!(v);
            }
            row
        })
        .collect();
    Ok(axum::Json(Value::Array(rows)))
}

/// The body of a repository load request: `{"parameters": {...}}`, or nothing.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LoadBody {
    #[serde(default)]
    parameters: Option<serde_json::Map<String, Value>>,
}

async fn repository_load(
    State(s): State<AppState>,
    Path(model): Path<String>,
    body: Body,
) -> Result<axum::Json<Value>> {
    let bytes = read_body(&s, body).await?;
    if !bytes.iter().all(u8::is_ascii_whitespace) {
        let malformed = |e: String| ServeError::BadRequest(format!("malformed load request: {e}"));
        // An object only: serde would also read the struct from an array.
        let load = match serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))? {
            v @ Value::Object(_) => {
                LoadBody::deserialize(v).map_err(|e| malformed(e.to_string()))?
            }
            _ => return Err(malformed("expected a JSON object".into())),
        };
        check_load_parameters(
            load.parameters
                .iter()
                .flat_map(|p| p.keys())
                .map(String::as_str),
        )?;
    }
    let repo = s.repo.clone();
    let name = model.clone();
    // Loading reads files and builds sessions: keep it off the async workers.
    tokio::task::spawn_blocking(move || repo.load(&name))
        .await
        .map_err(|e| ServeError::Internal(e.to_string()))??;
    Ok(axum::Json(json!({})))
}

async fn repository_unload(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<axum::Json<Value>> {
    s.repo.unload(&model)?;
    Ok(axum::Json(json!({})))
}

async fn v1_model(
    State(s): State<AppState>,
    Path(model): Path<String>,
) -> Result<axum::Json<Value>> {
    let ready = s.repo.get(&model, None).is_ok();
    if !s.repo.model_names().contains(&model) {
        return Err(ServeError::NotFound(format!("unknown model {model:?}")));
    }
    Ok(axum::Json(json!({ "name": model, "ready": ready })))
}

/// Runs a simple-style request: rows in, `{"predictions": ...}` out. `fast` is the one-pass
/// reading of `bytes`, if it had one; otherwise, or when it does not fit the model, the body is
/// read as a `Value` (`parsed`, if the caller already has it).
async fn predict_rows(
    s: &AppState,
    model: &str,
    fast: Option<&SimpleBody>,
    parsed: Option<Value>,
    bytes: &[u8],
) -> Result<axum::Json<PredictAnswer>> {
    let served = s.repo.get(model, None)?;
    let input = match fast.and_then(|b| b.input(&served.signature)) {
        Some(t) => t,
        None => rejected(&served, rows_input(&served.signature, parsed, bytes))?,
    };
    let (served, outputs) =
        infer(&s.repo, model, Some(&served.version), vec![input], vec![]).await?;
    for t in &outputs {
        t.data.check_json_encodable(&t.name)?;
    }
    Ok(axum::Json(PredictAnswer {
        outputs,
        version: served.version.clone(),
    }))
}

/// The input tensor of a simple-style body read as a `Value` (`parsed`, if the caller has it).
fn rows_input(
    sig: &crate::backend::Signature,
    parsed: Option<Value>,
    bytes: &[u8],
) -> Result<Tensor> {
    let body = match parsed {
        Some(v) => v,
        None => parse_json(bytes)?,
    };
    let (key, rows) = simple_rows(&body)?;
    Ok(rows_to_input(sig, key, rows)?)
}

/// `{"predictions": <first output's rows>, "model_version": ..., "outputs": {name: rows}}`, the
/// last only when the model has more than one output.
struct PredictAnswer {
    outputs: Vec<Tensor>,
    version: String,
}

impl serde::Serialize for PredictAnswer {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        struct Named<'a>(&'a [Tensor]);
        impl serde::Serialize for Named<'_> {
            fn serialize<S: serde::Serializer>(
                &self,
                ser: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                ser.collect_map(self.0.iter().map(|t| (&t.name, TensorRows(t))))
            }
        }
        let mut map = ser.serialize_map(None)?;
        match self.outputs.first() {
            Some(t) => map.serialize_entry("predictions", &TensorRows(t))?,
            None => map.serialize_entry("predictions", &[(); 0])?,
        }
        map.serialize_entry("model_version", &self.version)?;
        if self.outputs.len() > 1 {
            map.serialize_entry("outputs", &Named(&self.outputs))?;
        }
        map.end()
    }
}

fn parse_json(bytes: &[u8]) -> Result<Value> {
    serde_json::from_slice(bytes).or_else(|e| {
        // Bare NaN/Infinity, as Python's json writes them, are read as their strings.
        crate::json_scan::quote_non_finite(bytes)
            .filter(|_| e.is_syntax())
            .and_then(|quoted| serde_json::from_slice(&quoted.text).ok())
            .ok_or_else(|| ServeError::BadRequest(format!("malformed JSON: {e}")))
    })
}

async fn v1_predict(
    State(s): State<AppState>,
    Path(target): Path<String>,
    body: Body,
) -> Result<axum::Json<PredictAnswer>> {
    let model = target.strip_suffix(":predict").ok_or_else(|| {
        ServeError::NotFound(format!(
            "no such endpoint /v1/models/{target}; use :predict"
        ))
    })?;
    let bytes = read_body(&s, body).await?;
    let fast = SimpleBody::decode(&bytes);
    predict_rows(&s, model, fast.as_ref(), None, &bytes).await
}

#[derive(serde::Deserialize)]
struct PredictQuery {
    model: Option<String>,
}

async fn simple_predict(
    State(s): State<AppState>,
    Query(q): Query<PredictQuery>,
    body: Body,
) -> Result<axum::Json<PredictAnswer>> {
    let bytes = read_body(&s, body).await?;
    let fast = SimpleBody::decode(&bytes);
    let parsed = match fast {
        Some(_) => None,
        None => Some(parse_json(&bytes)?),
    };
    let named_in_body = match &fast {
        Some(b) => b.model.clone(),
        None => match parsed.as_ref().and_then(|v| v.get("model")) {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.clone()),
            Some(_) => {
                return Err(ServeError::BadRequest(
                    "\"model\" must be a string naming a served model".into(),
                ));
            }
        },
    };
    let model = match (q.model, named_in_body) {
        (Some(a), Some(b)) if a != b => {
            return Err(ServeError::BadRequest(format!(
                "the query names the model {a:?} and the body {b:?}; name it once"
            )));
        }
        (a, b) => a.or(b),
    };
    let model = match model {
        Some(m) => m,
        None => match s.repo.default_model() {
            DefaultModel::One(m) => m,
            DefaultModel::NoModels => {
                return Err(ServeError::NotFound("no model is served".into()));
            }
            DefaultModel::NoneReady => {
                return Err(ServeError::Unavailable(
                    "no model is ready; name one with ?model=NAME to see why".into(),
                ));
            }
            DefaultModel::Several => {
                return Err(ServeError::BadRequest(
                    "several models are served; name one with ?model=NAME or \"model\" in the body"
                        .into(),
                ));
            }
        },
    };
    predict_rows(&s, &model, fast.as_ref(), parsed, &bytes).await
}

async fn simple_health(State(s): State<AppState>) -> Response {
    if s.repo.all_ready() {
        axum::Json(json!({ "status": "ok" })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "loading" })),
        )
            .into_response()
    }
}

async fn metrics(State(s): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.repo.metrics().render(),
    )
        .into_response()
}
