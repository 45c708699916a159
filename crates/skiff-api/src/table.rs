//! Table output (`as=Table;v=v1;g=meta.k8s.io`): the columns and cells kube-apiserver prints.
//!
//! The server always renders the wide (`-o wide`) columns; kubectl hides the columns of
//! priority 1 unless asked for them. Every cell is computed from the JSON object alone and
//! a missing field yields the value Kubernetes prints for its zero value, never a panic.

use crate::error::ApiError;
use crate::registry::ResourceDef;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;

/// One column of a Table (`meta.k8s.io/v1` TableColumnDefinition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: &'static str,
    /// `string`, `integer`, `number`, `boolean`, `date`.
    pub type_: &'static str,
    /// `name` for the NAME column, otherwise usually empty.
    pub format: &'static str,
    pub description: &'static str,
    /// 0 = always shown, 1 = only with `-o wide`.
    pub priority: u8,
}

impl Column {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.type_,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

/// What each row's `object` holds (the `includeObject` query parameter of a Table request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IncludeObject {
    None,
    /// A `PartialObjectMetadata` with the object's metadata (kube-apiserver's default).
    #[default]
    Metadata,
    Object,
}

impl IncludeObject {
    /// Parses `includeObject`; absent or empty means `Metadata`, as in kube-apiserver.
    pub fn from_query(value: Option<&str>) -> Result<Self, ApiError> {
        match value.unwrap_or("") {
            "" | "Metadata" => Ok(IncludeObject::Metadata),
            "None" => Ok(IncludeObject::None),
            "Object" => Ok(IncludeObject::Object),
            other => Err(ApiError::bad_request(format!(
                "unrecognized includeObject value: {other:?}"
            ))),
        }
    }
}

/// The column definitions of `def`'s Table, wide columns included.
pub fn columns(def: &ResourceDef) -> Vec<Column> {
    printer(def).columns().to_vec()
}

/// The cells of one row, in the order of `columns(def)`.
pub fn cells(def: &ResourceDef, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    match printer(def) {
        Printer::Pod => pod_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Endpoints => endpoints_cells(obj, now),
        Printer::EndpointSlice => endpoint_slice_cells(obj, now),
        Printer::ConfigMap => vec![
            name_cell(obj),
            json!(len_at(obj, &["data"]) + len_at(obj, &["binaryData"])),
            age_cell(obj, now),
        ],
        Printer::Secret => vec![
            name_cell(obj),
            json!(str_at(obj, &["type"])),
            json!(len_at(obj, &["data"])),
            age_cell(obj, now),
        ],
        Printer::Namespace => vec![
            name_cell(obj),
            json!(str_at(obj, &["status", "phase"])),
            age_cell(obj, now),
        ],
        Printer::ServiceAccount => vec![
            name_cell(obj),
            json!(len_at(obj, &["secrets"])),
            age_cell(obj, now),
        ],
        Printer::Node => node_cells(obj, now),
        Printer::Event => event_cells(&EventView::core(obj), obj, now),
        Printer::EventsV1 => event_cells(&EventView::events_v1(obj), obj, now),
        Printer::PersistentVolume => pv_cells(obj, now),
        Printer::PersistentVolumeClaim => pvc_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::ReplicaSet => replica_set_cells(obj, now),
        Printer::StatefulSet => stateful_set_cells(obj, now),
        Printer::DaemonSet => daemon_set_cells(obj, now),
        Printer::ControllerRevision => controller_revision_cells(obj, now),
        Printer::Job => job_cells(obj, now),
        Printer::CronJob => cron_job_cells(obj, now),
        Printer::HorizontalPodAutoscaler => hpa_cells(obj, now),
        Printer::Lease => vec![
            name_cell(obj),
            json!(str_at(obj, &["spec", "holderIdentity"])),
            age_cell(obj, now),
        ],
        Printer::Default => vec![
            name_cell(obj),
            // The default convertor prints the timestamp itself, in UTC; Go's zero time when unset.
            json!(
                time_at(obj, &["metadata", "creationTimestamp"])
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
            ),
        ],
    }
}

/// One `TableRow`: the cells, row conditions when the printer sets them, and the object
/// in the form `include` asks for.
pub fn row(def: &ResourceDef, obj: &Value, now: DateTime<Utc>, include: IncludeObject) -> Value {
    let mut row = Map::new();
    row.insert("cells".into(), Value::Array(cells(def, obj, now)));
    if let Some(conditions) = row_conditions(printer(def), obj) {
        row.insert("conditions".into(), conditions);
    }
    row.insert("object".into(), row_object(def, obj, include));
    Value::Object(row)
}

/// A `meta.k8s.io/v1` Table of `objs`, with empty list metadata.
pub fn table(
    def: &ResourceDef,
    objs: &[Value],
    now: DateTime<Utc>,
    include: IncludeObject,
) -> Value {
    let rows: Vec<Value> = objs.iter().map(|o| row(def, o, now, include)).collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": columns(def).iter().map(Column::to_json).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// The Table of a whole list object (`{"metadata": {...}, "items": [...]}`): the Table's
/// metadata carries the list's `resourceVersion`, `continue` and `remainingItemCount`.
pub fn list_table(
    def: &ResourceDef,
    list: &Value,
    now: DateTime<Utc>,
    include: IncludeObject,
) -> Value {
    let mut t = table(def, arr_at(list, &["items"]), now, include);
    let mut meta = Map::new();
    for field in ["resourceVersion", "continue"] {
        let v = str_at(list, &["metadata", field]);
        if !v.is_empty() {
            meta.insert(field.into(), json!(v));
        }
    }
    if let Some(n) = at(list, &["metadata", "remainingItemCount"]).and_then(Value::as_i64) {
        meta.insert("remainingItemCount".into(), json!(n));
    }
    t["metadata"] = Value::Object(meta);
    t
}

/// The Table of a single object (a GET or a watch event): one row, and the object's
/// `resourceVersion` as the Table's.
pub fn object_table(
    def: &ResourceDef,
    obj: &Value,
    now: DateTime<Utc>,
    include: IncludeObject,
) -> Value {
    let mut t = table(def, std::slice::from_ref(obj), now, include);
    let rv = str_at(obj, &["metadata", "resourceVersion"]);
    if !rv.is_empty() {
        t["metadata"] = json!({ "resourceVersion": rv });
    }
    t
}

/// Drops the column definitions, as kube-apiserver does for every watch event after the
/// first: only the first Table of a watch stream carries headers.
pub fn without_headers(table: &mut Value) {
    if let Some(t) = table.as_object_mut() {
        t.insert("columnDefinitions".into(), Value::Null);
    }
}

/// Kubernetes' `duration.HumanDuration`: about two significant figures ("45s", "5m30s",
/// "3h10m", "2d4h", "400d", "3y20d"); up to two seconds in the future counts as "0s"
/// to tolerate clock skew, further is `<invalid>`.
pub fn human_duration(d: TimeDelta) -> String {
    const SEC: i128 = 1_000_000_000;
    let nanos = i128::from(d.num_seconds()) * SEC + i128::from(d.subsec_nanos());
    let seconds = nanos / SEC;
    if seconds < -1 {
        return "<invalid>".into();
    } else if seconds < 0 {
        return "0s".into();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / (60 * SEC);
    if minutes < 10 {
        let s = seconds % 60;
        return if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        };
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / (3600 * SEC);
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{}d", hours / 24)
        } else {
            format!("{}d{h}h", hours / 24)
        }
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            format!("{}y", hours / 24 / 365)
        } else {
            format!("{}y{dy}d", hours / 24 / 365)
        }
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

// ---------------------------------------------------------------------------------------
// Printers and their columns

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Pod,
    Service,
    Endpoints,
    EndpointSlice,
    ConfigMap,
    Secret,
    Namespace,
    ServiceAccount,
    Node,
    Event,
    EventsV1,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    Job,
    CronJob,
    HorizontalPodAutoscaler,
    Lease,
    /// Resources without a printer get kube-apiserver's default convertor: Name, Created At.
    Default,
}

fn printer(def: &ResourceDef) -> Printer {
    match (def.group, def.kind) {
        ("", "Pod") => Printer::Pod,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("", "ConfigMap") => Printer::ConfigMap,
        ("", "Secret") => Printer::Secret,
        ("", "Namespace") => Printer::Namespace,
        ("", "ServiceAccount") => Printer::ServiceAccount,
        ("", "Node") => Printer::Node,
        ("", "Event") => Printer::Event,
        ("events.k8s.io", "Event") => Printer::EventsV1,
        ("", "PersistentVolume") => Printer::PersistentVolume,
        ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        ("apps", "StatefulSet") => Printer::StatefulSet,
        ("apps", "DaemonSet") => Printer::DaemonSet,
        ("apps", "ControllerRevision") => Printer::ControllerRevision,
        ("batch", "Job") => Printer::Job,
        ("batch", "CronJob") => Printer::CronJob,
        ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        _ => Printer::Default,
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. It is required when creating \
resources, although some resources may allow a client to request the generation of an appropriate \
name automatically. Cannot be updated.";
const AGE_DESC: &str = "CreationTimestamp is the server time at which this object was created, in \
RFC3339 form and UTC. Populated by the system. Read-only.";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "A label query over the pods that the controller manages.";

const fn col(
    name: &'static str,
    type_: &'static str,
    priority: u8,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority,
    }
}

const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};
const AGE: Column = col("Age", "string", 0, AGE_DESC);
const CONTAINERS: Column = col("Containers", "string", 1, CONTAINERS_DESC);
const IMAGES: Column = col("Images", "string", 1, IMAGES_DESC);
const SELECTOR: Column = col("Selector", "string", 1, SELECTOR_DESC);

#[rustfmt::skip]
const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", 0, "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        0,
        "The number of times the containers in this pod have been restarted and when the last \
         container in this pod has restarted.",
    ),
    AGE,
    col("IP", "string", 1, "The IP address allocated to the pod."),
    col("Node", "string", 1, "The node this pod is scheduled onto."),
    col("Nominated Node", "string", 1, "The node on which preemption made room for this pod."),
    col("Readiness Gates", "string", 1, "Readiness gates that are true, of all gates."),
];

#[rustfmt::skip]
const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", 0, "How the Service is exposed."),
    col("Cluster-IP", "string", 0, "The IP address of the service."),
    col("External-IP", "string", 0, "Addresses that also accept traffic for the service."),
    col("Port(s)", "string", 0, "The ports exposed by this service."),
    AGE,
    col("Selector", "string", 1, "Pods with these labels receive the traffic."),
];

#[rustfmt::skip]
const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col("Endpoints", "string", 0, "The sets of addresses and ports that comprise the service."),
    AGE,
];

