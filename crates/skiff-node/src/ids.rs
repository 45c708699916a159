//! Runtime container ids that encode their pod: `<pod uid>_<container name>_<restart count>`,
//! so a restarted agent can tell which pod every container belongs to.

/// A parsed container id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerKey {
    pub pod_uid: String,
    pub container: String,
    pub restart: u32,
}

/// The runtime id of instance `restart` of container `container` of pod `pod_uid`. Pod uids
/// and container names (DNS labels) never contain `_`, which keeps the id parseable.
pub fn container_id(pod_uid: &str, container: &str, restart: u32) -> String {
    format!("{pod_uid}_{container}_{restart}")
}

/// The inverse of [`container_id`]; `None` for ids the agent did not make.
pub fn parse_container_id(id: &str) -> Option<ContainerKey> {
    let mut parts = id.split('_');
    let (uid, name, restart) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || uid.is_empty() || name.is_empty() {
        return None;
    }
    Some(ContainerKey {
        pod_uid: uid.to_string(),
        container: name.to_string(),
        restart: restart.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id = container_id("6f1c-22", "web", 3);
        assert_eq!(id, "6f1c-22_web_3");
        assert_eq!(
            parse_container_id(&id),
            Some(ContainerKey {
                pod_uid: "6f1c-22".into(),
                container: "web".into(),
                restart: 3
            })
        );
    }

    #[test]
    fn rejects_foreign_ids() {
        assert_eq!(parse_container_id("abc"), None);
        assert_eq!(parse_container_id("a_b"), None);
        assert_eq!(parse_container_id("a_b_c"), None);
        assert_eq!(parse_container_id("a_b_1_2"), None);
        assert_eq!(parse_container_id("_b_1"), None);
    }
}
