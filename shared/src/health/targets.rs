//! Where to probe: a stack's endpoints from the state (`--stack green`, or a
//! role such as `--stack standby`), URLs given directly, or a file of them,
//! turned into URLs with the configured scheme, port and path.

use crate::state::{Role, Stack, StateDocument};

/// How a bare endpoint (`host`, `host:port`) becomes a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    /// `http` or `https`.
    pub scheme: String,
    /// Port when the endpoint names none.
    pub port: Option<u16>,
    /// Path when the endpoint names none.
    pub path: String,
}

impl Default for UrlTemplate {
    fn default() -> Self {
        Self {
            scheme: "http".into(),
            port: None,
            path: "/health".into(),
        }
    }
}

/// The URL to probe for `endpoint`. A full URL is kept, except that a bare
/// `/` path takes the template's path.
pub fn endpoint_url(endpoint: &str, t: &UrlTemplate) -> Result<String, String> {
    let endpoint = endpoint.trim();
    let path = if t.path.starts_with('/') {
        t.path.clone()
    } else {
        format!("/{}", t.path)
    };
    let text = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("{}://{endpoint}", t.scheme)
    };
    let mut url = reqwest::Url::parse(&text)
        .map_err(|e| format!("endpoint {endpoint:?} is not a host, host:port or URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("endpoint {endpoint:?} is not an http(s) URL"));
    }
    if !endpoint.contains("://") {
        if url.port().is_none() {
            if let Some(p) = t.port {
                url.set_port(Some(p))
                    .map_err(|()| format!("cannot set port {p} on {endpoint:?}"))?;
            }
        }
        url.set_path(&path);
    } else if url.path() == "/" && !endpoint.ends_with('/') {
        url.set_path(&path);
    }
    Ok(url.to_string())
}

/// The stack named `name`, or holding the role `active`/`standby`, and its name.
pub fn find_stack(doc: &StateDocument, name: &str) -> Result<(String, Stack), String> {
    let role = match name {
        "active" => Some(Role::Active),
        "standby" => Some(Role::Standby),
        _ => None,
    };
    let (found, stack) = match role {
        Some(role) if !doc.stacks.contains_key(name) => {
            let matching: Vec<_> = doc
                .stacks
                .iter()
                .filter(|(_, s)| s.role == Some(role))
                .collect();
            match matching.as_slice() {
                [(n, s)] => ((*n).clone(), (*s).clone()),
                [] => return Err(format!("no stack in the state file is {name}")),
                many => {
                    let names: Vec<&str> = many.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(format!(
                        "several stacks are {name} ({}); name one with --stack",
                        names.join(", ")
                    ));
                }
            }
        }
        _ => {
            let stack = doc.stacks.get(name).ok_or_else(|| {
                let known: Vec<&str> = doc.stacks.keys().map(String::as_str).collect();
                format!(
                    "no stack {name:?} in the state file (stacks: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            })?;
            (name.to_owned(), stack.clone())
        }
    };
    Ok((found, stack))
}

/// The endpoints of stack `name` (a stack's name, or `active`/`standby`).
pub fn stack_endpoints(doc: &StateDocument, name: &str) -> Result<(String, Vec<String>), String> {
    let (found, stack) = find_stack(doc, name)?;
    if stack.endpoints.is_empty() {
        return Err(format!(
            "stack {found} has no endpoints in the state file; give --url or --urls-file"
        ));
    }
    Ok((found, stack.endpoints))
}

/// Reads a file of URLs or endpoints, one per line; blank lines and `#` comments are skipped.
pub fn read_urls_file(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --urls-file {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_urls() {
        let t = UrlTemplate {
            scheme: "https".into(),
            port: Some(8443),
            path: "healthz".into(),
        };
        assert_eq!(
            endpoint_url("10.0.0.1", &t).unwrap(),
            "https://10.0.0.1:8443/healthz"
        );
        assert_eq!(
            endpoint_url("10.0.0.1:9000", &t).unwrap(),
            "https://10.0.0.1:9000/healthz"
        );
        assert_eq!(
            endpoint_url("http://lb.example.com", &t).unwrap(),
            "http://lb.example.com/healthz"
        );
        assert_eq!(
            endpoint_url("http://lb.example.com/", &t).unwrap(),
            "http://lb.example.com/"
        );
        assert_eq!(
            endpoint_url("http://lb/ready?x=1", &t).unwrap(),
            "http://lb/ready?x=1"
        );
        assert!(endpoint_url("ftp://x", &t).is_err());
        assert!(endpoint_url("a b", &t).is_err());
    }

    #[test]
    fn stacks_by_name_or_role() {
        let mut doc = StateDocument::default();
        doc.stack_mut("green").endpoints = vec!["10.0.0.2:80".into()];
        doc.stack_mut("green").role = Some(Role::Standby);
        doc.stack_mut("blue").role = Some(Role::Active);
        assert_eq!(stack_endpoints(&doc, "standby").unwrap().0, "green");
        assert_eq!(
            stack_endpoints(&doc, "green").unwrap().1,
            vec!["10.0.0.2:80".to_owned()]
        );
        assert!(stack_endpoints(&doc, "active")
            .unwrap_err()
            .contains("no endpoints"));
        assert!(stack_endpoints(&doc, "red")
            .unwrap_err()
            .contains("stacks: blue, green"));
    }
}
