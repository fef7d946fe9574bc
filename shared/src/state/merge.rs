//! Three-way merge of two writers' state documents, for a write that lost a
//! race: `base` is what this run read, `ours` what it wants to write, `theirs`
//! what another run wrote in between.
//!
//! The journal is append-only, so its merge is theirs followed by the entries
//! this run appended. Every other top-level section merges by its entries
//! (one stack, one route, one host, one verdict): an entry only one side
//! changed takes that side's value. An entry both sides changed differently is
//! a conflict, named in the error, and nothing is written: the caller stops
//! (exit 5) rather than guess which release is right.

use serde_json::{Map, Value};

/// The entries both writers changed differently, as `section` or `section.entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflicts(pub Vec<String>);

/// Merges `ours` and `theirs`, both derived from `base`.
pub fn merge(base: &Value, ours: &Value, theirs: &Value) -> Result<Value, Conflicts> {
    let empty = Map::new();
    let (b, o, t) = (
        base.as_object().unwrap_or(&empty),
        ours.as_object().unwrap_or(&empty),
        theirs.as_object().unwrap_or(&empty),
    );
    let mut merged = Map::new();
    let mut conflicts = Vec::new();
    for key in keys([t, o]) {
        let (bv, ov, tv) = (b.get(key), o.get(key), t.get(key));
        let value = if key == "journal" {
            let Some(v) = journal(bv, ov, tv) else {
                conflicts.push(key.to_owned());
                continue;
            };
            Some(v)
        } else if let Some(v) = pick(bv, ov, tv) {
            v.cloned()
        } else {
            match entries(key, bv, ov, tv) {
                Ok(v) => v,
                Err(names) => {
                    conflicts.extend(names);
                    continue;
                }
            }
        };
        if let Some(v) = value {
            merged.insert(key.to_owned(), v);
        }
    }
    if conflicts.is_empty() {
        Ok(Value::Object(merged))
    } else {
        Err(Conflicts(conflicts))
    }
}

/// The keys of both maps: theirs in their order, then ours that theirs lacks.
fn keys(maps: [&Map<String, Value>; 2]) -> Vec<&str> {
    let [t, o] = maps;
    let mut keys: Vec<&str> = t.keys().map(String::as_str).collect();
    keys.extend(o.keys().map(String::as_str).filter(|k| !t.contains_key(*k)));
    keys
}

/// The value when at most one side changed it (or both made the same change):
/// `Some(None)` for a removed entry. `None` when both changed it differently.
#[allow(clippy::option_option)]
fn pick<'a>(
    base: Option<&'a Value>,
    ours: Option<&'a Value>,
    theirs: Option<&'a Value>,
) -> Option<Option<&'a Value>> {
    if ours == base || ours == theirs {
        Some(theirs)
    } else if theirs == base {
        Some(ours)
    } else {
        None
    }
}

/// Merges one section entry by entry when it is a map on every side that has it.
fn entries(
    section: &str,
    base: Option<&Value>,
    ours: Option<&Value>,
    theirs: Option<&Value>,
) -> Result<Option<Value>, Vec<String>> {
    let empty = Map::new();
    let (Some(b), Some(o), Some(t)) = (
        as_map(base, &empty),
        as_map(ours, &empty),
        as_map(theirs, &empty),
    ) else {
        return Err(vec![section.to_owned()]);
    };
    let mut merged = Map::new();
    let mut conflicts = Vec::new();
    for key in keys([t, o]) {
        match pick(b.get(key), o.get(key), t.get(key)) {
            Some(Some(v)) => {
                merged.insert(key.to_owned(), v.clone());
            }
            Some(None) => {}
            None => conflicts.push(format!("{section}.{key}")),
        }
    }
    if conflicts.is_empty() {
        Ok(Some(Value::Object(merged)))
    } else {
        Err(conflicts)
    }
}

/// A map, or `empty` for a missing one; `None` when it is something else.
fn as_map<'a>(
    v: Option<&'a Value>,
    empty: &'a Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    match v {
        None | Some(Value::Null) => Some(empty),
        Some(Value::Object(m)) => Some(m),
        Some(_) => None,
    }
}

/// A list, or `empty` for a missing one; `None` when it is something else.
fn as_list<'a>(v: Option<&'a Value>, empty: &'a Vec<Value>) -> Option<&'a Vec<Value>> {
    match v {
        None | Some(Value::Null) => Some(empty),
        Some(Value::Array(a)) => Some(a),
        Some(_) => None,
    }
}

