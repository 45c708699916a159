//! The generic REST handlers: get, list, create, update, patch, delete and deletecollection
//! for every resource, plus the status, scale and finalize subresources.

use crate::admission::{self, FieldValidation};
use crate::auth::{Decision, RequestAttributes, UserInfo};
use crate::request::{self, IncludeObject, Output, Query, ResourcePath, Target};
use crate::response::{self, Failure, HandlerResult};
use crate::{ApiServer, alloc, discovery, storage, watch};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use base64::Engine;
use http::{Method, StatusCode, header};
use serde_json::{Value, json};
use skiff_api::meta::{self, FieldSelector, LabelSelector};
use skiff_api::registry::{self, ResourceDef};
use skiff_api::{ApiError, patch, table};
use skiff_store::{KeyValue, RangeOptions, Revision, StoreError};
use std::sync::Arc;

/// Entry point for every `/api/...` and `/apis/...` request.
pub async fn resource(State(api): State<Arc<ApiServer>>, req: Request) -> Response {
    match dispatch(api, req).await {
        Ok(r) => r,
        Err(Failure(e)) => response::error(e),
    }
}

async fn dispatch(api: Arc<ApiServer>, req: Request) -> HandlerResult {
    let Some(user) = req.extensions().get::<UserInfo>().cloned() else {
        return Err(ApiError::Unauthorized.into());
    };
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let target = request::parse_path(&path)?;
    let rp = match target {
        Target::GroupVersion { group, version } => {
            authorize(&api, &user, non_resource("get", &path))?;
            return match method {
                Method::GET => Ok(discovery::resource_list(&group, &version)),
                _ => Err(ApiError::MethodNotAllowed.into()),
            };
        }
        Target::Group { group } => {
            authorize(&api, &user, non_resource("get", &path))?;
            return Ok(discovery::group(&group)?);
        }
        Target::Resource(rp) => rp,
    };
    let verb = verb_of(&method, &rp, &query)?;
    authorize(
        &api,
        &user,
        RequestAttributes {
            verb: verb.to_string(),
            group: rp.def.group.to_string(),
            resource: rp.def.plural.to_string(),
            subresource: rp.subresource.clone().unwrap_or_default(),
            namespace: rp.namespace.clone().unwrap_or_default(),
            name: rp.name.clone().unwrap_or_default(),
            path: path.clone(),
            resource_request: true,
        },
    )?;
    if let Some(sub) = rp.subresource.as_deref() {
        let ok = match sub {
            "status" => rp.def.status,
            "scale" => rp.def.scale,
            "finalize" => rp.def.kind == "Namespace",
            "binding" | "eviction" => rp.def.kind == "Pod" && rp.def.group.is_empty(),
            s if crate::proxy::is_node_subresource(s) => {
                rp.def.kind == "Pod" && rp.def.group.is_empty()
            }
            _ => false,
        };
        if !ok {
            return Err(ApiError::NoRoute.into());
        }
        if crate::proxy::is_node_subresource(sub) {
            return crate::proxy::serve(api, &rp, req).await;
        }
    }
    let output = request::negotiate(
        req.headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok()),
        &query,
    );
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let body = read_body(req.into_body(), api.config.max_body_bytes).await?;
    let ctx = Ctx {
        api,
        rp,
        query,
        output,
        user,
        content_type,
        user_agent,
    };
    match verb {
        "get" => ctx.get().await,
        "list" => ctx.list().await,
        "watch" => ctx.watch().await,
        "create" => ctx.create(&body).await,
        "update" => ctx.update(&body).await,
        "patch" => ctx.patch(&body).await,
        "delete" => ctx.delete(&body).await,
        "deletecollection" => ctx.delete_collection(&body).await,
        _ => Err(ApiError::MethodNotAllowed.into()),
    }
}

fn non_resource(verb: &str, path: &str) -> RequestAttributes {
    RequestAttributes {
        verb: verb.into(),
        group: String::new(),
        resource: String::new(),
        subresource: String::new(),
        namespace: String::new(),
        name: String::new(),
        path: path.into(),
        resource_request: false,
    }
}

fn authorize(api: &ApiServer, user: &UserInfo, attrs: RequestAttributes) -> Result<(), Failure> {
    match api.authorizer.authorize(user, &attrs) {
        Decision::Allow => Ok(()),
        Decision::Deny(message) => Err(ApiError::Forbidden { message }.into()),
    }
}

fn verb_of(method: &Method, rp: &ResourcePath, query: &Query) -> Result<&'static str, ApiError> {
    let named = rp.name.is_some();
    let namespaced_ok = !rp.def.namespaced || rp.namespace.is_some();
    let v = match (method.as_str(), named) {
        ("GET", false) if query.flag("watch") => "watch",
        ("GET", false) => "list",
        ("GET", true) if query.flag("watch") => "watch",
        ("GET", true) => "get",
        ("POST", false) => "create",
        ("POST", true)
            if matches!(
                rp.subresource.as_deref(),
                Some("binding" | "eviction" | "exec" | "attach" | "portforward")
            ) =>
        {
            "create"
        }
        ("PUT", true) => "update",
        ("PATCH", true) => "patch",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        _ => return Err(ApiError::MethodNotAllowed),
    };
    // Only reads may span all namespaces.
    if !namespaced_ok && !matches!(v, "list" | "watch") {
        return Err(ApiError::NoRoute);
    }
    Ok(v)
}

