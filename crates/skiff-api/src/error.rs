//! API errors and their one conversion into a Kubernetes `Status` object.

use serde_json::{Value, json};

/// The kind of a field validation failure, with Kubernetes' wording and cause type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    NotSupported,
    Duplicate,
    Forbidden,
    TooLong,
    NotFound,
    /// A field that the schema does not know (strict field validation).
    Unknown,
}

impl FieldErrorKind {
    /// The `details.causes[].reason` Kubernetes uses.
    pub fn cause_type(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid => "FieldValueInvalid",
            FieldErrorKind::NotSupported => "FieldValueNotSupported",
            FieldErrorKind::Duplicate => "FieldValueDuplicate",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
            FieldErrorKind::TooLong => "FieldValueTooLong",
            FieldErrorKind::NotFound => "FieldValueNotFound",
            FieldErrorKind::Unknown => "FieldValueInvalid",
        }
    }
}

/// One bad field, named by its path (`spec.template.spec.containers[0].image`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub kind: FieldErrorKind,
    pub path: String,
    /// The offending value, rendered for the message (None when there is none, e.g. Required).
    pub value: Option<String>,
    pub detail: String,
}

impl FieldError {
    pub fn required(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Required,
            path: path.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn invalid(
        path: impl Into<String>,
        value: impl std::fmt::Display,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            path: path.into(),
            value: Some(value.to_string()),
            detail: detail.into(),
        }
    }
    pub fn not_supported(
        path: impl Into<String>,
        value: impl std::fmt::Display,
        supported: &[&str],
    ) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
        FieldError {
            kind: FieldErrorKind::NotSupported,
            path: path.into(),
            value: Some(value.to_string()),
            detail: format!("supported values: {}", list.join(", ")),
        }
    }
    pub fn duplicate(path: impl Into<String>, value: impl std::fmt::Display) -> Self {
        FieldError {
            kind: FieldErrorKind::Duplicate,
            path: path.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    pub fn forbidden(path: impl Into<String>, detail: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Forbidden,
            path: path.into(),
            value: None,
            detail: detail.into(),
        }
    }
    pub fn too_long(path: impl Into<String>, max: usize) -> Self {
        FieldError {
            kind: FieldErrorKind::TooLong,
            path: path.into(),
            value: None,
            detail: format!("must have at most {max} bytes"),
        }
    }
    /// A reference to something that does not exist (`volumeMounts[0].name: Not found: "data"`).
    pub fn not_found(path: impl Into<String>, value: impl std::fmt::Display) -> Self {
        FieldError {
            kind: FieldErrorKind::NotFound,
            path: path.into(),
            value: Some(value.to_string()),
            detail: String::new(),
        }
    }
    /// A list longer than allowed; Kubernetes' TooMany, reported as an invalid value.
    pub fn too_many(path: impl Into<String>, actual: usize, max: usize) -> Self {
        FieldError {
            kind: FieldErrorKind::Invalid,
            path: path.into(),
            value: Some(actual.to_string()),
            detail: format!("must have at most {max} items"),
        }
    }
    pub fn unknown(path: impl Into<String>) -> Self {
        FieldError {
            kind: FieldErrorKind::Unknown,
            path: path.into(),
            value: None,
            detail: String::new(),
        }
    }

    /// The message Kubernetes prints for this error, e.g.
    /// `spec.template.spec.containers[0].image: Required value`.
    pub fn message(&self) -> String {
        let head = match self.kind {
            FieldErrorKind::Required => "Required value".to_string(),
            FieldErrorKind::Invalid => {
                format!("Invalid value: {}", self.value.as_deref().unwrap_or("null"))
            }
            FieldErrorKind::NotSupported => format!(
                "Unsupported value: {}",
                self.value.as_deref().unwrap_or("null")
            ),
            FieldErrorKind::Duplicate => format!(
                "Duplicate value: {}",
                self.value.as_deref().unwrap_or("null")
            ),
            FieldErrorKind::Forbidden => "Forbidden".to_string(),
            FieldErrorKind::TooLong => "Too long".to_string(),
            FieldErrorKind::NotFound => {
                format!("Not found: {}", self.value.as_deref().unwrap_or("null"))
            }
            FieldErrorKind::Unknown => return format!("unknown field \"{}\"", self.path),
        };
        if self.detail.is_empty() {
            format!("{}: {}", self.path, head)
        } else {
            format!("{}: {}: {}", self.path, head, self.detail)
        }
    }
}

/// Every error the API can return to a client; `status()` is the one place
/// that turns it into a Kubernetes `Status`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    BadRequest { message: String },
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{message}")]
    Forbidden { message: String },
    #[error("{} \"{name}\" not found", qualified(.group, .resource))]
    NotFound {
        group: String,
        resource: String,
        name: String,
    },
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{} \"{name}\" already exists", qualified(.group, .resource))]
    AlreadyExists {
        group: String,
        resource: String,
        name: String,
    },
    #[error("{message}")]
    Conflict {
        group: String,
        resource: String,
        name: String,
        message: String,
    },
    #[error("{kind} \"{name}\" is invalid: {}", join_causes(causes))]
    Invalid {
        group: String,
        kind: String,
        name: String,
        causes: Vec<FieldError>,
    },
    #[error("{message}")]
    Gone { message: String },
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("{message}")]
    UnsupportedMediaType { message: String },
    #[error("{message}")]
    NotAcceptable { message: String },
    #[error("the body of the request was too large")]
    RequestEntityTooLarge,
    #[error("{message}")]
    UnprocessableEntity { message: String },
    #[error("Internal error occurred: {message}")]
    Internal { message: String },
    #[error("{message}")]
    ServiceUnavailable { message: String },
    /// The request could not be served in time (e.g. a watch from a revision the store has
    /// not reached: `ResourceVersionTooLarge`).
    #[error("{message}")]
    Timeout { message: String },
}

