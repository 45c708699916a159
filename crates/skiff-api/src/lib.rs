//! Kubernetes API semantics without IO: the resource registry, defaulting, validation,
//! patching, field schemas, OpenAPI documents, Table output and Status errors.

pub mod cron;
pub mod defaults;
pub mod error;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod quantity;
pub mod registry;
pub mod schema;
pub mod table;
pub mod validation;

pub use error::{ApiError, FieldError, FieldErrorKind};
pub use registry::ResourceDef;

/// The Kubernetes version skiff's API corresponds to (`/version`).
pub const KUBE_MAJOR: &str = "1";
pub const KUBE_MINOR: &str = "33";
pub const KUBE_GIT_VERSION: &str = "v1.33.0+skiff";
