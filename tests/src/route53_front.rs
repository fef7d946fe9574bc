//! Route53's refusals that moto does not make, in front of moto.
//!
//! Route53 applies a ChangeResourceRecordSets batch all or nothing, and
//! refuses one that CREATEs a record set that exists already or DELETEs one
//! that is not there exactly as given (same TTL, values, weight, alias).
//! moto accepts both: a second CREATE of the same name and type adds a
//! second record set beside the first. switchyard's deployment lease relies
//! on that refusal (a TXT record created with CREATE), so the tests check it
//! behind this front, which the fault proxy puts before every Route53
//! change: batches are checked one at a time against what moto holds (read
//! with ListResourceRecordSets), refused with `InvalidChangeBatch` as
//! Route53 words it, and forwarded only when they would succeed on Route53.

use std::collections::BTreeMap;

/// One record set as far as the refusals care: what a DELETE must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSet {
    /// Name, type and set identifier: what makes it one record set.
    pub key: (String, String, String),
    /// TTL, absent for an alias.
    pub ttl: Option<String>,
    /// The values, in order.
    pub values: Vec<String>,
    /// The weight of a weighted record.
    pub weight: Option<String>,
    /// The alias target's DNS name.
    pub alias: Option<String>,
}

/// A change of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `CREATE`, `DELETE` or `UPSERT`.
    pub action: String,
    /// The record set it names.
    pub set: RecordSet,
}

/// The inner texts of every `<tag>...</tag>` in `xml`, in order (tags of
/// that name are not nested in Route53's documents).
fn elements<'a>(xml: &'a str, tag: &str) -> Vec<&'a str> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

