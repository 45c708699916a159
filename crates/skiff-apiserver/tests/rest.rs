//! The REST handlers in-process (router + SQLite store in a temp dir), one request at a time.

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use skiff_apiserver::auth::{
    MastersOnly, PeerIdentity, SYSTEM_MASTERS, TokenAuthenticator, UserInfo,
};
use skiff_apiserver::{ApiConfig, ApiServer, router};
use skiff_store::{SqliteOptions, SqliteStore, Store};
use std::sync::Arc;
use tower::ServiceExt;

struct Api {
    router: axum::Router,
    _dir: tempfile::TempDir,
}

impl Api {
    fn new() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            SqliteStore::open(&dir.path().join("db"), SqliteOptions::default()).unwrap();
        let mut tokens = TokenAuthenticator::new();
        tokens.add("secret-token", UserInfo::new("admin", &[SYSTEM_MASTERS]));
        let api = ApiServer::new(store, tokens, Arc::new(MastersOnly), ApiConfig::default());
        Api {
            router: router(api),
            _dir: dir,
        }
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        ct: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_as(
            method,
            uri,
            ct,
            body,
            Some(UserInfo::new("admin", &[SYSTEM_MASTERS])),
        )
        .await
    }

    async fn call_as(
        &self,
        method: &str,
        uri: &str,
        ct: &str,
        body: Option<Value>,
        user: Option<UserInfo>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", ct);
        if let Some(u) = user {
            req = req.extension(PeerIdentity(Some(u)));
        }
        let body = body
            .map(|b| Body::from(b.to_string()))
            .unwrap_or_else(Body::empty);
        let resp = self
            .router
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn ok(&self, method: &str, uri: &str, body: Value) -> Value {
        let (s, v) = self.call(method, uri, "application/json", Some(body)).await;
        assert!(s.is_success(), "{method} {uri}: {s} {v}");
        v
    }
}

async fn with_namespace() -> Api {
    let api = Api::new();
    api.ok(
        "POST",
        "/api/v1/namespaces",
        json!({"metadata": {"name": "default"}}),
    )
    .await;
    api
}

fn deployment(name: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "img:v1"}]}},
        },
    })
}

#[tokio::test]
async fn anonymous_requests_are_unauthorized_but_health_is_public() {
    let api = Api::new();
    let (s, v) = api
        .call_as("GET", "/api/v1/namespaces", "application/json", None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["reason"], "Unauthorized");
    let resp = api
        .router
        .clone()
        .oneshot(Request::get("/readyz").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (s, v) = api
        .call_as(
            "GET",
            "/api/v1/namespaces",
            "application/json",
            None,
            Some(UserInfo::new("bob", &[])),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
}

#[tokio::test]
async fn generation_bumps_on_spec_changes_only_and_status_is_separate() {
    let api = with_namespace().await;
    let d = api
        .ok(
            "POST",
            "/apis/apps/v1/namespaces/default/deployments",
            deployment("web"),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 1);
    assert_eq!(d["spec"]["replicas"], 1);
    let uri = "/apis/apps/v1/namespaces/default/deployments/web";
    let (_, d) = api
        .call(
            "PATCH",
            uri,
            "application/merge-patch+json",
            Some(json!({"metadata": {"labels": {"x": "y"}}})),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 1);
    let (_, d) = api
        .call(
            "PATCH",
            uri,
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 3}, "status": {"replicas": 9}})),
        )
        .await;
    assert_eq!(d["metadata"]["generation"], 2);
    assert_eq!(
        d["status"].get("replicas"),
        None,
        "the main resource must not change status"
    );
    let (s, d) = api
        .call(
            "PATCH",
            &format!("{uri}/status"),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 7}, "status": {"replicas": 3}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["status"]["replicas"], 3);
    assert_eq!(
        d["spec"]["replicas"], 3,
        "the status subresource must not change spec"
    );
    assert_eq!(d["metadata"]["generation"], 2);
}