async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::RequestEntityTooLarge)
        }
        Err(e) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
    }
}

/// Options of a delete, from the body (DeleteOptions) and the query.
#[derive(Debug, Default)]
struct DeleteOptions {
    propagation: Option<String>,
    grace_period: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    fn parse(body: &[u8], query: &Query) -> Result<Self, ApiError> {
        let mut o = DeleteOptions {
            propagation: query.get("propagationPolicy").map(String::from),
            grace_period: query.int("gracePeriodSeconds")?,
            dry_run: query.dry_run(),
            ..Default::default()
        };
        if let Some(orphan) = query.get("orphanDependents") {
            o.propagation.get_or_insert(if orphan == "true" {
                "Orphan".into()
            } else {
                "Background".into()
            });
        }
        if !body.is_empty() {
            let b: Value = serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.into());
            }
            if let Some(orphan) = b.get("orphanDependents").and_then(Value::as_bool) {
                o.propagation.get_or_insert(if orphan {
                    "Orphan".into()
                } else {
                    "Background".into()
                });
            }
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period = Some(g);
            }
            o.precondition_uid = b
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(String::from);
            o.precondition_rv = b
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(String::from);
            if b.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"))
            {
                o.dry_run = true;
            }
        }
        if let Some(p) = &o.propagation
            && !matches!(p.as_str(), "Orphan" | "Background" | "Foreground")
        {
            return Err(ApiError::invalid(
                "",
                "DeleteOptions",
                "",
                vec![skiff_api::FieldError::not_supported(
                    "propagationPolicy",
                    p,
                    &["Foreground", "Background", "Orphan"],
                )],
            ));
        }
        if o.grace_period.is_some_and(|g| g < 0) {
            o.grace_period = Some(0);
        }
        Ok(o)
    }
}

/// One resource request.
struct Ctx {
    api: Arc<ApiServer>,
    rp: ResourcePath,
    query: Query,
    output: Output,
    user: UserInfo,
    content_type: Option<String>,
    user_agent: Option<String>,
}