#[rustfmt::skip]
const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", 0, "The type of address carried by this EndpointSlice."),
    col("Ports", "string", 0, "The network ports exposed by each endpoint of the slice."),
    col("Endpoints", "string", 0, "The unique endpoints of this slice."),
    AGE,
];

#[rustfmt::skip]
const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", 0, "The configuration data held by the ConfigMap."),
    AGE,
];

#[rustfmt::skip]
const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", 0, "Used to facilitate programmatic handling of secret data."),
    col("Data", "string", 0, "The secret data held by the Secret."),
    AGE,
];

#[rustfmt::skip]
const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the namespace"),
    AGE,
];

#[rustfmt::skip]
const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "string", 0, "Secrets that pods using this account may use."),
    AGE,
];

#[rustfmt::skip]
const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The status of the node"),
    col("Roles", "string", 0, "The roles of the node"),
    AGE,
    col("Version", "string", 0, "Kubelet version reported by the node."),
    col("Internal-IP", "string", 1, "List of addresses reachable to the node."),
    col("External-IP", "string", 1, "List of addresses reachable to the node."),
    col("OS-Image", "string", 1, "OS image reported by the node."),
    col("Kernel-Version", "string", 1, "Kernel version reported by the node."),
    col("Container-Runtime", "string", 1, "Container runtime version reported by the node."),
];

#[rustfmt::skip]
const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", 0, "When the event was last recorded."),
    col("Type", "string", 0, "Type of this event (Normal, Warning)."),
    col("Reason", "string", 0, "Machine-readable reason for the event."),
    col("Object", "string", 0, "The object that this event is about."),
    col("Subobject", "string", 1, "The part of the object this event is about, if any."),
    col("Source", "string", 1, "The component reporting this event."),
    col("Message", "string", 0, "A human-readable description of the status of this operation."),
    col("First Seen", "string", 1, "The time at which the event was first recorded."),
    col("Count", "string", 1, "The number of times this event has occurred."),
    Column {
        priority: 1,
        ..NAME
    },
];

#[rustfmt::skip]
const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", 0, "The persistent volume's resources and capacity."),
    col("Access Modes", "string", 0, "All ways the volume can be mounted."),
    col("Reclaim Policy", "string", 0, "What happens to the volume once released."),
    col("Status", "string", 0, "The current phase of the volume."),
    col("Claim", "string", 0, "The claim bound to this volume."),
    col("StorageClass", "string", 0, "StorageClass of the pv"),
    col("VolumeAttributesClass", "string", 0, "VolumeAttributesClass of the pv"),
    col("Reason", "string", 0, "A brief CamelCase string describing any failure."),
    AGE,
    col("VolumeMode", "string", 1, "Filesystem or Block."),
];

#[rustfmt::skip]
const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", 0, "The current phase of the claim."),
    col("Volume", "string", 0, "The binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", 0, "The actual resources of the underlying volume."),
    col("Access Modes", "string", 0, "The actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", 0, "StorageClass of the pvc"),
    col("VolumeAttributesClass", "string", 0, "VolumeAttributesClass of the pvc"),
    AGE,
    col("VolumeMode", "string", 1, "Filesystem or Block."),
];

#[rustfmt::skip]
const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Number of the pod with ready state"),
    col("Up-to-date", "string", 0, "Pods that run the desired template."),
    col("Available", "string", 0, "Pods available to serve."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

#[rustfmt::skip]
const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", 0, "The number of desired replicas."),
    col("Current", "integer", 0, "The most recently observed number of replicas."),
    col("Ready", "integer", 0, "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

#[rustfmt::skip]
const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", 0, "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

#[rustfmt::skip]
const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", 0, "Nodes that should run the daemon pod."),
    col("Current", "integer", 0, "Nodes that run the daemon pod and should."),
    col("Ready", "integer", 0, "Nodes whose daemon pod is ready."),
    col("Up-to-date", "integer", 0, "Nodes that run the updated daemon pod."),
    col("Available", "integer", 0, "Nodes whose daemon pod is available."),
    col("Node Selector", "string", 0, "Labels a node must have to run the pod."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

#[rustfmt::skip]
const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", 0, "Controller of the object"),
    col("Revision", "string", 0, "The revision of the state represented by Data."),
    AGE,
];

#[rustfmt::skip]
const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", 0, "Status of the job."),
    col("Completions", "string", 0, "The number of pods which reached phase Succeeded."),
    col("Duration", "string", 0, "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

#[rustfmt::skip]
const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", 0, "The schedule in Cron format."),
    col("Timezone", "string", 0, "The time zone name for the given schedule."),
    col("Suspend", "boolean", 0, "Whether subsequent executions are suspended."),
    col("Active", "integer", 0, "The currently running jobs."),
    col("Last Schedule", "string", 0, "When a job was last scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

#[rustfmt::skip]
const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", 0, "The target resource to scale."),
    col("Targets", "string", 0, "Metrics as current/target."),
    col("MinPods", "string", 0, "The lower limit for the number of replicas."),
    col("MaxPods", "string", 0, "The upper limit for the number of replicas."),
    col("Replicas", "string", 0, "Current number of replicas."),
    AGE,
];

#[rustfmt::skip]
const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col("Holder", "string", 0, "The identity of the holder of a current lease."),
    AGE,
];

#[rustfmt::skip]
const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", 0, AGE_DESC)];

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Printer::ConfigMap => CONFIG_MAP_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Event | Printer::EventsV1 => EVENT_COLUMNS,
            Printer::PersistentVolume => PV_COLUMNS,
            Printer::PersistentVolumeClaim => PVC_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::StatefulSet => STATEFUL_SET_COLUMNS,
            Printer::DaemonSet => DAEMON_SET_COLUMNS,
            Printer::ControllerRevision => CONTROLLER_REVISION_COLUMNS,
            Printer::Job => JOB_COLUMNS,
            Printer::CronJob => CRON_JOB_COLUMNS,
            Printer::HorizontalPodAutoscaler => HPA_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }
}

fn row_conditions(p: Printer, obj: &Value) -> Option<Value> {
    if p != Printer::Pod {
        return None;
    }
    // kubectl uses these to tell finished pods apart.
    let (reason, message) = match str_at(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

fn row_object(def: &ResourceDef, obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Metadata => {
            let metadata = obj.get("metadata").filter(|m| m.is_object()).cloned();
            json!({
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": metadata.unwrap_or_else(|| json!({})),
            })
        }
        IncludeObject::Object => {
            let mut o = obj.clone();
            if let Some(map) = o.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(def.api_version()));
                map.entry("kind").or_insert_with(|| json!(def.kind));
            }
            o
        }
    }
}

// ---------------------------------------------------------------------------------------
// JSON access that never fails: a missing or mistyped field reads as its zero value.

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |cur, key| cur.get(*key))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn opt_str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

fn opt_int_at(v: &Value, path: &[&str]) -> Option<i64> {
    at(v, path).and_then(|x| x.as_i64().or_else(|| x.as_f64().map(|f| f as i64)))
}

fn int_at(v: &Value, path: &[&str]) -> i64 {
    opt_int_at(v, path).unwrap_or(0)
}

fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// Entries of a map or items of a list.
fn len_at(v: &Value, path: &[&str]) -> i64 {
    let n = match at(v, path) {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    };
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A present object (Go's non-nil pointer to a struct).
fn obj_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    at(v, path).filter(|x| x.is_object())
}

fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

fn time_at(v: &Value, path: &[&str]) -> Option<DateTime<Utc>> {
    opt_str_at(v, path).and_then(parse_time)
}

/// `translateTimestampSince`: the age of `t`, `<unknown>` for a zero time.
fn since(now: DateTime<Utc>, t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => human_duration(now - t),
        None => "<unknown>".into(),
    }
}

fn name_cell(obj: &Value) -> Value {
    json!(str_at(obj, &["metadata", "name"]))
}

fn age_cell(obj: &Value, now: DateTime<Utc>) -> Value {
    json!(since(now, time_at(obj, &["metadata", "creationTimestamp"])))
}

fn has_deletion_timestamp(obj: &Value) -> bool {
    at(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null())
}

/// `labels.FormatLabels`: `k=v` sorted by key, `<none>` when empty.
fn format_labels(map: Option<&Value>) -> String {
    let Some(m) = map.and_then(Value::as_object).filter(|m| !m.is_empty()) else {
        return "<none>".into();
    };
    let mut pairs: Vec<(&String, &str)> = m
        .iter()
        .map(|(k, v)| (k, v.as_str().unwrap_or("")))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A `metav1.LabelSelector` as `labels.Selector.String()`; `None` when the selector is
/// invalid. A missing or empty selector renders as "".
fn selector_string(sel: Option<&Value>) -> Option<String> {
    let Some(sel) = sel.filter(|s| s.is_object()) else {
        return Some(String::new());
    };
    let mut reqs: Vec<(String, String)> = Vec::new();
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            reqs.push((k.clone(), format!("{k}={}", v.as_str().unwrap_or(""))));
        }
    }
    for expr in arr_at(sel, &["matchExpressions"]) {
        let key = str_at(expr, &["key"]);
        let mut values: Vec<&str> = arr_at(expr, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let rendered = match str_at(expr, &["operator"]) {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return None;
                }
                values.sort_unstable();
                let word = if op == "In" { "in" } else { "notin" };
                format!("{key} {word} ({})", values.join(","))
            }
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return None,
        };
        reqs.push((key.to_string(), rendered));
    }
    reqs.sort_by(|a, b| a.0.cmp(&b.0));
    Some(
        reqs.into_iter()
            .map(|(_, r)| r)
            .collect::<Vec<_>>()
            .join(","),
    )
}

/// `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
fn format_label_selector(sel: Option<&Value>) -> String {
    match selector_string(sel) {
        None => "<error>".into(),
        Some(s) if s.is_empty() => "<none>".into(),
        Some(s) => s,
    }
}

/// Container names and images of a pod spec, each comma-joined.
fn container_cells(pod_spec: Option<&Value>) -> (Value, Value) {
    let containers = pod_spec.map(|s| arr_at(s, &["containers"])).unwrap_or(&[]);
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (json!(names.join(",")), json!(images.join(",")))
}

/// `helper.GetAccessModesAsString`: abbreviations in a fixed order, duplicates dropped.
fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(mode, _)| has(mode))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a PV or PVC: the beta annotation wins over `spec.storageClassName`.
fn storage_class(obj: &Value) -> &str {
    opt_str_at(
        obj,
        &[
            "metadata",
            "annotations",
            "volume.beta.kubernetes.io/storage-class",
        ],
    )
    .unwrap_or_else(|| str_at(obj, &["spec", "storageClassName"]))
}