/// Theirs, then what ours appended to the base; `None` when ours is not the
/// base with entries appended (the journal is never rewritten, so that would
/// be a bug worth stopping for).
fn journal(base: Option<&Value>, ours: Option<&Value>, theirs: Option<&Value>) -> Option<Value> {
    let empty = Vec::new();
    let (b, o, t) = (
        as_list(base, &empty)?,
        as_list(ours, &empty)?,
        as_list(theirs, &empty)?,
    );
    if o.len() < b.len() || o[..b.len()] != b[..] {
        return None;
    }
    let mut merged = t.clone();
    merged.extend(o[b.len()..].iter().cloned());
    Some(Value::Array(merged))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn changes_to_different_entries_are_both_kept() {
        let base = json!({
            "schema": "switchyard/state/v1",
            "stacks": {"blue": {"role": "active"}},
            "health": {},
            "journal": [{"step": "a"}]
        });
        // This run verified green; the other run moved a route.
        let ours = json!({
            "schema": "switchyard/state/v1",
            "stacks": {"blue": {"role": "active"}},
            "health": {"green": {"verdict": "healthy"}},
            "journal": [{"step": "a"}, {"step": "verify-health"}]
        });
        let theirs = json!({
            "schema": "switchyard/state/v1",
            "stacks": {"blue": {"role": "active"}, "green": {"role": "standby"}},
            "health": {},
            "traffic": {"r": {"weights": {"blue": 100}}},
            "journal": [{"step": "a"}, {"step": "deploy-standby"}]
        });
        let merged = merge(&base, &ours, &theirs).unwrap();
        assert_eq!(
            merged,
            json!({
                "schema": "switchyard/state/v1",
                "stacks": {"blue": {"role": "active"}, "green": {"role": "standby"}},
                "health": {"green": {"verdict": "healthy"}},
                "traffic": {"r": {"weights": {"blue": 100}}},
                "journal": [{"step": "a"}, {"step": "deploy-standby"}, {"step": "verify-health"}]
            })
        );
    }

    #[test]
    fn the_same_entry_changed_two_ways_is_a_conflict_named_by_its_path() {
        let base =
            json!({"stacks": {"green": {"version": "1"}}, "image": {"id": "a"}, "journal": []});
        let ours =
            json!({"stacks": {"green": {"version": "2"}}, "image": {"id": "b"}, "journal": []});
        let theirs =
            json!({"stacks": {"green": {"version": "3"}}, "image": {"id": "c"}, "journal": []});
        assert_eq!(
            merge(&base, &ours, &theirs),
            Err(Conflicts(vec![
                "stacks.green".to_owned(),
                "image.id".to_owned()
            ]))
        );
    }

    #[test]
    fn the_same_change_on_both_sides_and_removals_merge() {
        let base = json!({"hosts": {"a": 1, "b": 2}, "stacks": {"x": 1}, "journal": []});
        let ours = json!({"hosts": {"a": 1}, "stacks": {"x": 2}, "journal": []});
        let theirs = json!({"hosts": {"a": 1, "b": 2, "c": 3}, "stacks": {"x": 2}, "journal": []});
        assert_eq!(
            merge(&base, &ours, &theirs).unwrap(),
            json!({"hosts": {"a": 1, "c": 3}, "stacks": {"x": 2}, "journal": []})
        );
    }

    #[test]
    fn a_first_write_merges_with_one_that_came_first() {
        // Neither run saw an object: base is empty.
        let base = json!({});
        let ours = json!({"schema": "s", "hosts": {"a": 1}, "journal": [{"step": "x"}]});
        let theirs = json!({"schema": "s", "hosts": {"b": 2}, "journal": [{"step": "y"}]});
        assert_eq!(
            merge(&base, &ours, &theirs).unwrap(),
            json!({"schema": "s", "hosts": {"b": 2, "a": 1}, "journal": [{"step": "y"}, {"step": "x"}]})
        );
    }

    #[test]
    fn a_rewritten_journal_is_refused() {
        let base = json!({"journal": [{"step": "a"}]});
        let ours = json!({"journal": [{"step": "b"}]});
        let theirs = json!({"journal": [{"step": "a"}, {"step": "c"}]});
        assert_eq!(
            merge(&base, &ours, &theirs),
            Err(Conflicts(vec!["journal".to_owned()]))
        );
    }
}