impl Ctx {
    fn def(&self) -> &'static ResourceDef {
        self.rp.def
    }

    fn name(&self) -> &str {
        self.rp.name.as_deref().unwrap_or_default()
    }

    fn key(&self, name: &str) -> String {
        self.def().key(self.rp.namespace.as_deref(), name)
    }

    fn field_manager(&self) -> String {
        if let Some(m) = self.query.get("fieldManager") {
            return m.to_string();
        }
        // Kubernetes derives the manager from the user agent's program name.
        self.user_agent
            .as_deref()
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    }

    async fn load(&self, name: &str) -> Result<(Value, KeyValue), ApiError> {
        let key = self.key(name);
        match self.api.store.get(&key).await {
            Ok(Some(kv)) => Ok((storage::decode(&kv)?, kv)),
            Ok(None) => Err(ApiError::not_found(
                self.def().group,
                self.def().plural,
                name,
            )),
            Err(e) => Err(storage::store_error(self.def(), name, e)),
        }
    }

    /// Renders one object for the client (JSON, Table, metadata, or Scale for `/scale`).
    fn render(&self, code: StatusCode, obj: &Value) -> Response {
        if self.rp.subresource.as_deref() == Some("scale") {
            return response::json(code, &to_scale(obj));
        }
        match self.output {
            Output::Json => response::json(code, obj),
            Output::Metadata => response::json(code, &partial_metadata(obj)),
            Output::Table(inc) => {
                let rv = meta::resource_version(obj).unwrap_or_default().to_string();
                response::json(
                    code,
                    &build_table(self.def(), std::slice::from_ref(obj), inc, &rv, None, true),
                )
            }
        }
    }

    async fn get(&self) -> HandlerResult {
        let (obj, _) = self.load(self.name()).await?;
        Ok(self.render(StatusCode::OK, &obj))
    }

    fn selectors(&self) -> Result<(LabelSelector, FieldSelector), ApiError> {
        let ls = LabelSelector::parse(self.query.get("labelSelector").unwrap_or_default())?;
        let fs = FieldSelector::parse(
            self.query.get("fieldSelector").unwrap_or_default(),
            self.def().kind,
        )?;
        Ok((ls, fs))
    }

    fn prefix(&self) -> String {
        match &self.rp.namespace {
            Some(ns) if self.def().namespaced => self.def().namespace_prefix(ns),
            _ => self.def().key_prefix(),
        }
    }

    async fn list(&self) -> HandlerResult {
        let (ls, fs) = self.selectors()?;
        let limit = self
            .query
            .int("limit")?
            .filter(|l| *l > 0)
            .map(|l| l as usize);
        let (mut start_after, mut at_rev) = (None, 0);
        if let Some(token) = self.query.get("continue") {
            let (s, r) = decode_continue(token)?;
            start_after = Some(s);
            at_rev = r;
        }
        let prefix = self.prefix();
        let mut items = Vec::new();
        // Plain JSON lists encode each item as soon as it is decoded: holding every decoded
        // object of a big list at once costs far more memory than its JSON.
        let encode_now = matches!(self.output, Output::Json);
        let mut encoded: Vec<u8> = Vec::new();
        let mut count = 0usize;
        let mut next: Option<String> = None;
        let mut revision: Revision;
        loop {
            let page = limit.map(|l| (l - count).max(1) * 2).unwrap_or(0);
            let res = self
                .api
                .store
                .range(
                    &prefix,
                    RangeOptions {
                        start_after: start_after.clone(),
                        limit: page,
                        revision: at_rev,
                    },
                )
                .await
                .map_err(|e| storage::store_error(self.def(), "", e))?;
            revision = res.revision;
            if at_rev == 0 {
                at_rev = res.revision;
            }
            let mut last_key = None;
            for kv in &res.kvs {
                last_key = Some(kv.key.clone());
                let obj = storage::decode(kv)?;
                if !ls.matches(meta::labels(&obj)) || !fs.matches(&obj) {
                    continue;
                }
                if encode_now {
                    if count > 0 {
                        encoded.push(b',');
                    }
                    serde_json::to_writer(&mut encoded, &obj).map_err(ApiError::internal)?;
                } else {
                    items.push(obj);
                }
                count += 1;
                if limit.is_some_and(|l| count >= l) {
                    break;
                }
            }
            let full = limit.is_some_and(|l| count >= l);
            let consumed_all = last_key.as_deref() == res.kvs.last().map(|k| k.key.as_str());
            if full {
                if res.more || !consumed_all {
                    next = last_key.map(|k| encode_continue(&k, at_rev));
                }
                break;
            }
            if !res.more || res.kvs.is_empty() {
                break;
            }
            start_after = last_key;
        }
        let rv = if at_rev != 0 { at_rev } else { revision }.to_string();
        let body = match self.output {
            Output::Table(inc) => build_table(self.def(), &items, inc, &rv, next.as_deref(), true),
            Output::Metadata => {
                let items: Vec<Value> = items.iter().map(partial_metadata).collect();
                json!({
                    "kind": "PartialObjectMetadataList",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": list_meta(&rv, next.as_deref()),
                    "items": items,
                })
            }
            Output::Json => {
                // The list without items, then the encoded items spliced in as `items`.
                let head = json!({
                    "kind": self.def().list_kind(),
                    "apiVersion": self.def().api_version(),
                    "metadata": list_meta(&rv, next.as_deref()),
                });
                let mut out = serde_json::to_vec(&head).map_err(ApiError::internal)?;
                out.pop(); // the closing brace
                out.reserve(encoded.len() + 12);
                out.extend_from_slice(b",\"items\":[");
                out.extend_from_slice(&encoded);
                out.extend_from_slice(b"]}");
                return Ok(response::bytes(StatusCode::OK, "application/json", out));
            }
        };
        Ok(response::json(StatusCode::OK, &body))
    }

    async fn watch(&self) -> HandlerResult {
        let (ls, mut fs) = self.selectors()?;
        if let Some(name) = &self.rp.name {
            fs.0.push(("metadata.name".into(), false, name.clone()));
        }
        let timeout = self
            .query
            .int("timeoutSeconds")?
            .filter(|t| *t > 0)
            .map(|t| std::time::Duration::from_secs(t as u64));
        let spec = watch::WatchSpec {
            def: self.def(),
            prefix: self.prefix(),
            labels: ls,
            fields: fs,
            resource_version: self.query.get("resourceVersion").map(String::from),
            send_initial_events: self.query.flag("sendInitialEvents"),
            bookmarks: self.query.flag("allowWatchBookmarks"),
            timeout: timeout
                .unwrap_or(self.api.config.max_watch)
                .min(self.api.config.max_watch),
            bookmark_interval: self.api.config.bookmark_interval,
            output: self.output,
            encoded: self.api.watch_encoded.clone(),
        };
        watch::serve(self.api.store.clone(), spec).await
    }

    fn decode(&self, body: &[u8]) -> Result<Value, ApiError> {
        request::decode_body(self.content_type.as_deref(), body)
    }

    /// Checks that the namespace exists and is not terminating (for creates of `name`).
    async fn check_namespace(&self, name: &str) -> Result<(), ApiError> {
        let Some(ns) = self
            .rp
            .namespace
            .as_deref()
            .filter(|_| self.def().namespaced)
        else {
            return Ok(());
        };
        let nsdef = registry::lookup("", "v1", "namespaces").expect("namespaces registered");
        match self.api.store.get(&nsdef.key(None, ns)).await {
            Ok(Some(kv)) => {
                let obj = storage::decode(&kv)?;
                if meta::deletion_timestamp(&obj).is_some() {
                    return Err(ApiError::Forbidden {
                        message: format!(
                            "{} \"{}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                            self.def().plural,
                            name,
                        ),
                    });
                }
                Ok(())
            }
            Ok(None) => Err(ApiError::not_found("", "namespaces", ns)),
            Err(e) => Err(storage::store_error(nsdef, ns, e)),
        }
    }

    fn check_body_namespace(&self, obj: &Value) -> Result<(), ApiError> {
        if !self.def().namespaced {
            return Ok(());
        }
        if let (Some(body_ns), Some(url_ns)) = (
            meta::namespace(obj).filter(|s| !s.is_empty()),
            self.rp.namespace.as_deref(),
        ) && body_ns != url_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        Ok(())
    }

    async fn allocate(&self, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
        if self.def().kind != "Service" || !self.def().group.is_empty() {
            return Ok(());
        }
        let _guard = self.api.alloc_lock.lock().await;
        let all = self
            .api
            .store
            .range(&self.def().key_prefix(), RangeOptions::default())
            .await
            .map_err(|e| storage::store_error(self.def(), "", e))?;
        let services: Vec<Value> = all
            .kvs
            .iter()
            .filter_map(|kv| storage::decode(kv).ok())
            .collect();
        let skip = old.map(|o| {
            (
                meta::namespace(o).unwrap_or_default(),
                meta::name(o).unwrap_or_default(),
            )
        });
        let in_use = alloc::InUse::from_services(services.iter(), skip);
        alloc::allocate(
            obj,
            old,
            &in_use,
            self.api.config.service_cidr,
            self.api.config.node_port_range,
        )
    }

    async fn create(&self, body: &[u8]) -> HandlerResult {
        match self.rp.subresource.as_deref() {
            None => {}
            Some("binding") => return self.bind(body).await,
            Some("eviction") => return self.evict(body).await,
            Some(_) => return Err(ApiError::MethodNotAllowed.into()),
        }
        let mut obj = self.decode(body)?;
        let def = self.def();
        admission::check_type(def, &mut obj)?;
        let mode = FieldValidation::parse(self.query.get("fieldValidation"))?;
        let warnings = admission::field_validation(def, &mut obj, mode)?;
        self.check_body_namespace(&obj)?;
        self.check_namespace(meta::name(&obj).unwrap_or_default())
            .await?;
        admission::prepare_create(def, &mut obj, self.rp.namespace.as_deref())?;
        let generate = meta::meta_str(&obj, "generateName").map(String::from);
        let explicit = meta::name(&obj).filter(|n| !n.is_empty()).map(String::from);
        if explicit.is_none() && generate.is_none() {
            let err = skiff_api::FieldError::required(
                "metadata.name",
                "name or generateName is required",
            );
            return Err(ApiError::invalid(def.group, def.kind, "", vec![err]).into());
        }
        self.allocate(&mut obj, None).await?;
        let manager = self.field_manager();
        for attempt in 0..8 {
            if explicit.is_none() {
                let name = format!(
                    "{}{}",
                    generate.as_deref().unwrap_or_default(),
                    admission::random_suffix()
                );
                meta::set_meta(&mut obj, "name", Value::String(name));
            }
            admission::finish(def, &mut obj, None)?;
            record_update(def, None, &mut obj, &manager);
            let name = meta::name(&obj).unwrap_or_default().to_string();
            if self.query.dry_run() {
                return Ok(response::with_warnings(
                    self.render(StatusCode::CREATED, &obj),
                    &warnings,
                ));
            }
            let key = self.key(&name);
            match self.api.store.create(&key, storage::encode(&obj)?).await {
                Ok(rev) => {
                    meta::set_meta(&mut obj, "resourceVersion", Value::String(rev.to_string()));
                    return Ok(response::with_warnings(
                        self.render(StatusCode::CREATED, &obj),
                        &warnings,
                    ));
                }
                Err(StoreError::AlreadyExists(_)) if explicit.is_none() && attempt < 7 => continue,
                Err(e) => return Err(storage::store_error(def, &name, e).into()),
            }
        }
        Err(ApiError::internal("could not generate a unique name").into())
    }

    /// `pods/<name>/binding`: assigns an unbound pod to a node (what the scheduler does).
    async fn bind(&self, body: &[u8]) -> HandlerResult {
        let binding = self.decode(body)?;
        let name = self.name().to_string();
        let node = binding
            .pointer("/target/name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                let err = skiff_api::FieldError::required("target.name", "");
                ApiError::invalid("", "Binding", &name, vec![err])
            })?
            .to_string();
        if let Some(n) = meta::name(&binding).filter(|n| *n != name) {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            ))
            .into());
        }
        for _ in 0..8 {
            let (old, kv) = self.load(&name).await?;
            if meta::deletion_timestamp(&old).is_some() {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: "pods".into(),
                    name: name.clone(),
                    message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is being deleted, cannot be assigned to a host"),
                }
                .into());
            }
            if let Some(current) = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
            {
                return Err(ApiError::Conflict {
                    group: String::new(),
                    resource: "pods".into(),
                    name: name.clone(),
                    message: format!("Operation cannot be fulfilled on pods/binding \"{name}\": pod {name} is already assigned to node \"{current}\""),
                }
                .into());
            }
            let mut new = old.clone();
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("nodeName".into(), json!(node));
            }
            let condition = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": admission::now()});
            let status = new
                .as_object_mut()
                .map(|m| m.entry("status").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut);
            if let Some(status) = status {
                let conds = status.entry("conditions").or_insert_with(|| json!([]));
                if let Some(list) = conds.as_array_mut() {
                    list.retain(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"));
                    list.push(condition);
                }
            }
            match self.write_main(new, &old, &kv).await {
                Ok(_) => {
                    return Ok(response::json(
                        StatusCode::CREATED,
                        &skiff_api::error::success_status(None),
                    ));
                }
                Err(ApiError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict("", "pods", &name).into())
    }

    /// `pods/<name>/eviction`: a graceful delete on behalf of an Eviction (no disruption
    /// budgets exist yet, so every eviction is allowed).
    async fn evict(&self, body: &[u8]) -> HandlerResult {
        let eviction = self.decode(body)?;
        let opts_body = eviction
            .get("deleteOptions")
            .map(|o| serde_json::to_vec(o).unwrap_or_default())
            .unwrap_or_default();
        let opts = DeleteOptions::parse(&opts_body, &self.query)?;
        let (old, kv) = self.load(self.name()).await?;
        self.delete_one(&old, &kv, &opts).await?;
        Ok(response::json(
            StatusCode::CREATED,
            &skiff_api::error::success_status(None),
        ))
    }

    async fn update(&self, body: &[u8]) -> HandlerResult {
        let mut new = self.decode(body)?;
        let name = self.name().to_string();
        if self.rp.subresource.as_deref() == Some("scale") {
            let replicas = scale_replicas(&new);
            let rv = meta::resource_version(&new).map(String::from);
            return self.write_scale(replicas, rv).await;
        }
        let (old, kv) = self.load(&name).await?;
        if self.rp.subresource.is_none() {
            admission::check_type(self.def(), &mut new)?;
        }
        match meta::name(&new) {
            Some(n) if n == name => {}
            Some(n) => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                ))
                .into());
            }
            None => {
                let err = skiff_api::FieldError::required(
                    "metadata.name",
                    "name or generateName is required",
                );
                return Err(
                    ApiError::invalid(self.def().group, self.def().kind, "", vec![err]).into(),
                );
            }
        }
        let mode = FieldValidation::parse(self.query.get("fieldValidation"))?;
        let warnings = admission::field_validation(self.def(), &mut new, mode)?;
        let (obj, code) = self.write(new, &old, &kv, true).await?;
        Ok(response::with_warnings(self.render(code, &obj), &warnings))
    }

    /// The common tail of update and patch: preconditions, admission, and the guarded write.
    /// Returns the object as stored (or deleted, when the last finalizer went away).
    async fn write(
        &self,
        mut new: Value,
        old: &Value,
        kv: &KeyValue,
        check_rv: bool,
    ) -> Result<(Value, StatusCode), ApiError> {
        let def = self.def();
        let name = self.name().to_string();
        self.check_body_namespace(&new)?;
        if check_rv
            && let Some(rv) = meta::resource_version(&new).filter(|s| !s.is_empty())
            && storage::parse_rv(rv)? != kv.mod_revision
        {
            return Err(ApiError::conflict(def.group, def.plural, &name));
        }
        match self.rp.subresource.as_deref() {
            Some("status") => admission::prepare_update(def, &mut new, old, true),
            Some("finalize") => {
                let finalizers = new.pointer("/spec/finalizers").cloned();
                new = old.clone();
                if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                    match finalizers {
                        Some(f) => spec.insert("finalizers".into(), f),
                        None => spec.remove("finalizers"),
                    };
                }
            }
            _ => {
                admission::prepare_update(def, &mut new, old, false);
                self.allocate(&mut new, Some(old)).await?;
            }
        }
        admission::finish(def, &mut new, Some(old))?;
        record_update(def, Some(old), &mut new, &self.field_manager());
        if !admission::changed(old, &new) {
            return Ok((old.clone(), StatusCode::OK));
        }
        if self.query.dry_run() {
            return Ok((new, StatusCode::OK));
        }
        let key = self.key(&name);
        // An object being deleted whose last finalizer was just removed goes away now.
        if meta::deletion_timestamp(&new).is_some()
            && meta::finalizers(&new).is_empty()
            && !namespace_finalizers_pending(def, &new)
        {
            let (_, rev) = self
                .api
                .store
                .delete(&key, kv.mod_revision)
                .await
                .map_err(|e| storage::store_error(def, &name, e))?;
            meta::set_meta(&mut new, "resourceVersion", Value::String(rev.to_string()));
            return Ok((new, StatusCode::OK));
        }
        let rev = self
            .api
            .store
            .update(&key, storage::encode(&new)?, kv.mod_revision)
            .await
            .map_err(|e| storage::store_error(def, &name, e))?;
        meta::set_meta(&mut new, "resourceVersion", Value::String(rev.to_string()));
        Ok((new, StatusCode::OK))
    }

    async fn write_scale(&self, replicas: Option<i64>, rv: Option<String>) -> HandlerResult {
        let def = self.def();
        let name = self.name().to_string();
        let Some(replicas) = replicas else {
            let err = skiff_api::FieldError::required("spec.replicas", "");
            return Err(ApiError::invalid("autoscaling", "Scale", &name, vec![err]).into());
        };
        if replicas < 0 {
            let err = skiff_api::FieldError::invalid(
                "spec.replicas",
                replicas,
                "must be greater than or equal to 0",
            );
            return Err(ApiError::invalid("autoscaling", "Scale", &name, vec![err]).into());
        }
        for _ in 0..5 {
            let (old, kv) = self.load(&name).await?;
            if let Some(rv) = rv.as_deref().filter(|s| !s.is_empty())
                && storage::parse_rv(rv)? != kv.mod_revision
            {
                return Err(ApiError::conflict(def.group, def.plural, &name).into());
            }
            let mut new = old.clone();
            if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("replicas".into(), json!(replicas));
            }
            match self.write_main(new, &old, &kv).await {
                Ok(obj) => return Ok(self.render(StatusCode::OK, &obj)),
                Err(ApiError::Conflict { .. }) if rv.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(def.group, def.plural, &name).into())
    }

    /// Writes a change of the main resource on behalf of a subresource (scale).
    async fn write_main(
        &self,
        mut new: Value,
        old: &Value,
        kv: &KeyValue,
    ) -> Result<Value, ApiError> {
        let def = self.def();
        admission::finish(def, &mut new, Some(old))?;
        record_update(def, Some(old), &mut new, &self.field_manager());
        if !admission::changed(old, &new) || self.query.dry_run() {
            return Ok(new);
        }
        let rev = self
            .api
            .store
            .update(&kv.key, storage::encode(&new)?, kv.mod_revision)
            .await
            .map_err(|e| storage::store_error(def, self.name(), e))?;
        meta::set_meta(&mut new, "resourceVersion", Value::String(rev.to_string()));
        Ok(new)
    }

    async fn patch(&self, body: &[u8]) -> HandlerResult {
        let def = self.def();
        let name = self.name().to_string();
        let ct = self
            .content_type
            .as_deref()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let patch_doc: Value = match ct.as_str() {
            "application/apply-patch+yaml" | "application/apply-patch+yml" => {
                request::decode_body(Some(&ct), body)?
            }
            _ => serde_json::from_slice(body)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?,
        };
        let mode = FieldValidation::parse(self.query.get("fieldValidation"))?;
        let patch_rv = patch_doc
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from);
        for _ in 0..8 {
            let loaded = self.load(&name).await;
            let (old, kv) = match loaded {
                Ok(x) => x,
                Err(ApiError::NotFound { .. })
                    if ct.starts_with("application/apply-patch")
                        && self.rp.subresource.is_none() =>
                {
                    return self.apply_create(&patch_doc, mode).await;
                }
                Err(e) => return Err(e.into()),
            };
            let base = if self.rp.subresource.as_deref() == Some("scale") {
                to_scale(&old)
            } else {
                old.clone()
            };
            let mut patched = match ct.as_str() {
                "application/json-patch+json" => patch::json_patch(&base, &patch_doc)?,
                "application/merge-patch+json" => patch::merge_patch(&base, &patch_doc)?,
                "application/strategic-merge-patch+json" => {
                    if self.rp.subresource.as_deref() == Some("scale") {
                        patch::merge_patch(&base, &patch_doc)?
                    } else {
                        patch::strategic_merge_patch(def, &base, &patch_doc)?
                    }
                }
                "application/apply-patch+yaml" | "application/apply-patch+yml" => apply_patch(
                    def,
                    &base,
                    &patch_doc,
                    &self.field_manager(),
                    self.query.flag("force"),
                )?,
                other => {
                    return Err(ApiError::UnsupportedMediaType {
                        message: format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"),
                    }
                    .into());
                }
            };
            if self.rp.subresource.as_deref() == Some("scale") {
                let replicas = scale_replicas(&patched);
                return self.write_scale(replicas, patch_rv.clone()).await;
            }
            admission::check_type(def, &mut patched)?;
            if meta::name(&patched) != Some(name.as_str()) {
                return Err(
                    ApiError::bad_request("metadata.name cannot be changed by a patch").into(),
                );
            }
            let warnings = admission::field_validation(def, &mut patched, mode)?;
            match self.write(patched, &old, &kv, patch_rv.is_some()).await {
                Ok((obj, code)) => {
                    return Ok(response::with_warnings(self.render(code, &obj), &warnings));
                }
                Err(ApiError::Conflict { .. }) if patch_rv.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(def.group, def.plural, &name).into())
    }

    /// Server-side apply of an object that does not exist yet: a create.
    async fn apply_create(&self, applied: &Value, mode: FieldValidation) -> HandlerResult {
        let mut obj = apply_patch(
            self.def(),
            &Value::Null,
            applied,
            &self.field_manager(),
            true,
        )?;
        if meta::name(&obj).is_none() {
            meta::set_meta(&mut obj, "name", Value::String(self.name().to_string()));
        }
        let body = serde_json::to_vec(&obj).map_err(ApiError::internal)?;
        let _ = mode;
        let inner = Ctx {
            api: self.api.clone(),
            rp: ResourcePath {
                name: None,
                ..self.rp.clone()
            },
            query: self.query.clone(),
            output: self.output,
            user: self.user.clone(),
            content_type: Some("application/json".into()),
            user_agent: self.user_agent.clone(),
        };
        inner.create(&body).await
    }

    async fn delete(&self, body: &[u8]) -> HandlerResult {
        let opts = DeleteOptions::parse(body, &self.query)?;
        let def = self.def();
        let name = self.name().to_string();
        for _ in 0..8 {
            let (old, kv) = self.load(&name).await?;
            match self.delete_one(&old, &kv, &opts).await {
                Ok(obj) => return Ok(self.render(StatusCode::OK, &obj)),
                Err(ApiError::Conflict { .. }) if opts.precondition_rv.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ApiError::conflict(def.group, def.plural, &name).into())
    }

    /// Deletes one loaded object: at once, or by marking it (finalizers, graceful pods,
    /// namespaces) for the controllers and the node agent to finish.
    async fn delete_one(
        &self,
        old: &Value,
        kv: &KeyValue,
        opts: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let def = self.def();
        let name = meta::name(old).unwrap_or_default().to_string();
        // Like Kubernetes' namespace lifecycle admission: the cluster needs these namespaces.
        if def.group.is_empty()
            && def.kind == "Namespace"
            && IMMORTAL_NAMESPACES.contains(&name.as_str())
        {
            return Err(ApiError::Forbidden {
                message: format!(
                    "namespaces \"{name}\" is forbidden: this namespace may not be deleted"
                ),
            });
        }
        if let Some(uid) = &opts.precondition_uid
            && Some(uid.as_str()) != meta::uid(old)
        {
            return Err(ApiError::Conflict {
                group: def.group.into(),
                resource: def.plural.into(),
                name: name.clone(),
                message: format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta::uid(old).unwrap_or_default()
                ),
            });
        }
        if let Some(rv) = &opts.precondition_rv
            && storage::parse_rv(rv)? != kv.mod_revision
        {
            return Err(ApiError::Conflict {
                group: def.group.into(),
                resource: def.plural.into(),
                name: name.clone(),
                message: format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    kv.mod_revision
                ),
            });
        }
        let mut new = old.clone();
        let mut finalizers = meta::finalizers(old);
        let add = |f: &mut Vec<String>, s: &str| {
            if !f.iter().any(|x| x == s) {
                f.push(s.to_string());
            }
        };
        match opts.propagation.as_deref() {
            Some("Orphan") => add(&mut finalizers, "orphan"),
            Some("Foreground") => add(&mut finalizers, "foregroundDeletion"),
            _ => {}
        }
        let is_pod = def.group.is_empty() && def.kind == "Pod";
        let bound = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.is_empty());
        let terminal = matches!(
            old.pointer("/status/phase").and_then(Value::as_str),
            Some("Succeeded" | "Failed")
        );
        let grace = if is_pod && bound && !terminal {
            opts.grace_period
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30)
        } else {
            0
        };
        let is_ns = def.group.is_empty() && def.kind == "Namespace";
        let already = meta::deletion_timestamp(old).is_some();
        let now = chrono::Utc::now();
        if already {
            // A repeated delete can only shorten a pod's grace period or add a finalizer.
            let cur_grace = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            if is_pod && grace < cur_grace {
                meta::set_meta(&mut new, "deletionGracePeriodSeconds", json!(grace));
            }
        }
        let must_wait = !finalizers.is_empty()
            || grace > 0
            || (is_ns && namespace_finalizers_pending(def, old));
        if !must_wait {
            if opts.dry_run {
                return Ok(old.clone());
            }
            let (_, rev) = self
                .api
                .store
                .delete(&kv.key, kv.mod_revision)
                .await
                .map_err(|e| storage::store_error(def, &name, e))?;
            meta::set_meta(&mut new, "resourceVersion", Value::String(rev.to_string()));
            return Ok(new);
        }
        if !already {
            let ts = now + chrono::Duration::seconds(grace);
            meta::set_meta(
                &mut new,
                "deletionTimestamp",
                json!(ts.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            );
            meta::set_meta(&mut new, "deletionGracePeriodSeconds", json!(grace));
            if admission::has_generation(def) {
                let g = old
                    .pointer("/metadata/generation")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                meta::set_meta(&mut new, "generation", json!(g + 1));
            }
            if is_ns && let Some(status) = new.get_mut("status").and_then(Value::as_object_mut) {
                status.insert("phase".into(), json!("Terminating"));
            }
        }
        if !finalizers.is_empty() {
            meta::set_meta(&mut new, "finalizers", json!(finalizers));
        }
        if !admission::changed(old, &new) || opts.dry_run {
            return Ok(new);
        }
        let rev = self
            .api
            .store
            .update(&kv.key, storage::encode(&new)?, kv.mod_revision)
            .await
            .map_err(|e| storage::store_error(def, &name, e))?;
        meta::set_meta(&mut new, "resourceVersion", Value::String(rev.to_string()));
        Ok(new)
    }

    async fn delete_collection(&self, body: &[u8]) -> HandlerResult {
        let opts = DeleteOptions::parse(body, &self.query)?;
        let (ls, fs) = self.selectors()?;
        let def = self.def();
        let res = self
            .api
            .store
            .range(&self.prefix(), RangeOptions::default())
            .await
            .map_err(|e| storage::store_error(def, "", e))?;
        let mut deleted = Vec::new();
        for kv in &res.kvs {
            let obj = storage::decode(kv)?;
            if !ls.matches(meta::labels(&obj)) || !fs.matches(&obj) {
                continue;
            }
            match self.delete_one(&obj, kv, &opts).await {
                Ok(o) => deleted.push(o),
                // Forbidden: a namespace that may not be deleted is skipped, not an abort.
                Err(
                    ApiError::NotFound { .. }
                    | ApiError::Conflict { .. }
                    | ApiError::Forbidden { .. },
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let body = json!({
            "kind": def.list_kind(),
            "apiVersion": def.api_version(),
            "metadata": {"resourceVersion": res.revision.to_string()},
            "items": deleted,
        });
        Ok(response::json(StatusCode::OK, &body))
    }
}

/// Namespaces the API server refuses to delete.
const IMMORTAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public"];

/// A namespace is only removed once `spec.finalizers` (the namespace controller's
/// `kubernetes` finalizer) is empty.
fn namespace_finalizers_pending(def: &ResourceDef, obj: &Value) -> bool {
    def.group.is_empty()
        && def.kind == "Namespace"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// Records the writer of an ordinary (non-apply) write in managedFields.
fn record_update(def: &ResourceDef, old: Option<&Value>, new: &mut Value, manager: &str) {
    patch::update_managed_fields(def, old, new, manager, "Update", &admission::now());
}

fn apply_patch(
    def: &ResourceDef,
    live: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
) -> Result<Value, ApiError> {
    let live = if live.is_null() { None } else { Some(live) };
    patch::server_side_apply(def, live, applied, manager, force, &admission::now())
}

fn list_meta(rv: &str, next: Option<&str>) -> Value {
    let mut m = json!({"resourceVersion": rv});
    if let Some(n) = next {
        m["continue"] = json!(n);
    }
    m
}

fn encode_continue(key: &str, rev: Revision) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": key});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> Result<(String, Revision), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    Ok((start.to_string(), rev))
}

fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
    })
}