/// A quantity as `resource.Quantity.String()` prints it; the zero quantity is "0".
fn quantity_at(v: &Value, path: &[&str]) -> String {
    match at(v, path) {
        Some(Value::String(s)) => canonical_quantity(s),
        Some(Value::Number(n)) => canonical_quantity(&n.to_string()),
        _ => "0".into(),
    }
}

/// Renders a Kubernetes quantity in canonical form (`1024Mi` -> `1Gi`, `0.5` -> `500m`,
/// `1.5Gi` -> `1536Mi`). Text that is not a quantity is returned unchanged.
pub(crate) fn canonical_quantity(s: &str) -> String {
    canonicalize(s).unwrap_or_else(|| s.to_string())
}

#[derive(PartialEq)]
enum QuantityFormat {
    BinarySi,
    DecimalSi,
    DecimalExponent,
}

fn canonicalize(s: &str) -> Option<String> {
    const NANO: i128 = 1_000_000_000;
    let s = s.trim();
    let (negative, rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let num_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(num_len);
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    if int_part.is_empty() && frac_part.is_empty() {
        return None;
    }
    let (format, pow2, pow10) = match suffix {
        "Ki" => (QuantityFormat::BinarySi, 10, 0),
        "Mi" => (QuantityFormat::BinarySi, 20, 0),
        "Gi" => (QuantityFormat::BinarySi, 30, 0),
        "Ti" => (QuantityFormat::BinarySi, 40, 0),
        "Pi" => (QuantityFormat::BinarySi, 50, 0),
        "Ei" => (QuantityFormat::BinarySi, 60, 0),
        "n" => (QuantityFormat::DecimalSi, 0, -9),
        "u" => (QuantityFormat::DecimalSi, 0, -6),
        "m" => (QuantityFormat::DecimalSi, 0, -3),
        "" => (QuantityFormat::DecimalSi, 0, 0),
        "k" => (QuantityFormat::DecimalSi, 0, 3),
        "M" => (QuantityFormat::DecimalSi, 0, 6),
        "G" => (QuantityFormat::DecimalSi, 0, 9),
        "T" => (QuantityFormat::DecimalSi, 0, 12),
        "P" => (QuantityFormat::DecimalSi, 0, 15),
        "E" => (QuantityFormat::DecimalSi, 0, 18),
        exp if exp.starts_with(['e', 'E']) => {
            let e: i32 = exp[1..].parse().ok()?;
            (QuantityFormat::DecimalExponent, 0, e)
        }
        _ => return None,
    };
    let mut mantissa: i128 = 0;
    for d in int_part.bytes().chain(frac_part.bytes()) {
        mantissa = mantissa
            .checked_mul(10)?
            .checked_add(i128::from(d - b'0'))?;
    }
    // Value in nano units: mantissa * 10^(pow10 - frac digits + 9) * 2^pow2, rounded up.
    let scale = pow10 - i32::try_from(frac_part.len()).ok()? + 9;
    let mut nanos = mantissa.checked_mul(1i128.checked_shl(pow2)?)?;
    if scale >= 0 {
        nanos = nanos.checked_mul(10i128.checked_pow(u32::try_from(scale).ok()?)?)?;
    } else {
        let div = 10i128.checked_pow(u32::try_from(-scale).ok()?)?;
        nanos = (nanos + div - 1) / div;
    }
    if negative {
        nanos = -nanos;
    }
    if nanos == 0 {
        return Some("0".into());
    }
    let sign = if nanos < 0 { "-" } else { "" };
    let abs = nanos.abs();
    // Small or fractional binary quantities print in decimal so that nothing is rounded.
    let format = if format == QuantityFormat::BinarySi && (abs < 1024 * NANO || abs % NANO != 0) {
        QuantityFormat::DecimalSi
    } else {
        format
    };
    if format == QuantityFormat::BinarySi {
        let mut v = abs / NANO;
        let mut exp = 0;
        while exp < 6 && v % 1024 == 0 {
            v /= 1024;
            exp += 1;
        }
        let suffix = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"][exp];
        return Some(format!("{sign}{v}{suffix}"));
    }
    let mut v = abs;
    let mut exp = -9;
    while exp < 18 && v % 1000 == 0 {
        v /= 1000;
        exp += 3;
    }
    let suffix = if format == QuantityFormat::DecimalExponent {
        if exp == 0 {
            String::new()
        } else {
            format!("e{exp}")
        }
    } else {
        match exp {
            -9 => "n",
            -6 => "u",
            -3 => "m",
            0 => "",
            3 => "k",
            6 => "M",
            9 => "G",
            12 => "T",
            15 => "P",
            _ => "E",
        }
        .to_string()
    };
    Some(format!("{sign}{v}{suffix}"))
}

// ---------------------------------------------------------------------------------------
// Per-resource cells

fn condition_status<'a>(conditions: &'a [Value], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == type_)
        .map(|c| str_at(c, &["status"]))
}

fn pod_cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let conditions = arr_at(pod, &["status", "conditions"]);
    // Sidecars (init containers that always restart) count as containers of the pod.
    let restartable: BTreeSet<&str> = init_specs
        .iter()
        .filter(|c| str_at(c, &["restartPolicy"]) == "Always")
        .map(|c| str_at(c, &["name"]))
        .collect();
    let total = arr_at(pod, &["spec", "containers"]).len() + restartable.len();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let mut reason = match str_at(pod, &["status", "reason"]) {
        "" => phase.to_string(),
        r => r.to_string(),
    };
    if conditions.iter().any(|c| {
        str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated"
    }) {
        reason = "SchedulingGated".into();
    }

    let mut initializing = false;
    for (i, cs) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let count = int_at(cs, &["restartCount"]);
        restarts += count;
        let finished = time_at(cs, &["lastState", "terminated", "finishedAt"]);
        last_restart = last_restart.max(finished);
        let is_restartable = restartable.contains(str_at(cs, &["name"]));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = last_restartable_restart.max(finished);
        }
        let terminated = obj_at(cs, &["state", "terminated"]);
        let waiting_reason = str_at(cs, &["state", "waiting", "reason"]);
        match terminated {
            Some(t) if int_at(t, &["exitCode"]) == 0 => continue,
            _ if is_restartable && at(cs, &["started"]).and_then(Value::as_bool) == Some(true) => {
                if at(cs, &["ready"]).and_then(Value::as_bool) == Some(true) {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                reason = match str_at(t, &["reason"]) {
                    "" if int_at(t, &["signal"]) != 0 => {
                        format!("Init:Signal:{}", int_at(t, &["signal"]))
                    }
                    "" => format!("Init:ExitCode:{}", int_at(t, &["exitCode"])),
                    r => format!("Init:{r}"),
                };
            }
            None if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" => {
                reason = format!("Init:{waiting_reason}");
            }
            None => reason = format!("Init:{}/{}", i, init_specs.len()),
        }
        initializing = true;
        break;
    }

    if !initializing || condition_status(conditions, "Initialized") == Some("True") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for cs in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(cs, &["restartCount"]);
            last_restart =
                last_restart.max(time_at(cs, &["lastState", "terminated", "finishedAt"]));
            let waiting_reason = str_at(cs, &["state", "waiting", "reason"]);
            let terminated = obj_at(cs, &["state", "terminated"]);
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                reason = match str_at(t, &["reason"]) {
                    "" if int_at(t, &["signal"]) != 0 => {
                        format!("Signal:{}", int_at(t, &["signal"]))
                    }
                    "" => format!("ExitCode:{}", int_at(t, &["exitCode"])),
                    r => r.to_string(),
                };
            } else if at(cs, &["ready"]).and_then(Value::as_bool) == Some(true)
                && obj_at(cs, &["state", "running"]).is_some()
            {
                has_running = true;
                ready += 1;
            }
        }
        // A pod whose last-listed container completed while another still runs is running.
        if reason == "Completed" && has_running {
            reason = if condition_status(conditions, "Ready") == Some("True") {
                "Running".into()
            } else {
                "NotReady".into()
            };
        }
    }

    if has_deletion_timestamp(pod) {
        if str_at(pod, &["status", "reason"]) == "NodeLost" {
            reason = "Unknown".into();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".into();
        }
    }

    let restarts_cell = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
        _ => restarts.to_string(),
    };

    let pod_ip = arr_at(pod, &["status", "podIPs"])
        .first()
        .map(|p| str_at(p, &["ip"]))
        .or_else(|| opt_str_at(pod, &["status", "podIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let node = Some(str_at(pod, &["spec", "nodeName"]))
        .filter(|n| !n.is_empty())
        .unwrap_or("<none>");
    let nominated = Some(str_at(pod, &["status", "nominatedNodeName"]))
        .filter(|n| !n.is_empty())
        .unwrap_or("<none>");
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_count = gates
            .iter()
            .filter(|g| condition_status(conditions, str_at(g, &["conditionType"])) == Some("True"))
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name_cell(pod),
        json!(format!("{ready}/{total}")),
        json!(reason),
        json!(restarts_cell),
        age_cell(pod, now),
        json!(pod_ip),
        json!(node),
        json!(nominated),
        json!(readiness_gates),
    ]
}

fn service_cells(svc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // The API server defaults type to ClusterIP and protocol to TCP; partial objects read so.
    let svc_type = Some(str_at(svc, &["spec", "type"]))
        .filter(|t| !t.is_empty())
        .unwrap_or("ClusterIP");
    let cluster_ip = arr_at(svc, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str_at(svc, &["spec", "clusterIP"]))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    let external_ips: Vec<&str> = arr_at(svc, &["spec", "externalIPs"])
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let external_ip = match svc_type {
        "ClusterIP" | "NodePort" if !external_ips.is_empty() => external_ips.join(","),
        "ClusterIP" | "NodePort" => "<none>".into(),
        "LoadBalancer" => {
            // The server renders the wide form, which is not truncated.
            let lb: BTreeSet<&str> = arr_at(svc, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(
                    |ing| match (str_at(ing, &["ip"]), str_at(ing, &["hostname"])) {
                        ("", "") => None,
                        ("", host) => Some(host),
                        (ip, _) => Some(ip),
                    },
                )
                .collect();
            let mut all: Vec<&str> = lb.into_iter().collect();
            if all.is_empty() && external_ips.is_empty() {
                "<pending>".into()
            } else {
                all.extend(external_ips);
                all.join(",")
            }
        }
        "ExternalName" => str_at(svc, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".into(),
    };
    let ports: Vec<String> = arr_at(svc, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]);
            let protocol = Some(str_at(p, &["protocol"]))
                .filter(|s| !s.is_empty())
                .unwrap_or("TCP");
            match int_at(p, &["nodePort"]) {
                np if np > 0 => format!("{port}:{np}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let ports = if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    };
    vec![
        name_cell(svc),
        json!(svc_type),
        json!(cluster_ip),
        json!(external_ip),
        json!(ports),
        age_cell(svc, now),
        json!(format_labels(at(svc, &["spec", "selector"]))),
    ]
}

/// `host:port`, with brackets around IPv6 addresses.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn endpoints_cells(ep: &Value, now: DateTime<Utc>) -> Vec<Value> {
    const MAX: usize = 3;
    let subsets = arr_at(ep, &["subsets"]);
    let formatted = if subsets.is_empty() {
        "<none>".to_string()
    } else {
        let mut list: Vec<String> = Vec::new();
        let mut more = false;
        let mut count = 0usize;
        for ss in subsets {
            let addresses = arr_at(ss, &["addresses"]);
            let ports = arr_at(ss, &["ports"]);
            if ports.is_empty() {
                // Headless services may have no ports.
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(str_at(a, &["ip"]).to_string());
                }
                continue;
            }
            for p in ports {
                count += addresses.len();
                for a in addresses {
                    if list.len() == MAX {
                        more = true;
                        break;
                    }
                    list.push(join_host_port(str_at(a, &["ip"]), int_at(p, &["port"])));
                }
            }
        }
        let joined = list.join(",");
        if more {
            format!("{joined} + {} more...", count - MAX)
        } else {
            joined
        }
    };
    vec![name_cell(ep), json!(formatted), age_cell(ep, now)]
}

/// `listWithMoreString`: up to three items, then "+ N more...", `<unset>` when empty.
fn list_with_more(items: Vec<String>) -> String {
    const MAX: usize = 3;
    let count = items.len();
    let joined = items
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join(",");
    if count > MAX {
        format!("{joined} + {} more...", count - MAX)
    } else if joined.is_empty() {
        "<unset>".into()
    } else {
        joined
    }
}

fn endpoint_slice_cells(slice: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = arr_at(slice, &["ports"])
        .iter()
        .map(
            |p| match (opt_int_at(p, &["port"]), opt_str_at(p, &["name"])) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.to_string(),
                (None, None) => "*".into(),
            },
        )
        .collect();
    let endpoints = arr_at(slice, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]).iter())
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    vec![
        name_cell(slice),
        json!(str_at(slice, &["addressType"])),
        json!(list_with_more(ports)),
        json!(list_with_more(endpoints)),
        age_cell(slice, now),
    ]
}

