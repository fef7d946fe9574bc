//! A host's service and labels: parsed from `KEY=VALUE` flags and checked
//! before any change, and mapped to and from the EC2 tags that carry them
//! (see the [module documentation](super) for why the keys are namespaced).

use std::collections::BTreeMap;

use serde::Serialize;

use super::InputError;

/// The tag holding a host's service.
pub const SERVICE_TAG: &str = "switchyard:service";

/// The prefix of a label's tag: label `region=us-east-1` is tag `switchyard:label:region`.
pub const LABEL_TAG_PREFIX: &str = "switchyard:label:";

/// Longest label key (the tag key stays well under EC2's 128).
pub const MAX_KEY: usize = 63;

/// Longest label value or service name.
pub const MAX_VALUE: usize = 128;

/// Labels by key, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// Parses `--label KEY=VALUE` flags. Keys: a letter or digit, then
    /// letters, digits, `.`, `_`, `-` or `/`, at most 63. Values: letters,
    /// digits, `.`, `_`, `-`, `:`, `/`, `@` or `+`, at most 128. Each key once;
    /// `service` is not a label (it is `--service`).
    pub fn parse(items: &[String]) -> Result<Self, InputError> {
        let mut labels = BTreeMap::new();
        let mut given: BTreeMap<String, String> = BTreeMap::new();
        for item in items {
            let invalid = |why: &str| InputError::Invalid {
                flag: "--label",
                value: item.clone(),
                why: why.to_owned(),
            };
            let Some((key, value)) = item.split_once('=') else {
                return Err(invalid("is not KEY=VALUE; e.g. --label region=us-east-1"));
            };
            check_key(key).map_err(|why| invalid(&why))?;
            check_value(value).map_err(|why| invalid(&format!("has a value that {why}")))?;
            if key == "service" {
                return Err(invalid(
                    "names the service, which is given with --service, not as a label",
                ));
            }
            if let Some(first) = given.get(key) {
                return Err(InputError::DuplicateLabel {
                    key: key.to_owned(),
                    first: format!("--label {first}"),
                    second: format!("--label {item}"),
                });
            }
            given.insert(key.to_owned(), item.clone());
            labels.insert(key.to_owned(), value.to_owned());
        }
        Ok(Self(labels))
    }

    /// Sets label `key` to `value` unless it is given already (what the
    /// flags say wins) or `value` is no valid label value; says whether it did.
    pub fn fill(&mut self, key: &str, value: &str) -> bool {
        if self.0.contains_key(key) || check_value(value).is_err() {
            return false;
        }
        self.0.insert(key.to_owned(), value.to_owned());
        true
    }

    /// The label of that key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// Every label, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `k=v,k2=v2`, or `-` when there are none.
    pub fn display(&self) -> String {
        if self.0.is_empty() {
            return "-".to_owned();
        }
        self.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The labels with the service as label `service`, as the state document records them.
    pub fn with_service(&self, service: &str) -> BTreeMap<String, String> {
        let mut all = self.0.clone();
        all.insert("service".to_owned(), service.to_owned());
        all
    }

    /// The tags that carry `service` and these labels.
    pub fn to_tags(&self, service: &str) -> BTreeMap<String, String> {
        let mut tags = BTreeMap::new();
        tags.insert(SERVICE_TAG.to_owned(), service.to_owned());
        for (k, v) in self.iter() {
            tags.insert(format!("{LABEL_TAG_PREFIX}{k}"), v.to_owned());
        }
        tags
    }

    /// The service and labels in a resource's tags; other tags are ignored.
    pub fn from_tags(tags: &BTreeMap<String, String>) -> (Option<String>, Self) {
        let service = tags.get(SERVICE_TAG).cloned();
        let labels = tags
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(LABEL_TAG_PREFIX)
                    .filter(|key| !key.is_empty())
                    .map(|key| (key.to_owned(), v.clone()))
            })
            .collect();
        (service, Self(labels))
    }
}

impl FromIterator<(String, String)> for Labels {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// Checks a service name: the same characters as a label key, at most 128.
pub fn check_service(name: &str) -> Result<(), InputError> {
    let invalid = |why: &str| InputError::Invalid {
        flag: "--service",
        value: name.to_owned(),
        why: why.to_owned(),
    };
    if name.is_empty() {
        return Err(invalid(
            "is empty; name the service, e.g. --service go-auth",
        ));
    }
    if name.len() > MAX_VALUE {
        return Err(invalid(&format!("is longer than {MAX_VALUE} characters")));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(invalid("must start with a letter or digit"));
    }
    if let Some(c) = name.chars().find(|c| !is_key_char(*c)) {
        return Err(invalid(&format!(
            "holds {c:?}; use letters, digits, '.', '_', '-' or '/'"
        )));
    }
    Ok(())
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/')
}

fn is_value_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@' | '+')
}

fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("has an empty key; give KEY=VALUE".to_owned());
    }
    if key.len() > MAX_KEY {
        return Err(format!("has a key longer than {MAX_KEY} characters"));
    }
    if !key.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("has a key that does not start with a letter or digit".to_owned());
    }
    if let Some(c) = key.chars().find(|c| !is_key_char(*c)) {
        return Err(format!(
            "has {c:?} in its key; keys take letters, digits, '.', '_', '-' and '/'"
        ));
    }
    Ok(())
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty; give KEY=VALUE".to_owned());
    }
    if value.len() > MAX_VALUE {
        return Err(format!("is longer than {MAX_VALUE} characters"));
    }
    if let Some(c) = value.chars().find(|c| !is_value_char(*c)) {
        return Err(format!(
            "holds {c:?}; values take letters, digits, '.', '_', '-', ':', '/', '@' and '+'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(items: &[&str]) -> Result<Labels, String> {
        let items: Vec<String> = items.iter().map(|s| (*s).to_owned()).collect();
        Labels::parse(&items).map_err(|e| e.to_string())
    }

    #[test]
    fn good_labels_parse_in_key_order() {
        let labels = parse(&["region=us-east-1", "provider=aws", "az=us-east-1a"]).unwrap();
        assert_eq!(
            labels.display(),
            "az=us-east-1a,provider=aws,region=us-east-1"
        );
        assert_eq!(labels.get("region"), Some("us-east-1"));
        let mut filled = labels.clone();
        assert!(!filled.fill("region", "us-central1"), "the flags win");
        assert!(!filled.fill("zone", "a b"), "not a label value");
        assert!(filled.fill("zone", "us-central1-a"));
        assert_eq!(filled.get("region"), Some("us-east-1"));
        assert_eq!(filled.get("zone"), Some("us-central1-a"));
        assert_eq!(parse(&[]).unwrap().display(), "-");
        assert!(parse(&["team/owner=auth@example.com", "v=1.2.3+build:7"]).is_ok());
    }

    #[test]
    fn bad_labels_name_the_problem() {
        assert_eq!(
            parse(&["region"]).unwrap_err(),
            "--label \"region\" is not KEY=VALUE; e.g. --label region=us-east-1"
        );
        assert_eq!(
            parse(&["=x"]).unwrap_err(),
            "--label \"=x\" has an empty key; give KEY=VALUE"
        );
        assert_eq!(
            parse(&["region="]).unwrap_err(),
            "--label \"region=\" has a value that is empty; give KEY=VALUE"
        );
        assert_eq!(
            parse(&["re gion=x"]).unwrap_err(),
            "--label \"re gion=x\" has ' ' in its key; keys take letters, digits, '.', '_', '-' and '/'"
        );
        assert_eq!(
            parse(&["region=us*"]).unwrap_err(),
            "--label \"region=us*\" has a value that holds '*'; values take letters, digits, '.', '_', '-', ':', '/', '@' and '+'"
        );
        assert_eq!(
            parse(&["region=a", "region=b"]).unwrap_err(),
            "label \"region\" is given twice (--label region=a and --label region=b); give each key once"
        );
        assert!(parse(&["service=x"])
            .unwrap_err()
            .contains("is given with --service"));
        assert!(parse(&["-x=1"]).unwrap_err().contains("does not start"));
        let long = format!("{}=1", "k".repeat(64));
        assert!(parse(&[long.as_str()])
            .unwrap_err()
            .contains("longer than 63"));
    }

    #[test]
    fn services_are_checked() {
        assert!(check_service("go-auth").is_ok());
        assert!(check_service("").is_err());
        assert!(check_service("go auth").is_err());
        assert!(check_service("_x").is_err());
    }

    #[test]
    fn tags_carry_service_and_labels_and_read_back() {
        let labels = parse(&["provider=aws", "region=us-east-1"]).unwrap();
        let tags = labels.to_tags("go-auth");
        assert_eq!(
            tags.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>(),
            [
                "switchyard:label:provider=aws",
                "switchyard:label:region=us-east-1",
                "switchyard:service=go-auth"
            ]
        );
        let mut with_others = tags.clone();
        with_others.insert("Name".into(), "web-1".into());
        with_others.insert("switchyard:label:".into(), "ignored".into());
        let (service, back) = Labels::from_tags(&with_others);
        assert_eq!(service.as_deref(), Some("go-auth"));
        assert_eq!(back, labels);
        assert_eq!(labels.with_service("go-auth").len(), 3);
    }
}
