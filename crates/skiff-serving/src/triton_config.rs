//! Triton's `config.pbtxt` as model settings: the fields skiff acts on, with Triton's meaning.
//!
//! - `name`, `platform` (as reported in metadata);
//! - `max_batch_size` with `dynamic_batching { max_queue_delay_microseconds }`: as in Triton,
//!   requests are merged only when `dynamic_batching` is present, and a request of more rows
//!   than `max_batch_size` (when above 0) is refused;
//! - `instance_group [{ count }]`: the counts add up to the instance count;
//! - `version_policy`: `latest { num_versions: 1 }` (the default) or `specific { versions: N }`
//!   with one version; skiff serves one version per model, so `all` and several versions are
//!   refused with a message saying so.
//!
//! Inputs and outputs need not be declared: names, datatypes and shapes come from the ONNX
//! graph, so `input`/`output` are accepted and not used. Field names are checked against
//! Triton's `ModelConfig` so that a typo is an error naming the field, not a silent default.

use crate::pbtxt::{self, Message, Value};
use crate::repository::{ModelSettings, SettingsParameters};

/// The fields of Triton's `ModelConfig` message (model_config.proto).
const MODEL_CONFIG_FIELDS: &[&str] = &[
    "name",
    "platform",
    "backend",
    "runtime",
    "version_policy",
    "max_batch_size",
    "input",
    "output",
    "batch_input",
    "batch_output",
    "optimization",
    "dynamic_batching",
    "sequence_batching",
    "ensemble_scheduling",
    "instance_group",
    "default_model_filename",
    "cc_model_filenames",
    "metric_tags",
    "parameters",
    "model_warmup",
    "model_operations",
    "model_transaction_policy",
    "model_repository_agents",
    "response_cache",
];

const DYNAMIC_BATCHING_FIELDS: &[&str] = &[
    "preferred_batch_size",
    "max_queue_delay_microseconds",
    "preserve_ordering",
    "priority_levels",
    "default_priority_level",
    "default_queue_policy",
    "priority_queue_policy",
];

const INSTANCE_GROUP_FIELDS: &[&str] = &[
    "name",
    "kind",
    "count",
    "rate_limiter",
    "gpus",
    "secondary_devices",
    "profile",
    "passive",
    "host_policy",
];

/// Reads a `config.pbtxt` text into the settings skiff uses.
pub fn settings_from_pbtxt(text: &str) -> Result<ModelSettings, String> {
    let config = pbtxt::parse(text).map_err(|e| e.to_string())?;
    known_fields(&config, "", MODEL_CONFIG_FIELDS)?;
    let max_batch_size = match config.one("max_batch_size")? {
        Some(v) => int(v, "max_batch_size")?,
        None => 0,
    };
    let mut settings = ModelSettings {
        name: string(config.one("name")?, "name")?,
        platform: string(config.one("platform")?, "platform")?,
        max_request_rows: (max_batch_size > 0).then_some(max_batch_size),
        ..ModelSettings::default()
    };
    match config.one("dynamic_batching")? {
        Some(v) => {
            let db = message(v, "dynamic_batching")?;
            known_fields(db, "dynamic_batching.", DYNAMIC_BATCHING_FIELDS)?;
            if max_batch_size == 0 {
                return Err("dynamic_batching needs max_batch_size > 0".into());
            }
            let delay_us = match db.one("max_queue_delay_microseconds")? {
                Some(v) => int(v, "dynamic_batching.max_queue_delay_microseconds")?,
                None => 0,
            };
            settings.max_batch_size = Some(max_batch_size);
            settings.max_batch_time = Some(delay_us as f64 / 1e6);
        }
        // Triton runs each request alone unless dynamic batching is configured.
        None => settings.max_batch_size = Some(1),
    }
    let mut instances = None;
    for group in config.all("instance_group") {
        let group = message(group, "instance_group")?;
        known_fields(group, "instance_group.", INSTANCE_GROUP_FIELDS)?;
        let count = match group.one("count")? {
            Some(v) => int(v, "instance_group.count")?,
            None => 1,
        };
        instances = Some(instances.unwrap_or(0) + count);
    }
    settings.parallel_workers = instances.filter(|&n| n > 0);
    if let Some(policy) = config.one("version_policy")? {
        let version = pinned_version(message(policy, "version_policy")?)?;
        settings.parameters = version.map(|v| SettingsParameters {
            version: Some(v.to_string()),
        });
    }
    Ok(settings)
}