fn node_cells(node: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let conditions = arr_at(node, &["status", "conditions"]);
    // Like printNode, the last Ready condition listed wins.
    let ready = conditions
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, &["status"]) == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if at(node, &["spec", "unschedulable"]).and_then(Value::as_bool) == Some(true) {
        status.push("SchedulingDisabled");
    }
    let mut roles: BTreeSet<&str> = BTreeSet::new();
    if let Some(labels) = at(node, &["metadata", "labels"]).and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role);
                }
            } else if k == "kubernetes.io/role"
                && let Some(v) = v.as_str().filter(|v| !v.is_empty())
            {
                roles.insert(v);
            }
        }
    }
    let roles = if roles.is_empty() {
        "<none>".to_string()
    } else {
        roles.into_iter().collect::<Vec<_>>().join(",")
    };
    let address = |kind: &str| {
        arr_at(node, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map(|a| str_at(a, &["address"]))
            .unwrap_or("<none>")
    };
    let info = |field: &str| {
        Some(str_at(node, &["status", "nodeInfo", field]))
            .filter(|s| !s.is_empty())
            .unwrap_or("<unknown>")
    };
    vec![
        name_cell(node),
        json!(status.join(",")),
        json!(roles),
        age_cell(node, now),
        json!(str_at(node, &["status", "nodeInfo", "kubeletVersion"])),
        json!(address("InternalIP")),
        json!(address("ExternalIP")),
        json!(info("osImage")),
        json!(info("kernelVersion")),
        json!(info("containerRuntimeVersion")),
    ]
}

/// The fields of a core/v1 or events.k8s.io/v1 Event, under their core/v1 meaning (both are
/// one internal type in kube-apiserver, printed alike).
struct EventView<'a> {
    involved: Option<&'a Value>,
    message: &'a str,
    source_component: &'a str,
    source_host: &'a str,
    first_timestamp: Option<DateTime<Utc>>,
    last_timestamp: Option<DateTime<Utc>>,
    count: i64,
}

impl<'a> EventView<'a> {
    fn core(e: &'a Value) -> Self {
        EventView {
            involved: at(e, &["involvedObject"]),
            message: str_at(e, &["message"]),
            source_component: str_at(e, &["source", "component"]),
            source_host: str_at(e, &["source", "host"]),
            first_timestamp: time_at(e, &["firstTimestamp"]),
            last_timestamp: time_at(e, &["lastTimestamp"]),
            count: int_at(e, &["count"]),
        }
    }

    fn events_v1(e: &'a Value) -> Self {
        EventView {
            involved: at(e, &["regarding"]),
            message: str_at(e, &["note"]),
            source_component: str_at(e, &["deprecatedSource", "component"]),
            source_host: str_at(e, &["deprecatedSource", "host"]),
            first_timestamp: time_at(e, &["deprecatedFirstTimestamp"]),
            last_timestamp: time_at(e, &["deprecatedLastTimestamp"]),
            count: int_at(e, &["deprecatedCount"]),
        }
    }
}

fn event_cells(view: &EventView<'_>, e: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let first_seen = match view.first_timestamp {
        Some(t) => human_duration(now - t),
        None => since(now, time_at(e, &["eventTime"])),
    };
    let mut last_seen = match view.last_timestamp {
        Some(t) => human_duration(now - t),
        None => first_seen.clone(),
    };
    let mut count = view.count;
    if let Some(series) = obj_at(e, &["series"]) {
        last_seen = since(now, time_at(series, &["lastObservedTime"]));
        count = int_at(series, &["count"]);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let involved = view.involved.unwrap_or(&Value::Null);
    let kind = str_at(involved, &["kind"]).to_lowercase();
    let target = match str_at(involved, &["name"]) {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let component = match view.source_component {
        "" => str_at(e, &["reportingController"]),
        c => c,
    };
    let instance = match view.source_host {
        "" => str_at(e, &["reportingInstance"]),
        h => h,
    };
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last_seen),
        json!(str_at(e, &["type"])),
        json!(str_at(e, &["reason"])),
        json!(target),
        json!(str_at(involved, &["fieldPath"])),
        json!(source),
        json!(view.message.trim()),
        json!(first_seen),
        json!(count),
        name_cell(e),
    ]
}