#[tokio::test]
async fn no_op_updates_keep_the_resource_version() {
    let api = with_namespace().await;
    let cm = api
        .ok(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
        )
        .await;
    let (_, again) = api
        .call(
            "PATCH",
            "/api/v1/namespaces/default/configmaps/c",
            "application/merge-patch+json",
            Some(json!({"data": {"a": "1"}})),
        )
        .await;
    assert_eq!(
        cm["metadata"]["resourceVersion"],
        again["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn scale_subresource_reads_and_writes_replicas() {
    let api = with_namespace().await;
    api.ok(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        deployment("web"),
    )
    .await;
    let uri = "/apis/apps/v1/namespaces/default/deployments/web/scale";
    let (s, scale) = api.call("GET", uri, "application/json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["status"]["selector"], "app=web");
    let (s, scale) = api
        .call(
            "PATCH",
            uri,
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 5}})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{scale}");
    assert_eq!(scale["spec"]["replicas"], 5);
    let (_, d) = api
        .call(
            "GET",
            "/apis/apps/v1/namespaces/default/deployments/web",
            "application/json",
            None,
        )
        .await;
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2);
}

#[tokio::test]
async fn stale_resource_version_is_a_conflict() {
    let api = with_namespace().await;
    let cm = api
        .ok(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": "c"}, "data": {"a": "1"}}),
        )
        .await;
    api.ok(
        "PUT",
        "/api/v1/namespaces/default/configmaps/c",
        json!({"metadata": {"name": "c"}, "data": {"a": "2"}}),
    )
    .await;
    let mut stale = cm.clone();
    stale["data"]["a"] = json!("3");
    let (s, v) = api
        .call(
            "PUT",
            "/api/v1/namespaces/default/configmaps/c",
            "application/json",
            Some(stale),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "Conflict");
}

#[tokio::test]
async fn paging_with_continue_returns_every_object_once() {
    let api = with_namespace().await;
    for i in 0..7 {
        api.ok(
            "POST",
            "/api/v1/namespaces/default/configmaps",
            json!({"metadata": {"name": format!("c{i}")}}),
        )
        .await;
    }
    let mut names = Vec::new();
    let mut uri = "/api/v1/namespaces/default/configmaps?limit=3".to_string();
    loop {
        let (s, page) = api.call("GET", &uri, "application/json", None).await;
        assert_eq!(s, StatusCode::OK);
        for item in page["items"].as_array().unwrap() {
            names.push(item["metadata"]["name"].as_str().unwrap().to_string());
        }
        match page["metadata"]["continue"].as_str() {
            Some(c) => uri = format!("/api/v1/namespaces/default/configmaps?limit=3&continue={c}"),
            None => break,
        }
    }
    assert_eq!(names, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn binding_assigns_a_node_once() {
    let api = with_namespace().await;
    api.ok(
        "POST",
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let bind = |node: &str| json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": node}});
    let (s, _) = api
        .call(
            "POST",
            "/api/v1/namespaces/default/pods/p/binding",
            "application/json",
            Some(bind("n1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = api
        .call(
            "POST",
            "/api/v1/namespaces/default/pods/p/binding",
            "application/json",
            Some(bind("n2")),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    let (_, pod) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/p",
            "application/json",
            None,
        )
        .await;
    assert_eq!(pod["spec"]["nodeName"], "n1");
    assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
}

#[tokio::test]
async fn bound_pods_terminate_gracefully_unbound_ones_at_once() {
    let api = with_namespace().await;
    let pod = |name: &str, node: Option<&str>| {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(n) = node {
            p["spec"]["nodeName"] = json!(n);
        }
        p
    };
    api.ok("POST", "/api/v1/namespaces/default/pods", pod("a", None))
        .await;
    api.ok(
        "POST",
        "/api/v1/namespaces/default/pods",
        pod("b", Some("n1")),
    )
    .await;
    api.ok("DELETE", "/api/v1/namespaces/default/pods/a", json!({}))
        .await;
    let (s, _) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/a",
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let b = api
        .ok("DELETE", "/api/v1/namespaces/default/pods/b", json!({}))
        .await;
    assert_eq!(b["metadata"]["deletionGracePeriodSeconds"], 30);
    let (s, _) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/b",
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a bound pod waits for its node agent");
    // The node agent confirms termination with a zero grace period.
    api.ok(
        "DELETE",
        "/api/v1/namespaces/default/pods/b",
        json!({"gracePeriodSeconds": 0}),
    )
    .await;
    let (s, _) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/pods/b",
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn watch_from_a_future_revision_times_out() {
    let api = with_namespace().await;
    let (s, v) = api
        .call(
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=999999",
            "application/json",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{v}");
    assert_eq!(v["reason"], "Timeout");
}