fn pinned_version(policy: &Message) -> Result<Option<u64>, String> {
    let [(kind, body)] = policy.fields.as_slice() else {
        return Err("version_policy must hold exactly one of latest, specific or all".into());
    };
    let body = message(body, &format!("version_policy.{kind}"))?;
    match kind.as_str() {
        "latest" => {
            known_fields(body, "version_policy.latest.", &["num_versions"])?;
            match body.one("num_versions")? {
                None => Ok(None),
                Some(v) if int(v, "version_policy.latest.num_versions")? == 1 => Ok(None),
                Some(_) => Err(
                    "version_policy.latest.num_versions: skiff serves one version per model; use 1"
                        .into(),
                ),
            }
        }
        "specific" => {
            known_fields(body, "version_policy.specific.", &["versions"])?;
            let versions: Vec<&Value> = body.all("versions").collect();
            match versions.as_slice() {
                [v] => Ok(Some(int(v, "version_policy.specific.versions")? as u64)),
                _ => Err(format!(
                    "version_policy.specific.versions: skiff serves one version per model; {} given",
                    versions.len()
                )),
            }
        }
        "all" => Err(
            "version_policy all: skiff serves one version per model; use latest or specific".into(),
        ),
        other => Err(format!(
            "version_policy: unknown policy {other:?}; expected latest, specific or all"
        )),
    }
}

fn known_fields(m: &Message, prefix: &str, known: &[&str]) -> Result<(), String> {
    match m.fields.iter().find(|(n, _)| !known.contains(&n.as_str())) {
        None => Ok(()),
        Some((name, _)) => Err(format!(
            "unknown field {prefix}{name}; expected one of {}",
            known.join(", ")
        )),
    }
}

fn message<'a>(v: &'a Value, field: &str) -> Result<&'a Message, String> {
    match v {
        Value::Message(m) => Ok(m),
        other => Err(format!(
            "{field}: expected a message {{ ... }}, found {}",
            other.describe()
        )),
    }
}

fn int(v: &Value, field: &str) -> Result<usize, String> {
    match v {
        Value::Word(w) => w
            .parse::<usize>()
            .map_err(|_| format!("{field}: expected a non-negative integer, found {w}")),
        other => Err(format!(
            "{field}: expected a non-negative integer, found {}",
            other.describe()
        )),
    }
}

fn string(v: Option<&Value>, field: &str) -> Result<Option<String>, String> {
    match v {
        None => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!(
            "{field}: expected a quoted string, found {}",
            other.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_triton_fields() {
        let s = settings_from_pbtxt(
            r#"
            name: "iris"
            platform: "onnxruntime_onnx"
            max_batch_size: 16
            input [{ name: "X", data_type: TYPE_FP32, dims: [4] }]
            output [{ name: "label", data_type: TYPE_INT64, dims: [1] }]
            dynamic_batching { max_queue_delay_microseconds: 250 preferred_batch_size: [8] }
            instance_group [{ count: 2, kind: KIND_CPU }, { kind: KIND_CPU }]
            version_policy { specific { versions: [3] } }
            "#,
        )
        .unwrap();
        assert_eq!(s.name.as_deref(), Some("iris"));
        assert_eq!(s.platform.as_deref(), Some("onnxruntime_onnx"));
        assert_eq!(s.max_batch_size, Some(16));
        assert_eq!(s.max_batch_time, Some(0.00025));
        assert_eq!(s.parallel_workers, Some(3));
        assert_eq!(s.parameters.and_then(|p| p.version).as_deref(), Some("3"));
        // No dynamic_batching: one request at a time, as in Triton; latest version.
        let s = settings_from_pbtxt(
            "max_batch_size: 8 version_policy: { latest: { num_versions: 1 } }",
        )
        .unwrap();
        assert_eq!(s.max_batch_size, Some(1));
        assert_eq!(s.parameters, None);
        assert_eq!(s.parallel_workers, None);
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (text, want) in [
            ("max_batch_sise: 8", "unknown field max_batch_sise"),
            (
                "dynamic_batching { max_queue_delay: 5 }",
                "unknown field dynamic_batching.max_queue_delay",
            ),
            ("dynamic_batching { }", "needs max_batch_size > 0"),
            (
                "instance_group [{ cuont: 2 }]",
                "unknown field instance_group.cuont",
            ),
            (
                "max_batch_size: -1",
                "max_batch_size: expected a non-negative integer, found -1",
            ),
            (
                "max_batch_size: \"8\"",
                "expected a non-negative integer, found \"8\"",
            ),
            ("name: iris", "name: expected a quoted string"),
            ("version_policy { all { } }", "version_policy all"),
            (
                "version_policy { specific { versions: [1, 2] } }",
                "2 given",
            ),
            (
                "version_policy { latest { num_versions: 2 } }",
                "one version per model",
            ),
            ("version_policy { }", "exactly one of"),
            ("name: \"a\" name: \"b\"", "more than once"),
            ("name: \"a", "line 1 column 9"),
        ] {
            let e = settings_from_pbtxt(text).unwrap_err();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
