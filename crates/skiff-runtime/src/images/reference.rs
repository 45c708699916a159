//! Docker-style image reference parsing and normalisation (`ml-api:v1` == `docker.io/library/ml-api:v1`).

use std::fmt;

use super::ImageError;

/// Registry used when a reference names none, as Docker does.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// Tag used when a reference names neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";

/// A fully normalised image reference: `domain/path[:tag][@digest]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    pub domain: String,
    pub path: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Reference {
    /// Parses and normalises a reference the way `docker pull` does.
    pub fn parse(input: &str) -> Result<Self, ImageError> {
        let bad = |reason: &str| ImageError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() || input.len() > 4096 {
            return Err(bad("empty or too long"));
        }
        let (name, digest) = match input.split_once('@') {
            Some((n, d)) => {
                let parsed: oci_spec::image::Digest =
                    d.parse().map_err(|_| bad("malformed digest"))?;
                (n, Some(parsed.to_string()))
            }
            None => (input, None),
        };
        let last_slash = name.rfind('/');
        let (name, tag) = match name.rfind(':') {
            Some(colon) if last_slash.is_none_or(|s| colon > s) => {
                (&name[..colon], Some(name[colon + 1..].to_string()))
            }
            _ => (name, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad("malformed tag"));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        let domain = if domain == "index.docker.io" {
            DEFAULT_DOMAIN.to_string()
        } else {
            domain
        };
        if domain.is_empty()
            || !domain
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_'))
        {
            return Err(bad("malformed registry host"));
        }
        let path = if domain == DEFAULT_DOMAIN && !path.contains('/') {
            format!("library/{path}")
        } else {
            path
        };
        if path.is_empty() || !path.split('/').all(valid_path_component) {
            return Err(bad(
                "repository must be lowercase letters, digits and separators (. _ -)",
            ));
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some(DEFAULT_TAG.to_string()),
            _ => tag,
        };
        Ok(Reference {
            domain,
            path,
            tag,
            digest,
        })
    }

    /// `domain/path`, the REPOSITORY column of `images ls`.
    pub fn repository(&self) -> String {
        format!("{}/{}", self.domain, self.path)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.domain, self.path)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn valid_tag(t: &str) -> bool {
    let mut chars = t.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    t.len() <= 128 && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_path_component(c: &str) -> bool {
    let starts_ends_alnum = c
        .chars()
        .next()
        .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        && c.chars()
            .last()
            .is_some_and(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit());
    starts_ends_alnum
        && c.chars().all(|ch| {
            ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).expect(s).to_string()
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(norm("ml-api:v1"), "docker.io/library/ml-api:v1");
        assert_eq!(
            norm("docker.io/library/ml-api:v1"),
            "docker.io/library/ml-api:v1"
        );
        assert_eq!(norm("ml-api"), "docker.io/library/ml-api:latest");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(norm("index.docker.io/user/app:1"), "docker.io/user/app:1");
        assert_eq!(norm("localhost:5000/app"), "localhost:5000/app:latest");
        assert_eq!(norm("ghcr.io/a/b/c:1.2"), "ghcr.io/a/b/c:1.2");
        let d = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            norm(&format!("app@{d}")),
            format!("docker.io/library/app@{d}")
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "App:v1",
            "app:",
            "app:-x",
            "app@sha256:zz",
            "/app",
            "app//x",
            "a b",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