fn pv_cells(pv: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match obj_at(pv, &["spec", "claimRef"]) {
        Some(c) => format!("{}/{}", str_at(c, &["namespace"]), str_at(c, &["name"])),
        None => String::new(),
    };
    let phase = if has_deletion_timestamp(pv) {
        "Terminating"
    } else {
        str_at(pv, &["status", "phase"])
    };
    vec![
        name_cell(pv),
        json!(quantity_at(pv, &["spec", "capacity", "storage"])),
        json!(access_modes(arr_at(pv, &["spec", "accessModes"]))),
        json!(str_at(pv, &["spec", "persistentVolumeReclaimPolicy"])),
        json!(phase),
        json!(claim),
        json!(storage_class(pv)),
        json!(opt_str_at(pv, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        json!(str_at(pv, &["status", "reason"])),
        age_cell(pv, now),
        json!(opt_str_at(pv, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

fn pvc_cells(pvc: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let phase = if has_deletion_timestamp(pvc) {
        "Terminating"
    } else {
        str_at(pvc, &["status", "phase"])
    };
    let volume = str_at(pvc, &["spec", "volumeName"]);
    // Capacity and access modes are those of the bound volume, so blank until bound.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity_at(pvc, &["status", "capacity", "storage"]),
            access_modes(arr_at(pvc, &["status", "accessModes"])),
        )
    };
    vec![
        name_cell(pvc),
        json!(phase),
        json!(volume),
        json!(capacity),
        json!(modes),
        json!(storage_class(pvc)),
        json!(opt_str_at(pvc, &["spec", "volumeAttributesClassName"]).unwrap_or("<unset>")),
        age_cell(pvc, now),
        json!(opt_str_at(pvc, &["spec", "volumeMode"]).unwrap_or("<unset>")),
    ]
}

/// `spec.replicas`, which the API server defaults to 1.
fn desired_replicas(obj: &Value) -> i64 {
    opt_int_at(obj, &["spec", "replicas"]).unwrap_or(1)
}

fn deployment_cells(d: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(d, &["spec", "template", "spec"]));
    let selector =
        selector_string(at(d, &["spec", "selector"])).unwrap_or_else(|| "<invalid>".into());
    vec![
        name_cell(d),
        json!(format!(
            "{}/{}",
            int_at(d, &["status", "readyReplicas"]),
            desired_replicas(d)
        )),
        json!(int_at(d, &["status", "updatedReplicas"])),
        json!(int_at(d, &["status", "availableReplicas"])),
        age_cell(d, now),
        names,
        images,
        json!(selector),
    ]
}

fn replica_set_cells(rs: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(rs, &["spec", "template", "spec"]));
    vec![
        name_cell(rs),
        json!(desired_replicas(rs)),
        json!(int_at(rs, &["status", "replicas"])),
        json!(int_at(rs, &["status", "readyReplicas"])),
        age_cell(rs, now),
        names,
        images,
        json!(format_label_selector(at(rs, &["spec", "selector"]))),
    ]
}

fn stateful_set_cells(sts: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(sts, &["spec", "template", "spec"]));
    vec![
        name_cell(sts),
        json!(format!(
            "{}/{}",
            int_at(sts, &["status", "readyReplicas"]),
            desired_replicas(sts)
        )),
        age_cell(sts, now),
        names,
        images,
    ]
}

fn daemon_set_cells(ds: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = container_cells(at(ds, &["spec", "template", "spec"]));
    vec![
        name_cell(ds),
        json!(int_at(ds, &["status", "desiredNumberScheduled"])),
        json!(int_at(ds, &["status", "currentNumberScheduled"])),
        json!(int_at(ds, &["status", "numberReady"])),
        json!(int_at(ds, &["status", "updatedNumberScheduled"])),
        json!(int_at(ds, &["status", "numberAvailable"])),
        json!(format_labels(at(
            ds,
            &["spec", "template", "spec", "nodeSelector"]
        ))),
        age_cell(ds, now),
        names,
        images,
        json!(format_label_selector(at(ds, &["spec", "selector"]))),
    ]
}

fn controller_revision_cells(cr: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let controller = arr_at(cr, &["metadata", "ownerReferences"])
        .iter()
        .find(|r| at(r, &["controller"]).and_then(Value::as_bool) == Some(true))
        .map(|r| {
            let kind = str_at(r, &["kind"]);
            let name = str_at(r, &["name"]);
            let group = crate::registry::split_api_version(str_at(r, &["apiVersion"])).0;
            match (kind, group) {
                ("", "") => name.to_string(),
                (kind, "") => format!("{}/{name}", kind.to_lowercase()),
                (kind, group) => format!("{}.{}/{name}", kind.to_lowercase(), group.to_lowercase()),
            }
        })
        .unwrap_or_else(|| "<none>".into());
    vec![
        name_cell(cr),
        json!(controller),
        json!(int_at(cr, &["revision"])),
        age_cell(cr, now),
    ]
}

fn job_condition(job: &Value, type_: &str) -> bool {
    condition_status(arr_at(job, &["status", "conditions"]), type_) == Some("True")
}

fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let succeeded = int_at(job, &["status", "succeeded"]);
    let completions = match opt_int_at(job, &["spec", "completions"]) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match int_at(job, &["spec", "parallelism"]) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    let duration = match (
        time_at(job, &["status", "startTime"]),
        time_at(job, &["status", "completionTime"]),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    };
    let status = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if has_deletion_timestamp(job) {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    let (names, images) = container_cells(at(job, &["spec", "template", "spec"]));
    vec![
        name_cell(job),
        json!(status),
        json!(completions),
        json!(duration),
        age_cell(job, now),
        names,
        images,
        json!(format_label_selector(at(job, &["spec", "selector"]))),
    ]
}

fn cron_job_cells(cj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last_schedule = match time_at(cj, &["status", "lastScheduleTime"]) {
        Some(t) => human_duration(now - t),
        None => "<none>".into(),
    };
    let suspend = match at(cj, &["spec", "suspend"]).and_then(Value::as_bool) {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let job_spec = at(cj, &["spec", "jobTemplate", "spec"]).unwrap_or(&Value::Null);
    let (names, images) = container_cells(at(job_spec, &["template", "spec"]));
    vec![
        name_cell(cj),
        json!(str_at(cj, &["spec", "schedule"])),
        json!(opt_str_at(cj, &["spec", "timeZone"]).unwrap_or("<none>")),
        json!(suspend),
        json!(len_at(cj, &["status", "active"])),
        json!(last_schedule),
        age_cell(cj, now),
        names,
        images,
        json!(format_label_selector(at(job_spec, &["selector"]))),
    ]
}

/// A quantity field that Go dereferences even when unset, printing a nil quantity as `<nil>`.
fn quantity_or_nil(v: &Value, path: &[&str]) -> String {
    match at(v, path) {
        Some(Value::Null) | None => "<nil>".into(),
        Some(_) => quantity_at(v, path),
    }
}

/// `formatHPAMetrics` for autoscaling/v2: `current/target` per metric, at most two.
fn hpa_metrics(hpa: &Value) -> String {
    const MAX: usize = 2;
    let specs = arr_at(hpa, &["spec", "metrics"]);
    if specs.is_empty() {
        return "<none>".into();
    }
    let statuses = arr_at(hpa, &["status", "currentMetrics"]);
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        // The status of the same index, if it has the source of that type.
        let status = |source: &str| statuses.get(i).and_then(|s| obj_at(s, &[source]));
        let unknown = || "<unknown>".to_string();
        let item = match str_at(spec, &["type"]) {
            "External" | "Object" => {
                let source = if str_at(spec, &["type"]) == "External" {
                    "external"
                } else {
                    "object"
                };
                let target = at(spec, &[source, "target"]).unwrap_or(&Value::Null);
                if at(target, &["averageValue"]).is_some_and(|v| !v.is_null()) {
                    let current = status(source)
                        .filter(|s| {
                            at(s, &["current", "averageValue"]).is_some_and(|v| !v.is_null())
                        })
                        .map(|s| quantity_at(s, &["current", "averageValue"]))
                        .unwrap_or_else(unknown);
                    format!("{current}/{} (avg)", quantity_at(target, &["averageValue"]))
                } else {
                    let current = status(source)
                        .map(|s| quantity_or_nil(s, &["current", "value"]))
                        .unwrap_or_else(unknown);
                    format!("{current}/{}", quantity_or_nil(target, &["value"]))
                }
            }
            "Pods" => {
                let current = status("pods")
                    .map(|s| quantity_or_nil(s, &["current", "averageValue"]))
                    .unwrap_or_else(unknown);
                format!(
                    "{current}/{}",
                    quantity_or_nil(spec, &["pods", "target", "averageValue"])
                )
            }
            t @ ("Resource" | "ContainerResource") => {
                let source = if t == "Resource" {
                    "resource"
                } else {
                    "containerResource"
                };
                let name = str_at(spec, &[source, "name"]);
                let target = at(spec, &[source, "target"]).unwrap_or(&Value::Null);
                if at(target, &["averageValue"]).is_some_and(|v| !v.is_null()) {
                    let current = status(source)
                        .map(|s| quantity_or_nil(s, &["current", "averageValue"]))
                        .unwrap_or_else(unknown);
                    format!(
                        "{name}: {current}/{}",
                        quantity_at(target, &["averageValue"])
                    )
                } else {
                    let current = status(source)
                        .and_then(|s| opt_int_at(s, &["current", "averageUtilization"]))
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(unknown);
                    let target = opt_int_at(target, &["averageUtilization"])
                        .map(|u| format!("{u}%"))
                        .unwrap_or_else(|| "<auto>".into());
                    format!("{name}: {current}/{target}")
                }
            }
            _ => "<unknown type>".into(),
        };
        list.push(item);
    }
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        format!("{} + {} more...", list.join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

fn hpa_cells(hpa: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(hpa, &["spec", "scaleTargetRef", "kind"]),
        str_at(hpa, &["spec", "scaleTargetRef", "name"])
    );
    let min_pods = opt_int_at(hpa, &["spec", "minReplicas"])
        .map(|n| n.to_string())
        .unwrap_or_else(|| "<unset>".into());
    vec![
        name_cell(hpa),
        json!(reference),
        json!(hpa_metrics(hpa)),
        json!(min_pods),
        json!(int_at(hpa, &["spec", "maxReplicas"])),
        json!(int_at(hpa, &["status", "currentReplicas"])),
        age_cell(hpa, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{RESOURCES, lookup};

    fn now() -> DateTime<Utc> {
        parse_time("2026-01-01T12:00:00Z").unwrap()
    }

    /// An RFC3339 timestamp `secs` seconds before `now()`.
    fn ago(secs: i64) -> String {
        (now() - TimeDelta::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn def(group: &str, plural: &str) -> &'static ResourceDef {
        let r = RESOURCES
            .iter()
            .find(|r| r.group == group && r.plural == plural)
            .unwrap();
        lookup(group, r.version, plural).unwrap()
    }

    /// Column names as kubectl's header line would list them (before upper-casing).
    fn header(d: &ResourceDef) -> String {
        columns(d)
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    fn wide_header(d: &ResourceDef) -> String {
        let cols = columns(d);
        cols.iter()
            .filter(|c| c.priority == 1)
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// A row as text: strings bare, numbers as numbers.
    fn line(d: &ResourceDef, obj: &Value) -> String {
        let cells = cells(d, obj, now());
        let text: Vec<String> = cells
            .iter()
            .map(|c| {
                c.as_str()
                    .map(String::from)
                    .unwrap_or_else(|| c.to_string())
            })
            .collect();
        text.join(" | ")
    }

    /// The cell under `column`.
    fn cell(d: &ResourceDef, obj: &Value, column: &str) -> Value {
        let cols = columns(d);
        let i = cols.iter().position(|c| c.name == column).expect(column);
        cells(d, obj, now())[i].clone()
    }

    fn dur(secs: i64) -> String {
        human_duration(TimeDelta::seconds(secs))
    }

    #[test]
    fn human_duration_boundaries() {
        assert_eq!(dur(-3), "<invalid>");
        assert_eq!(dur(-2), "<invalid>");
        assert_eq!(human_duration(TimeDelta::milliseconds(-1500)), "0s");
        assert_eq!(dur(-1), "0s");
        assert_eq!(dur(0), "0s");
        assert_eq!(human_duration(TimeDelta::milliseconds(45_900)), "45s");
        assert_eq!(dur(119), "119s");
        assert_eq!(dur(120), "2m");
        assert_eq!(dur(5 * 60 + 30), "5m30s");
        assert_eq!(dur(9 * 60 + 59), "9m59s");
        assert_eq!(dur(10 * 60 + 59), "10m");
        assert_eq!(dur(179 * 60 + 59), "179m");
        assert_eq!(dur(3 * 3600), "3h");
        assert_eq!(dur(3 * 3600 + 10 * 60), "3h10m");
        assert_eq!(dur(7 * 3600 + 59 * 60), "7h59m");
        assert_eq!(dur(8 * 3600 + 59 * 60), "8h");
        assert_eq!(dur(47 * 3600 + 59 * 60), "47h");
        assert_eq!(dur(48 * 3600), "2d");
        assert_eq!(dur(52 * 3600), "2d4h");
        assert_eq!(dur(8 * 86400 - 1), "7d23h");
        assert_eq!(dur(8 * 86400), "8d");
        assert_eq!(dur(400 * 86400), "400d");
        assert_eq!(dur(729 * 86400 + 23 * 3600), "729d");
        assert_eq!(dur(730 * 86400), "2y");
        assert_eq!(dur(750 * 86400), "2y20d");
        assert_eq!(dur(8 * 365 * 86400 - 1), "7y364d");
        assert_eq!(dur(8 * 365 * 86400), "8y");
        assert_eq!(dur(30 * 365 * 86400), "30y");
    }

    #[test]
    fn every_resource_has_matching_columns_and_survives_partial_objects() {
        let partials = [
            json!({}),
            json!(null),
            json!({"metadata": {"name": 5, "creationTimestamp": "yesterday"}}),
            json!({"spec": 5, "status": "x", "subsets": [1, {"ports": 3}], "series": {}}),
            json!({"spec": {"containers": [1], "ports": [{}], "metrics": [{"type": "Resource"}, {}]},
                   "status": {"containerStatuses": [{}],
                              "initContainerStatuses": [{"state": {"terminated": {}}}]}}),
        ];
        for d in RESOURCES {
            let cols = columns(d);
            assert_eq!(
                cols.iter().filter(|c| c.format == "name").count(),
                1,
                "{}",
                d.kind
            );
            for p in &partials {
                assert_eq!(cells(d, p, now()).len(), cols.len(), "{} {p}", d.kind);
            }
        }
    }

    #[test]
    fn column_names_match_kube_apiserver() {
        let core = |p| def("", p);
        let pods = core("pods");
        assert_eq!(
            header(pods),
            "Name | Ready | Status | Restarts | Age | IP | Node | Nominated Node | Readiness Gates"
        );
        assert_eq!(
            wide_header(pods),
            "IP | Node | Nominated Node | Readiness Gates"
        );
        let deploy = def("apps", "deployments");
        assert_eq!(
            header(deploy),
            "Name | Ready | Up-to-date | Available | Age | Containers | Images | Selector"
        );
        assert_eq!(wide_header(deploy), "Containers | Images | Selector");
        assert_eq!(
            header(def("apps", "replicasets")),
            "Name | Desired | Current | Ready | Age | Containers | Images | Selector"
        );
        let svc = core("services");
        assert_eq!(
            header(svc),
            "Name | Type | Cluster-IP | External-IP | Port(s) | Age | Selector"
        );
        assert_eq!(wide_header(svc), "Selector");
        assert_eq!(header(core("configmaps")), "Name | Data | Age");
        assert_eq!(header(core("secrets")), "Name | Type | Data | Age");
        let pvc = core("persistentvolumeclaims");
        assert_eq!(
            header(pvc),
            "Name | Status | Volume | Capacity | Access Modes | StorageClass | VolumeAttributesClass \
             | Age | VolumeMode"
        );
        assert_eq!(wide_header(pvc), "VolumeMode");
        assert_eq!(
            header(core("persistentvolumes")),
            "Name | Capacity | Access Modes | Reclaim Policy | Status | Claim | StorageClass \
             | VolumeAttributesClass | Reason | Age | VolumeMode"
        );
        let nodes = core("nodes");
        assert_eq!(
            header(nodes),
            "Name | Status | Roles | Age | Version | Internal-IP | External-IP \
             | OS-Image | Kernel-Version | Container-Runtime"
        );
        assert_eq!(
            wide_header(nodes),
            "Internal-IP | External-IP | OS-Image | Kernel-Version | Container-Runtime"
        );
        assert_eq!(header(core("namespaces")), "Name | Status | Age");
        let events = "Last Seen | Type | Reason | Object | Subobject | Source | Message | First Seen \
             | Count | Name";
        assert_eq!(header(core("events")), events);
        assert_eq!(header(def("events.k8s.io", "events")), events);
        assert_eq!(
            wide_header(core("events")),
            "Subobject | Source | First Seen | Count | Name"
        );
        assert_eq!(header(core("serviceaccounts")), "Name | Secrets | Age");
        assert_eq!(header(core("endpoints")), "Name | Endpoints | Age");
        assert_eq!(
            header(def("discovery.k8s.io", "endpointslices")),
            "Name | AddressType | Ports | Endpoints | Age"
        );
        assert_eq!(
            header(def("apps", "statefulsets")),
            "Name | Ready | Age | Containers | Images"
        );
        assert_eq!(
            header(def("apps", "daemonsets")),
            "Name | Desired | Current | Ready | Up-to-date | Available | Node Selector | Age \
             | Containers | Images | Selector"
        );
        assert_eq!(
            header(def("batch", "jobs")),
            "Name | Status | Completions | Duration | Age | Containers | Images | Selector"
        );
        assert_eq!(
            header(def("batch", "cronjobs")),
            "Name | Schedule | Timezone | Suspend | Active | Last Schedule | Age | Containers \
             | Images | Selector"
        );
        assert_eq!(
            header(def("autoscaling", "horizontalpodautoscalers")),
            "Name | Reference | Targets | MinPods | MaxPods | Replicas | Age"
        );
        assert_eq!(
            header(def("coordination.k8s.io", "leases")),
            "Name | Holder | Age"
        );
        assert_eq!(
            header(def("apps", "controllerrevisions")),
            "Name | Controller | Revision | Age"
        );
        let pod_cols = columns(pods);
        assert_eq!(pod_cols[0].to_json()["format"], "name");
        assert_eq!(pod_cols[3].type_, "string");
        assert_eq!(columns(def("apps", "replicasets"))[1].type_, "integer");
    }

    fn pod(status: Value) -> Value {
        json!({
            "metadata": {"name": "web-1", "creationTimestamp": ago(90)},
            "spec": {"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node-1"},
            "status": status,
        })
    }

    /// READY | STATUS | RESTARTS of a pod.
    fn pod_state(p: &Value) -> String {
        let c = cells(def("", "pods"), p, now());
        c[1..4]
            .iter()
            .map(|v| v.as_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(" | ")
    }

    #[test]
    fn pod_pending_and_creating() {
        let d = def("", "pods");
        let p = pod(json!({"phase": "Pending"}));
        assert_eq!(
            line(d, &p),
            "web-1 | 0/1 | Pending | 0 | 90s | <none> | node-1 | <none> | <none>"
        );

        let p = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "app", "ready": false,
            "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(pod_state(&p), "0/1 | ContainerCreating | 0");

        let mut gated = pod(json!({"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}
        ]}));
        gated["spec"]["nodeName"] = Value::Null;
        assert_eq!(pod_state(&gated), "0/1 | SchedulingGated | 0");
        assert_eq!(cell(d, &gated, "Node"), "<none>");
    }

    #[test]
    fn pod_ready_counts_running_ready_containers() {
        let mut p = pod(json!({"phase": "Running", "podIPs": [{"ip": "10.42.0.7"}],
        "nominatedNodeName": "node-2",
        "conditions": [{"type": "Ready", "status": "False"},
                       {"type": "example.com/gate", "status": "True"}],
        "containerStatuses": [
            {"name": "a", "ready": true, "restartCount": 0, "state": {"running": {}}},
            {"name": "b", "ready": false, "restartCount": 0, "state": {"running": {}}},
            {"name": "c", "ready": false, "restartCount": 0, "state": {"running": {}}},
        ]}));
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}, {"name": "c"}]);
        p["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/gate"}, {"conditionType": "other"}]);
        assert_eq!(
            line(def("", "pods"), &p),
            "web-1 | 1/3 | Running | 0 | 90s | 10.42.0.7 | node-1 | node-2 | 1/2"
        );
        // An object without podIPs still shows its podIP.
        p["status"]["podIPs"] = Value::Null;
        p["status"]["podIP"] = json!("10.42.0.8");
        assert_eq!(cell(def("", "pods"), &p, "IP"), "10.42.0.8");
    }

    #[test]
    fn pod_crash_loop_shows_restarts_with_last_restart_age() {
        let p = pod(json!({"phase": "Running", "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 2,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}
        }]}));
        assert_eq!(pod_state(&p), "0/1 | CrashLoopBackOff | 2 (5m ago)");

        // Restarts without a recorded termination time print bare.
        let p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 3, "state": {"running": {}}}
        ]}));
        assert_eq!(pod_state(&p), "1/1 | Running | 3");
    }

    #[test]
    fn pod_terminated_containers() {
        let d = def("", "pods");
        let p = pod(
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app",
            "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(pod_state(&p), "0/1 | Completed | 0");
        let r = row(d, &p, now(), IncludeObject::None);
        assert_eq!(r["conditions"][0]["type"], "Completed");
        assert_eq!(r["conditions"][0]["reason"], "Succeeded");
        assert_eq!(r["object"], Value::Null);

        let p = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}
        ]}));
        assert_eq!(pod_state(&p), "0/1 | Signal:9 | 0");
        assert_eq!(
            row(d, &p, now(), IncludeObject::None)["conditions"][0]["reason"],
            "Failed"
        );
        let p = pod(json!({"phase": "Failed", "containerStatuses": [
            {"name": "app", "state": {"terminated": {"exitCode": 3}}}
        ]}));
        assert_eq!(pod_state(&p), "0/1 | ExitCode:3 | 0");

        // One container completed while the other runs: the pod is running (or not ready).
        let mut p = pod(json!({"phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "a", "ready": true, "state": {"running": {}}},
            {"name": "b", "ready": false,
             "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        ]}));
        p["spec"]["containers"] = json!([{"name": "a"}, {"name": "b"}]);
        assert_eq!(pod_state(&p), "1/2 | Running | 0");
        p["status"]["conditions"] = json!([{"type": "Ready", "status": "False"}]);
        assert_eq!(pod_state(&p), "1/2 | NotReady | 0");
        assert!(
            row(d, &p, now(), IncludeObject::None)
                .get("conditions")
                .is_none()
        );
    }

    #[test]
    fn pod_terminating_and_unknown() {
        let mut p = pod(json!({"phase": "Running", "containerStatuses": [
            {"name": "app", "ready": true, "state": {"running": {}}}
        ]}));
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(pod_state(&p), "1/1 | Terminating | 0");
        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(pod_state(&p), "1/1 | Unknown | 0");
        let mut done = pod(json!({"phase": "Succeeded"}));
        done["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(pod_state(&done), "0/1 | Succeeded | 0");
    }

    #[test]
    fn pod_init_containers() {
        let with_init = |init_statuses: Value| {
            let mut p = pod(
                json!({"phase": "Pending", "initContainerStatuses": init_statuses,
                "containerStatuses": [{"name": "app",
                    "state": {"waiting": {"reason": "PodInitializing"}}}]}),
            );
            p["spec"]["initContainers"] = json!([{"name": "init"}]);
            p
        };
        let waiting =
            |reason: &str| json!([{"name": "init", "state": {"waiting": {"reason": reason}}}]);
        assert_eq!(
            pod_state(&with_init(waiting("PodInitializing"))),
            "0/1 | Init:0/1 | 0"
        );
        let running = json!([{"name": "init", "state": {"running": {}}}]);
        assert_eq!(pod_state(&with_init(running)), "0/1 | Init:0/1 | 0");
        let crashing = json!([{"name": "init", "restartCount": 4,
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}}]);
        assert_eq!(
            pod_state(&with_init(crashing)),
            "0/1 | Init:CrashLoopBackOff | 4 (30s ago)"
        );
        let terminated = |t: Value| json!([{"name": "init", "state": {"terminated": t}}]);
        let failed = terminated(json!({"exitCode": 1, "reason": "Error"}));
        assert_eq!(pod_state(&with_init(failed)), "0/1 | Init:Error | 0");
        let exit = terminated(json!({"exitCode": 2}));
        assert_eq!(pod_state(&with_init(exit)), "0/1 | Init:ExitCode:2 | 0");
        let signal = terminated(json!({"exitCode": 2, "signal": 15}));
        assert_eq!(pod_state(&with_init(signal)), "0/1 | Init:Signal:15 | 0");
        // A finished init container hands over to the app containers.
        let done = terminated(json!({"exitCode": 0, "reason": "Completed"}));
        assert_eq!(pod_state(&with_init(done)), "0/1 | PodInitializing | 0");

        // A started sidecar counts as a ready container; its restarts stay counted.
        let mut p = pod(json!({"phase": "Running",
            "conditions": [{"type": "Initialized", "status": "True"}],
            "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true,
                "restartCount": 1, "state": {"running": {}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(600)}}}],
            "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]}));
        p["spec"]["initContainers"] = json!([{"name": "proxy", "restartPolicy": "Always"}]);
        assert_eq!(pod_state(&p), "2/2 | Running | 1 (10m ago)");
    }

    fn service(spec: Value, status: Value) -> Value {
        let created = ago(3 * 3600 + 600);
        json!({"metadata": {"name": "web", "creationTimestamp": created}, "spec": spec, "status": status})
    }

    #[test]
    fn service_cells_follow_kubectl_rules() {
        let d = def("", "services");
        let s = service(
            json!({"type": "ClusterIP", "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"tier": "fe", "app": "web"}}),
            json!({}),
        );
        assert_eq!(
            line(d, &s),
            "web | ClusterIP | 10.43.0.10 | <none> | 80/TCP,53/UDP | 3h10m | app=web,tier=fe"
        );

        let s = service(
            json!({"type": "NodePort", "clusterIPs": ["10.43.0.11"], "externalIPs": ["192.0.2.1"],
                   "ports": [{"port": 80, "nodePort": 31234, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            line(d, &s),
            "web | NodePort | 10.43.0.11 | 192.0.2.1 | 80:31234/TCP | 3h10m | <none>"
        );

        let spec = json!({"type": "LoadBalancer", "clusterIPs": ["10.43.0.12"],
            "ports": [{"port": 443, "nodePort": 30443}]});
        let mut lb = service(spec, json!({}));
        assert_eq!(cell(d, &lb, "External-IP"), "<pending>");
        assert_eq!(cell(d, &lb, "Port(s)"), "443:30443/TCP");
        lb["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.9"},
            {"hostname": "lb.example.com"}, {"ip": "198.51.100.2"}, {"ip": "198.51.100.9"}]}});
        let ingress = "198.51.100.2,198.51.100.9,lb.example.com";
        assert_eq!(cell(d, &lb, "External-IP"), ingress);
        lb["spec"]["externalIPs"] = json!(["192.0.2.5"]);
        assert_eq!(cell(d, &lb, "External-IP"), format!("{ingress},192.0.2.5"));

        let ext = service(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            line(d, &ext),
            "web | ExternalName | <none> | db.example.com | <none> | 3h10m | <none>"
        );

        let spec = json!({"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]});
        let headless = service(spec, json!({}));
        assert_eq!(
            line(d, &headless),
            "web | ClusterIP | None | <none> | 5432/TCP | 3h10m | <none>"
        );
    }

    #[test]
    fn deployment_and_replica_set() {
        let d = def("apps", "deployments");
        let dep = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(52 * 3600)},
            "spec": {"replicas": 3,
                "selector": {"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "dev"]},
                    {"key": "canary", "operator": "DoesNotExist"}]},
                "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"},
                                                     {"name": "sidecar", "image": "envoy:1"}]}}},
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2}
        });
        assert_eq!(
            line(d, &dep),
            "web | 2/3 | 3 | 2 | 2d4h | web,sidecar | nginx:1.27,envoy:1 | app=web,!canary,env in (dev,prod)"
        );
        assert_eq!(cell(d, &dep, "Up-to-date"), json!(3));
        let bare = json!({"metadata": {"name": "x"}, "spec": {"selector": {}}});
        assert_eq!(line(d, &bare), "x | 0/1 | 0 | 0 | <unknown> |  |  | ");
        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}});
        assert_eq!(cell(d, &bad, "Selector"), "<invalid>");

        let rs = def("apps", "replicasets");
        let r = json!({"metadata": {"name": "web-5d8f"}, "spec": {"replicas": 3,
            "selector": {"matchLabels": {"pod-template-hash": "5d8f", "app": "web"}}},
            "status": {"replicas": 3, "readyReplicas": 1}});
        assert_eq!(
            line(rs, &r),
            "web-5d8f | 3 | 3 | 1 | <unknown> |  |  | app=web,pod-template-hash=5d8f"
        );
        assert_eq!(cell(rs, &r, "Desired"), json!(3));
        assert_eq!(cell(rs, &json!({}), "Selector"), "<none>");
        let bad =
            json!({"spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}}});
        assert_eq!(cell(rs, &bad, "Selector"), "<error>");
    }

    #[test]
    fn stateful_set_daemon_set_and_revision() {
        let sts = def("apps", "statefulsets");
        let s = json!({"metadata": {"name": "db"}, "spec": {"replicas": 3,
            "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:17"}]}}},
            "status": {"readyReplicas": 1}});
        assert_eq!(line(sts, &s), "db | 1/3 | <unknown> | pg | postgres:17");

        let ds = def("apps", "daemonsets");
        let d = json!({"metadata": {"name": "agent"}, "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                  "containers": [{"name": "a", "image": "i"}]}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(
            line(ds, &d),
            "agent | 3 | 3 | 2 | 3 | 2 | kubernetes.io/os=linux | <unknown> | a | i | app=agent"
        );
        assert_eq!(cell(ds, &json!({}), "Node Selector"), "<none>");

        let cr = def("apps", "controllerrevisions");
        let c = json!({"metadata": {"name": "db-7c9", "ownerReferences": [
            {"apiVersion": "v1", "kind": "Other", "name": "x"},
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": true}]},
            "revision": 2});
        assert_eq!(line(cr, &c), "db-7c9 | statefulset.apps/db | 2 | <unknown>");
        assert_eq!(cell(cr, &json!({}), "Controller"), "<none>");
    }

    #[test]
    fn pvc_and_pv() {
        let d = def("", "persistentvolumeclaims");
        let bound = json!({"metadata": {"name": "data", "creationTimestamp": ago(400 * 86400)},
            "spec": {"volumeName": "pv-1", "storageClassName": "local-path", "volumeMode": "Filesystem",
                     "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Bound", "capacity": {"storage": "1024Mi"},
                       "accessModes": ["ReadWriteMany", "ReadWriteOnce", "ReadWriteOnce"]}});
        assert_eq!(
            line(d, &bound),
            "data | Bound | pv-1 | 1Gi | RWO,RWX | local-path | <unset> | 400d | Filesystem"
        );
        let mut pending = json!({"metadata": {"name": "claim",
                "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"storageClassName": "fast", "volumeAttributesClassName": "gold",
                     "resources": {"requests": {"storage": "5Gi"}}},
            "status": {"phase": "Pending"}});
        assert_eq!(
            line(d, &pending),
            "claim | Pending |  |  |  | legacy | gold | <unknown> | <unset>"
        );
        pending["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell(d, &pending, "Status"), "Terminating");

        let pv = def("", "persistentvolumes");
        let v = json!({"metadata": {"name": "pv-1"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod", "ReadOnlyMany"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                     "claimRef": {"namespace": "default", "name": "data"}, "volumeMode": "Block"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            line(pv, &v),
            "pv-1 | 10Gi | ROX,RWOP | Delete | Bound | default/data | local-path | <unset> |  | <unknown> | Block"
        );
        assert_eq!(
            line(pv, &json!({})),
            " | 0 |  |  |  |  |  | <unset> |  | <unknown> | <unset>"
        );
    }

    #[test]
    fn node_status_roles_and_addresses() {
        let d = def("", "nodes");
        let mut n = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(3600),
                "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/master": "true",
                           "kubernetes.io/role": "gpu", "node-role.kubernetes.io/": "x",
                           "kubernetes.io/os": "linux"}},
            "spec": {},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-1"},
                              {"type": "InternalIP", "address": "192.168.1.5"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0+skiff", "osImage": "Debian GNU/Linux 13",
                             "kernelVersion": "6.12.0", "containerRuntimeVersion": ""}}});
        assert_eq!(
            line(d, &n),
            "node-1 | Ready | control-plane,gpu,master | 60m | v1.33.0+skiff | 192.168.1.5 | <none> \
             | Debian GNU/Linux 13 | 6.12.0 | <unknown>"
        );
        n["spec"]["unschedulable"] = json!(true);
        assert_eq!(cell(d, &n, "Status"), "Ready,SchedulingDisabled");
        n["status"]["conditions"][1]["status"] = json!("Unknown");
        assert_eq!(cell(d, &n, "Status"), "NotReady,SchedulingDisabled");
        assert_eq!(
            line(d, &json!({"metadata": {"name": "n"}})),
            "n | Unknown | <none> | <unknown> |  | <none> | <none> | <unknown> | <unknown> | <unknown>"
        );
    }

    #[test]
    fn small_resources() {
        let ns = def("", "namespaces");
        let n = json!({"metadata": {"name": "default", "creationTimestamp": ago(45)},
                       "status": {"phase": "Active"}});
        assert_eq!(line(ns, &n), "default | Active | 45s");

        let cm = def("", "configmaps");
        let c = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cell(cm, &c, "Data"), json!(3));

        let sec = def("", "secrets");
        let s = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls",
                       "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(line(sec, &s), "tls | kubernetes.io/tls | 2 | <unknown>");
        assert_eq!(cell(sec, &s, "Data"), json!(2));

        let sa = def("", "serviceaccounts");
        assert_eq!(
            cell(sa, &json!({"secrets": [{"name": "t"}]}), "Secrets"),
            json!(1)
        );
        assert_eq!(cell(sa, &json!({}), "Secrets"), json!(0));

        let lease = def("coordination.k8s.io", "leases");
        assert_eq!(
            line(
                lease,
                &json!({"metadata": {"name": "node-1"}, "spec": {"holderIdentity": "node-1"}})
            ),
            "node-1 | node-1 | <unknown>"
        );
        assert_eq!(cell(lease, &json!({}), "Holder"), "");
    }

    #[test]
    fn events_core_and_events_k8s_io() {
        let d = def("", "events");
        let e = json!({"metadata": {"name": "web-1.17a"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "type": "Normal", "reason": "Pulled", "message": "  Container image pulled\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(30), "count": 4});
        assert_eq!(
            line(d, &e),
            "30s | Normal | Pulled | pod/web-1 | spec.containers{app} | kubelet, node-1 \
             | Container image pulled | 10m | 4 | web-1.17a"
        );
        assert_eq!(cell(d, &e, "Count"), json!(4));

        // New-style events: eventTime, reporting controller, no count.
        let e2 = json!({"metadata": {"name": "x"}, "involvedObject": {"kind": "Node"},
            "eventTime": "2026-01-01T11:58:00.000000Z", "reportingController": "skiff-scheduler",
            "type": "Warning", "reason": "FailedScheduling", "message": "0/1 nodes"});
        assert_eq!(
            line(d, &e2),
            "2m | Warning | FailedScheduling | node |  | skiff-scheduler | 0/1 nodes | 2m | 1 | x"
        );
        let mut e3 = e2.clone();
        e3["series"] = json!({"count": 7, "lastObservedTime": ago(5)});
        assert_eq!(cell(d, &e3, "Last Seen"), "5s");
        assert_eq!(cell(d, &e3, "Count"), json!(7));
        assert_eq!(cell(d, &json!({}), "Last Seen"), "<unknown>");

        let v1 = def("events.k8s.io", "events");
        let e4 = json!({"metadata": {"name": "y"}, "regarding": {"kind": "Deployment", "name": "web"},
            "note": "Scaled up", "type": "Normal", "reason": "ScalingReplicaSet",
            "deprecatedSource": {"component": "deployment-controller"},
            "deprecatedFirstTimestamp": ago(7200), "deprecatedLastTimestamp": ago(60), "deprecatedCount": 2,
            "reportingInstance": "skiff-0"});
        assert_eq!(
            line(v1, &e4),
            "60s | Normal | ScalingReplicaSet | deployment/web |  | deployment-controller, skiff-0 \
             | Scaled up | 120m | 2 | y"
        );
    }

    #[test]
    fn endpoints_and_slices() {
        let d = def("", "endpoints");
        let ep = json!({"subsets": [{"ports": [{"port": 80}], "addresses": [
            {"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}, {"ip": "10.0.0.4"}]}]});
        assert_eq!(
            cell(d, &ep, "Endpoints"),
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 1 more..."
        );
        let ep = json!({"subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "fd00::2"}],
                                     "ports": [{"port": 80}, {"port": 443}]}]});
        assert_eq!(
            cell(d, &ep, "Endpoints"),
            "10.0.0.1:80,[fd00::2]:80,10.0.0.1:443 + 1 more..."
        );
        let headless = json!({"subsets": [{"addresses": [{"ip": "10.0.0.9"}]}]});
        assert_eq!(cell(d, &headless, "Endpoints"), "10.0.0.9");
        assert_eq!(cell(d, &json!({}), "Endpoints"), "<none>");
        assert_eq!(
            cell(
                d,
                &json!({"subsets": [{"ports": [{"port": 1}]}]}),
                "Endpoints"
            ),
            ""
        );

        let s = def("discovery.k8s.io", "endpointslices");
        let sl = json!({"metadata": {"name": "web-abc"}, "addressType": "IPv4",
            "ports": [{"port": 80}, {"name": "https"}, {}, {"port": 9090}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}]});
        assert_eq!(
            line(s, &sl),
            "web-abc | IPv4 | 80,https,* + 1 more... | 10.0.0.1,10.0.0.2,10.0.0.3 | <unknown>"
        );
        assert_eq!(line(s, &json!({})), " |  | <unset> | <unset> | <unknown>");
    }

    #[test]
    fn jobs_and_cron_jobs() {
        let d = def("batch", "jobs");
        let mut j = json!({"metadata": {"name": "train", "creationTimestamp": ago(3600)},
            "spec": {"completions": 3, "parallelism": 2,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
                     "template": {"spec": {"containers": [{"name": "t", "image": "py"}]}}},
            "status": {"succeeded": 1, "startTime": ago(600)}});
        assert_eq!(
            line(d, &j),
            "train | Running | 1/3 | 10m | 60m | t | py | batch.kubernetes.io/controller-uid=u1"
        );
        j["status"]["completionTime"] = json!(ago(570));
        j["status"]["conditions"] = json!([{"type": "SuccessCriteriaMet", "status": "True"},
                                           {"type": "Complete", "status": "True"}]);
        assert_eq!(cell(d, &j, "Status"), "Complete");
        assert_eq!(cell(d, &j, "Duration"), "30s");
        j["status"]["conditions"] = json!([{"type": "Failed", "status": "True"}]);
        assert_eq!(cell(d, &j, "Status"), "Failed");
        j["status"]["conditions"] = json!([{"type": "Suspended", "status": "True"}]);
        assert_eq!(cell(d, &j, "Status"), "Suspended");
        j["metadata"]["deletionTimestamp"] = json!(ago(1));
        assert_eq!(cell(d, &j, "Status"), "Terminating");
        let bare = json!({"spec": {"parallelism": 4}});
        assert_eq!(cell(d, &bare, "Completions"), "0/1 of 4");
        assert_eq!(cell(d, &bare, "Duration"), "");
        assert_eq!(cell(d, &json!({}), "Completions"), "0/1");

        let cj = def("batch", "cronjobs");
        let c = json!({"metadata": {"name": "nightly"},
            "spec": {"schedule": "0 3 * * *", "timeZone": "Etc/UTC", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {
                        "containers": [{"name": "b", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "nightly-1"}], "lastScheduleTime": ago(9 * 3600)}});
        assert_eq!(
            line(cj, &c),
            "nightly | 0 3 * * * | Etc/UTC | False | 1 | 9h | <unknown> | b | busybox | <none>"
        );
        assert_eq!(
            line(cj, &json!({})),
            " |  | <none> | <unset> | 0 | <none> | <unknown> |  |  | <none>"
        );
    }

    #[test]
    fn hpa_targets() {
        let d = def("autoscaling", "horizontalpodautoscalers");
        let mut h = json!({"metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1,
                "maxReplicas": 10, "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80}}}]},
            "status": {"currentReplicas": 2}});
        assert_eq!(
            line(d, &h),
            "web | Deployment/web | cpu: <unknown>/80% | 1 | 10 | 2 | <unknown>"
        );
        assert_eq!(cell(d, &h, "MaxPods"), json!(10));
        h["status"]["currentMetrics"] = json!([{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 35}}}]);
        assert_eq!(cell(d, &h, "Targets"), "cpu: 35%/80%");
        h["spec"]["metrics"] = json!([
            {"type": "Resource", "resource": {"name": "memory",
                "target": {"type": "AverageValue", "averageValue": "512Mi"}}},
            {"type": "Pods", "pods": {"metric": {"name": "rps"},
                "target": {"type": "AverageValue", "averageValue": "100"}}},
            {"type": "External", "external": {"metric": {"name": "queue"},
                "target": {"type": "Value", "value": "30"}}},
        ]);
        h["status"]["currentMetrics"] = json!([
            {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "268435456"}}},
            {"type": "Pods", "pods": {"current": {"averageValue": "1500m"}}},
        ]);
        assert_eq!(
            cell(d, &h, "Targets"),
            "memory: 268435456/512Mi, 1500m/100 + 1 more..."
        );
        h["spec"]["metrics"] = json!([
            {"type": "Object", "object": {"target": {"type": "AverageValue", "averageValue": "2k"}}},
            {"type": "ContainerResource", "containerResource": {"name": "cpu", "container": "app",
                "target": {"type": "Utilization"}}},
        ]);
        h["status"]["currentMetrics"] = json!([]);
        assert_eq!(
            cell(d, &h, "Targets"),
            "<unknown>/2k (avg), cpu: <unknown>/<auto>"
        );
        h["spec"]["metrics"] = json!([]);
        h["spec"]["minReplicas"] = Value::Null;
        assert_eq!(cell(d, &h, "Targets"), "<none>");
        assert_eq!(cell(d, &h, "MinPods"), "<unset>");
    }

    #[test]
    fn quantities_print_canonically() {
        for (input, want) in [
            ("1Gi", "1Gi"),
            ("1024Mi", "1Gi"),
            ("1536Mi", "1536Mi"),
            ("1.5Gi", "1536Mi"),
            ("0.5Gi", "512Mi"),
            ("2048Ki", "2Mi"),
            ("512", "512"),
            ("0.5Ki", "512"),
            ("1000", "1k"),
            ("1500", "1500"),
            ("1.5", "1500m"),
            ("0.5", "500m"),
            ("100m", "100m"),
            ("1000m", "1"),
            ("5G", "5G"),
            ("5000M", "5G"),
            ("1e3", "1e3"),
            ("1500e-3", "1500e-3"),
            ("-1Gi", "-1Gi"),
            ("0", "0"),
            ("0Gi", "0"),
            ("banana", "banana"),
            ("", ""),
        ] {
            assert_eq!(canonical_quantity(input), want, "{input}");
        }
    }

    #[test]
    fn include_object_parsing() {
        assert_eq!(
            IncludeObject::from_query(None).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::from_query(Some("")).unwrap(),
            IncludeObject::Metadata
        );
        assert_eq!(
            IncludeObject::from_query(Some("None")).unwrap(),
            IncludeObject::None
        );
        assert_eq!(
            IncludeObject::from_query(Some("Object")).unwrap(),
            IncludeObject::Object
        );
        assert_eq!(
            IncludeObject::from_query(Some("All")).unwrap_err().code(),
            400
        );
    }

    #[test]
    fn tables_carry_rows_objects_and_list_metadata() {
        let d = def("", "configmaps");
        let list = json!({"kind": "ConfigMapList", "apiVersion": "v1",
        "metadata": {"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3},
        "items": [
            {"metadata": {"name": "a", "namespace": "default", "resourceVersion": "7",
                          "labels": {"x": "y"}},
             "data": {"k": "v"}},
            {"metadata": {"name": "b"}},
        ]});
        let t = list_table(d, &list, now(), IncludeObject::Metadata);
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(
            t["metadata"],
            json!({"resourceVersion": "42", "continue": "tok", "remainingItemCount": 3})
        );
        assert_eq!(
            t["columnDefinitions"][0],
            json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESC, "priority": 0})
        );
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
        assert_eq!(t["rows"][0]["cells"], json!(["a", 1, "<unknown>"]));
        assert_eq!(
            t["rows"][0]["object"],
            json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": {"name": "a", "namespace": "default", "resourceVersion": "7", "labels": {"x": "y"}}
            })
        );
        assert!(t["rows"][0].get("conditions").is_none());

        let items = json!({"items": [{"metadata": {"name": "a"}, "data": {}}]});
        let t = list_table(d, &items, now(), IncludeObject::Object);
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(
            t["rows"][0]["object"],
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {}})
        );

        let one = object_table(d, &list["items"][0], now(), IncludeObject::None);
        assert_eq!(one["metadata"], json!({"resourceVersion": "7"}));
        assert_eq!(one["rows"].as_array().unwrap().len(), 1);
        assert_eq!(one["rows"][0]["object"], Value::Null);

        let mut empty = table(d, &[], now(), IncludeObject::Metadata);
        assert_eq!(empty["rows"], json!([]));
        without_headers(&mut empty);
        assert_eq!(empty["columnDefinitions"], Value::Null);
        assert_eq!(empty["kind"], "Table");
    }

    #[test]
    fn unknown_resources_get_the_default_convertor() {
        let crd = ResourceDef {
            group: "serving.skiff.dev",
            kind: "InferenceService",
            ..RESOURCES[0].clone()
        };
        assert_eq!(header(&crd), "Name | Created At");
        let o =
            json!({"metadata": {"name": "m", "creationTimestamp": "2025-12-31T13:00:00+01:00"}});
        assert_eq!(line(&crd, &o), "m | 2025-12-31T12:00:00Z");
    }
}
