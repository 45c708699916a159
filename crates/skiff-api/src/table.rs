//! Table output (`as=Table;v=v1;g=meta.k8s.io`): the columns kubectl prints for each resource.

use crate::registry::ResourceDef;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

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

pub fn columns(_def: &ResourceDef) -> Vec<Column> {
    vec![
        Column { name: "Name", type_: "string", format: "name", description: "Name", priority: 0 },
        Column { name: "Age", type_: "string", format: "", description: "Age", priority: 0 },
    ]
}

/// The cells of one row, in the order of `columns(def)`.
pub fn cells(_def: &ResourceDef, obj: &Value, _now: DateTime<Utc>) -> Vec<Value> {
    vec![json!(crate::meta::name(obj).unwrap_or_default()), json!("")]
}