fn element(xml: &str, tag: &str) -> Option<String> {
    elements(xml, tag).first().map(|t| unescape(t))
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A record name as Route53 compares it: lower case, a trailing dot, `\052` as `*`.
fn normalize(name: &str) -> String {
    let mut name = name.replace("\\052", "*").to_ascii_lowercase();
    if !name.ends_with('.') {
        name.push('.');
    }
    name
}

/// A `<ResourceRecordSet>` element's content as a record set.
fn record_set(xml: &str) -> RecordSet {
    let records = elements(xml, "ResourceRecords")
        .first()
        .copied()
        .unwrap_or("");
    let alias = elements(xml, "AliasTarget")
        .first()
        .and_then(|a| element(a, "DNSName"))
        .map(|n| normalize(&n));
    RecordSet {
        key: (
            normalize(&element(xml, "Name").unwrap_or_default()),
            element(xml, "Type").unwrap_or_default(),
            element(xml, "SetIdentifier").unwrap_or_default(),
        ),
        ttl: element(xml, "TTL"),
        values: elements(records, "Value")
            .into_iter()
            .map(unescape)
            .collect(),
        weight: element(xml, "Weight"),
        alias,
    }
}

/// The changes of a ChangeResourceRecordSets request body, in order.
pub fn changes(body: &str) -> Vec<Change> {
    elements(body, "Change")
        .into_iter()
        .map(|c| Change {
            action: element(c, "Action").unwrap_or_default(),
            set: record_set(
                elements(c, "ResourceRecordSet")
                    .first()
                    .copied()
                    .unwrap_or(""),
            ),
        })
        .collect()
}

/// The record sets of a ListResourceRecordSets answer, and where the next
/// page starts (`name`, `type`, `identifier` query values) when it is truncated.
pub fn listing(body: &str) -> (Vec<RecordSet>, Option<Vec<(String, String)>>) {
    let sets = elements(body, "ResourceRecordSet")
        .into_iter()
        .map(record_set)
        .collect();
    let next = (element(body, "IsTruncated").as_deref() == Some("true")).then(|| {
        [
            ("name", "NextRecordName"),
            ("type", "NextRecordType"),
            ("identifier", "NextRecordIdentifier"),
        ]
        .into_iter()
        .filter_map(|(query, tag)| element(body, tag).map(|v| (query.to_owned(), v)))
        .collect()
    });
    (sets, next)
}

/// Why Route53 would refuse `changes` applied to `current`, in its words
/// (`[message, ...]`); `None` when it would apply them.
pub fn refusal(current: &[RecordSet], changes: &[Change]) -> Option<String> {
    let mut sets: BTreeMap<(String, String, String), RecordSet> =
        current.iter().map(|s| (s.key.clone(), s.clone())).collect();
    let mut messages = Vec::new();
    for change in changes {
        let (name, rtype, _) = &change.set.key;
        let what = format!("resource record set [name='{name}', type='{rtype}']");
        match change.action.as_str() {
            "CREATE" if sets.contains_key(&change.set.key) => {
                messages.push(format!("Tried to create {what} but it already exists"));
            }
            "DELETE" => match sets.get(&change.set.key) {
                None => messages.push(format!("Tried to delete {what} but it was not found")),
                Some(held) if *held != change.set => messages.push(format!(
                    "Tried to delete {what} but the values provided do not match the current values"
                )),
                Some(_) => {
                    sets.remove(&change.set.key);
                }
            },
            _ => {
                sets.insert(change.set.key.clone(), change.set.clone());
            }
        }
    }
    (!messages.is_empty()).then(|| format!("[{}]", messages.join(", ")))
}

/// The hosted zone id of a `/2013-04-01/hostedzone/{id}/rrset` path.
pub fn zone_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/').filter(|p| !p.is_empty());
    parts.find(|p| *p == "hostedzone")?;
    parts.next()
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn batch(changes: &[(&str, &str, &str)]) -> String {
        let mut body = String::from("<ChangeResourceRecordSetsRequest><ChangeBatch><Changes>");
        for (action, name, value) in changes {
            let _ = write!(
                body,
                "<Change><Action>{action}</Action><ResourceRecordSet><Name>{name}</Name><Type>TXT</Type><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>&quot;{value}&quot;</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change>"
            );
        }
        body.push_str("</Changes></ChangeBatch></ChangeResourceRecordSetsRequest>");
        body
    }

    #[test]
    fn create_of_an_existing_set_and_delete_of_a_changed_one_are_refused() {
        let held = changes(&batch(&[("CREATE", "_lock.app.example.com", "a")]));
        let current = vec![held[0].set.clone()];
        assert_eq!(
            refusal(&current, &held).as_deref(),
            Some("[Tried to create resource record set [name='_lock.app.example.com.', type='TXT'] but it already exists]")
        );
        assert_eq!(refusal(&[], &held), None);
        let stale = changes(&batch(&[
            ("DELETE", "_lock.app.example.com.", "b"),
            ("CREATE", "_lock.app.example.com.", "c"),
        ]));
        assert!(refusal(&current, &stale)
            .unwrap()
            .contains("do not match the current values"));
        let takeover = changes(&batch(&[
            ("DELETE", "_LOCK.app.example.com.", "a"),
            ("CREATE", "_lock.app.example.com.", "c"),
        ]));
        assert_eq!(
            refusal(&current, &takeover),
            None,
            "one batch, all or nothing"
        );
        let gone = changes(&batch(&[("DELETE", "_lock.app.example.com.", "a")]));
        assert!(refusal(&[], &gone)
            .unwrap()
            .contains("but it was not found"));
        assert_eq!(zone_of("/2013-04-01/hostedzone/Z123/rrset/"), Some("Z123"));
    }

    #[test]
    fn a_listing_names_its_next_page() {
        let body = "<ListResourceRecordSetsResponse><ResourceRecordSets><ResourceRecordSet><Name>a.example.com.</Name><Type>A</Type><SetIdentifier>blue</SetIdentifier><Weight>100</Weight><TTL>60</TTL><ResourceRecords><ResourceRecord><Value>10.0.0.1</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></ResourceRecordSets><IsTruncated>true</IsTruncated><NextRecordName>b.example.com.</NextRecordName><NextRecordType>A</NextRecordType></ListResourceRecordSetsResponse>";
        let (sets, next) = listing(body);
        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].weight.as_deref(), Some("100"));
        assert_eq!(
            next,
            Some(vec![
                ("name".to_owned(), "b.example.com.".to_owned()),
                ("type".to_owned(), "A".to_owned())
            ])
        );
    }
}
