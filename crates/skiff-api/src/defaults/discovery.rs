//! Defaults of discovery.k8s.io/v1 EndpointSlice.

use super::{default, default_str, each_obj};
use serde_json::{Value, json};

pub(super) fn endpoint_slice(obj: &mut Value) {
    let Some(root) = obj.as_object_mut() else {
        return;
    };
    for p in each_obj(root, "ports") {
        default(p, "name", json!(""));
        default_str(p, "protocol", "TCP");
    }
}