fn join_causes(causes: &[FieldError]) -> String {
    let msgs: Vec<String> = causes.iter().map(FieldError::message).collect();
    if msgs.len() == 1 {
        msgs[0].clone()
    } else {
        format!("[{}]", msgs.join(", "))
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }
    pub fn internal(message: impl std::fmt::Display) -> Self {
        ApiError::Internal {
            message: message.to_string(),
        }
    }
    pub fn not_found(group: &str, resource: &str, name: &str) -> Self {
        ApiError::NotFound {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }
    pub fn already_exists(group: &str, resource: &str, name: &str) -> Self {
        ApiError::AlreadyExists {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
        }
    }
    /// The optimistic-concurrency conflict, worded like Kubernetes.
    pub fn conflict(group: &str, resource: &str, name: &str) -> Self {
        let qualified = qualified(group, resource);
        ApiError::Conflict {
            group: group.into(),
            resource: resource.into(),
            name: name.into(),
            message: format!(
                "Operation cannot be fulfilled on {qualified} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
            ),
        }
    }
    pub fn invalid(group: &str, kind: &str, name: &str, causes: Vec<FieldError>) -> Self {
        ApiError::Invalid {
            group: group.into(),
            kind: kind.into(),
            name: name.into(),
            causes,
        }
    }

    /// HTTP status code.
    pub fn code(&self) -> u16 {
        match self {
            ApiError::BadRequest { .. } => 400,
            ApiError::Unauthorized => 401,
            ApiError::Forbidden { .. } => 403,
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::MethodNotAllowed => 405,
            ApiError::NotAcceptable { .. } => 406,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Gone { .. } => 410,
            ApiError::RequestEntityTooLarge => 413,
            ApiError::UnsupportedMediaType { .. } => 415,
            ApiError::Invalid { .. } | ApiError::UnprocessableEntity { .. } => 422,
            ApiError::Internal { .. } => 500,
            ApiError::ServiceUnavailable { .. } => 503,
            ApiError::Timeout { .. } => 504,
        }
    }

    /// `Status.reason`.
    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "BadRequest",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable { .. } => "NotAcceptable",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Gone { .. } => "Expired",
            ApiError::RequestEntityTooLarge => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::Invalid { .. } | ApiError::UnprocessableEntity { .. } => "Invalid",
            ApiError::Internal { .. } => "InternalError",
            ApiError::ServiceUnavailable { .. } => "ServiceUnavailable",
            ApiError::Timeout { .. } => "Timeout",
        }
    }

    /// The Kubernetes `Status` object for this error.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound {
                group,
                resource,
                name,
            }
            | ApiError::AlreadyExists {
                group,
                resource,
                name,
            }
            | ApiError::Conflict {
                group,
                resource,
                name,
                ..
            } => {
                let mut d = json!({ "name": name, "kind": resource });
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            ApiError::Invalid {
                group,
                kind,
                name,
                causes,
            } => {
                let causes: Vec<Value> = causes
                    .iter()
                    .map(|c| {
                        let message = match c.kind {
                            FieldErrorKind::Unknown => format!("unknown field \"{}\"", c.path),
                            _ => c.message().trim_start_matches(&format!("{}: ", c.path)).to_string(),
                        };
                        json!({ "reason": c.kind.cause_type(), "message": message, "field": c.path })
                    })
                    .collect();
                let mut d = json!({ "name": name, "kind": kind, "causes": causes });
                if !group.is_empty() {
                    d["group"] = json!(group);
                }
                Some(d)
            }
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        status
    }
}

fn qualified(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// A success `Status` (as returned by some deletes).
pub fn success_status(details: Option<Value>) -> Value {
    let mut s =
        json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success" });
    if let Some(d) = details {
        s["details"] = d;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_names_every_field() {
        let e = ApiError::invalid(
            "apps",
            "Deployment",
            "web",
            vec![
                FieldError::required("spec.template.spec.containers[0].image", ""),
                FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0"),
            ],
        );
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["reason"], "Invalid");
        assert_eq!(
            s["details"]["causes"][0]["field"],
            "spec.template.spec.containers[0].image"
        );
        assert_eq!(
            s["message"],
            "Deployment \"web\" is invalid: [spec.template.spec.containers[0].image: Required value, spec.replicas: Invalid value: -1: must be greater than or equal to 0]"
        );
    }

    #[test]
    fn not_found_message() {
        let s = ApiError::not_found("apps", "deployments", "x").status();
        assert_eq!(s["message"], "deployments.apps \"x\" not found");
        assert_eq!(s["code"], 404);
    }
}
