//! Authentication (bearer tokens, client certificates) and the authorization seam.

use std::collections::HashMap;
use std::sync::Arc;

/// Who is making a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    pub fn new(name: &str, groups: &[&str]) -> Self {
        UserInfo {
            name: name.to_string(),
            uid: String::new(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// The group whose members may do everything (as in Kubernetes).
pub const SYSTEM_MASTERS: &str = "system:masters";

/// The identity of a TLS connection's verified client certificate, attached to every
/// request of that connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity(pub Option<UserInfo>);

/// Static bearer tokens (like kube-apiserver's `--token-auth-file`).
#[derive(Debug, Default, Clone)]
pub struct TokenAuthenticator {
    tokens: HashMap<String, UserInfo>,
}

impl TokenAuthenticator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, token: &str, user: UserInfo) {
        self.tokens.insert(token.to_string(), user);
    }

    /// Parses a token file: `token,user,uid,"group1,group2"` per line.
    pub fn parse(contents: &str) -> Self {
        let mut a = Self::new();
        for line in contents.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.splitn(4, ',');
            let (Some(token), Some(user)) = (parts.next(), parts.next()) else {
                continue;
            };
            let uid = parts.next().unwrap_or_default();
            let groups: Vec<String> = parts
                .next()
                .unwrap_or_default()
                .trim_matches('"')
                .split(',')
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect();
            a.tokens.insert(
                token.to_string(),
                UserInfo {
                    name: user.to_string(),
                    uid: uid.to_string(),
                    groups,
                },
            );
        }
        a
    }

    /// The user for a token; compares in constant time per candidate so that timing does not
    /// reveal token prefixes.
    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let mut found = None;
        for (t, u) in &self.tokens {
            if constant_time_eq(t.as_bytes(), token.as_bytes()) {
                found = Some(u.clone());
            }
        }
        found
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAttributes {
    pub verb: String,
    pub group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// For non-resource requests (`/version`, `/openapi/v3`).
    pub path: String,
    pub resource_request: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(String),
}

/// The authorization seam: RBAC plugs in here.
pub trait Authorizer: Send + Sync + 'static {
    fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision;
}

/// Allows members of `system:masters` everything, and every authenticated user the
/// read-only discovery endpoints; denies the rest. RBAC will replace this.
#[derive(Debug, Default)]
pub struct MastersOnly;

impl Authorizer for MastersOnly {
    fn authorize(&self, user: &UserInfo, attrs: &RequestAttributes) -> Decision {
        if user.groups.iter().any(|g| g == SYSTEM_MASTERS) {
            return Decision::Allow;
        }
        if !attrs.resource_request && attrs.verb == "get" {
            return Decision::Allow;
        }
        let what = if attrs.resource_request {
            let scope = if attrs.namespace.is_empty() {
                "at the cluster scope".to_string()
            } else {
                format!("in the namespace \"{}\"", attrs.namespace)
            };
            let resource = if attrs.subresource.is_empty() {
                attrs.resource.clone()
            } else {
                format!("{}/{}", attrs.resource, attrs.subresource)
            };
            format!(
                "cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
                attrs.verb, attrs.group
            )
        } else {
            format!("cannot {} path \"{}\"", attrs.verb, attrs.path)
        };
        Decision::Deny(format!("User \"{}\" {}", user.name, what))
    }
}

pub type SharedAuthorizer = Arc<dyn Authorizer>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_and_lookup() {
        let a = TokenAuthenticator::parse("# c\nabc,admin,1,\"system:masters,x\"\nxyz,bob,2\n");
        let admin = a.authenticate("abc").unwrap();
        assert_eq!(admin.groups, vec!["system:masters", "x"]);
        assert_eq!(a.authenticate("xyz").unwrap().name, "bob");
        assert!(a.authenticate("ab").is_none());
        assert!(a.authenticate("").is_none());
    }

    #[test]
    fn masters_only() {
        let attrs = RequestAttributes {
            verb: "create".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: String::new(),
            namespace: "default".into(),
            name: String::new(),
            path: String::new(),
            resource_request: true,
        };
        assert_eq!(
            MastersOnly.authorize(&UserInfo::new("a", &[SYSTEM_MASTERS]), &attrs),
            Decision::Allow
        );
        match MastersOnly.authorize(&UserInfo::new("bob", &[]), &attrs) {
            Decision::Deny(m) => assert_eq!(
                m,
                "User \"bob\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"default\""
            ),
            Decision::Allow => panic!("allowed"),
        }
    }
}