/// Builds a `meta.k8s.io/v1` Table for `objs`.
pub fn build_table(
    def: &ResourceDef,
    objs: &[Value],
    inc: IncludeObject,
    rv: &str,
    next: Option<&str>,
    headers: bool,
) -> Value {
    let now = chrono::Utc::now();
    let cols: Vec<Value> = if headers {
        table::columns(def).iter().map(|c| c.to_json()).collect()
    } else {
        Vec::new()
    };
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let object = match inc {
                IncludeObject::None => Value::Null,
                IncludeObject::Metadata => partial_metadata(o),
                IncludeObject::Object => o.clone(),
            };
            json!({"cells": table::cells(def, o, now), "object": object})
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta(rv, next),
        "columnDefinitions": cols,
        "rows": rows,
    })
}

/// The autoscaling/v1 Scale of a scalable object.
fn to_scale(obj: &Value) -> Value {
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector")
        .map(selector_string)
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"),
            "namespace": m.get("namespace"),
            "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"),
            "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

/// The replicas a Scale asks for. `spec.replicas` is `omitempty` in autoscaling/v1, so Go
/// clients (`kubectl scale --replicas=0`) leave it out to mean 0; `None` when it is not an integer.
fn scale_replicas(scale: &Value) -> Option<i64> {
    match scale.pointer("/spec/replicas") {
        None | Some(Value::Null) => Some(0),
        Some(v) => v.as_i64(),
    }
}

/// A LabelSelector object in its string form (`app=web,tier in (a,b)`).
pub fn selector_string(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let vals: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        parts.push(
            match e
                .get("operator")
                .and_then(Value::as_str)
                .unwrap_or_default()
            {
                "In" => format!("{key} in ({})", vals.join(",")),
                "NotIn" => format!("{key} notin ({})", vals.join(",")),
                "Exists" => key.to_string(),
                "DoesNotExist" => format!("!{key}"),
                _ => continue,
            },
        );
    }
    parts.join(",")
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    #[test]
    fn absent_scale_replicas_mean_zero() {
        assert_eq!(
            scale_replicas(&json!({"kind": "Scale", "spec": {}})),
            Some(0)
        );
        assert_eq!(scale_replicas(&json!({"kind": "Scale"})), Some(0));
        assert_eq!(scale_replicas(&json!({"spec": {"replicas": 3}})), Some(3));
        assert_eq!(scale_replicas(&json!({"spec": {"replicas": "3"}})), None);
    }
}
