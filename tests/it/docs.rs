//! The documentation stays true: docs/state.md is generated from the
//! published JSON Schema (pinned by an insta snapshot; `make docs` rewrites
//! both), and every flag a page shows for a step is one that step's `--help`
//! knows.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{Map, Value};
use switchyard_tests::published::assert_published;
use switchyard_tests::steps::{bin_dir, run, step, EXECUTABLES};

use crate::fixture::repo;

#[test]
fn state_reference_is_generated_from_the_schema() {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("schema/state-v1.schema.json")).unwrap(),
    )
    .unwrap();
    let generated = state_reference(&schema);
    insta::with_settings!({
        description => "docs/state.md: the published page holds this text",
        omit_expression => true,
    }, {
        insta::assert_snapshot!("state.md", generated);
    });
    assert_published(&repo().join("docs/state.md"), &generated, "make docs");
}

/// The markdown reference of the state document.
fn state_reference(schema: &Value) -> String {
    let mut md = String::new();
    let title = schema["title"].as_str().unwrap_or("state document");
    let _ = writeln!(md, "# The state file: {title}\n");
    md.push_str(
        "<!-- Generated from schema/state-v1.schema.json by `make docs`; do not edit by hand. -->\n\n",
    );
    let _ = writeln!(md, "{}\n", text(schema));
    md.push_str(
        "Every step reads and writes one JSON document (`--state`, `SWITCHYARD_STATE`, \
         default `switchyard-state.json`): a local file, or `s3://BUCKET/KEY`, where it \
         outlives a pipeline run so that each release knows the last one. A file is written \
         atomically (a temporary file in the same folder, fsync, rename); an object is read \
         with its ETag and written with a conditional PUT (`If-Match`, `If-None-Match: *` the \
         first time). A write that another run overtook merges both runs' changes (the \
         journal appended, other sections entry by entry) or, when both changed the same \
         entry, writes nothing and exits 5 naming it. The document holds no secrets \
         (user-data only as its sha256), and a step keeps the fields it does not know when it \
         rewrites it, so a newer step's data survives an older step. A reader refuses another \
         major version of `schema`. Validate one with `switchyard state validate`; the JSON \
         Schema itself is [schema/state-v1.schema.json](../schema/state-v1.schema.json).\n\n",
    );
    md.push_str("## Top level\n\n");
    fields_table(&mut md, schema);
    let Some(definitions) = schema["definitions"].as_object() else {
        return md;
    };
    for (name, definition) in definitions {
        let _ = writeln!(md, "## {name}\n");
        let description = text(definition);
        if !description.is_empty() {
            let _ = writeln!(md, "{description}\n");
        }
        if let Some(variants) = definition["oneOf"].as_array() {
            md.push_str("| value | meaning |\n|---|---|\n");
            for variant in variants {
                for value in variant["enum"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        md,
                        "| `{}` | {} |",
                        value.as_str().unwrap_or("?"),
                        cell(&text(variant))
                    );
                }
            }
            md.push('\n');
        } else if definition.get("properties").is_some() {
            fields_table(&mut md, definition);
        }
    }
    md
}

fn fields_table(md: &mut String, object: &Value) {
    let required: BTreeSet<&str> = object["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    md.push_str("| field | type | required | description |\n|---|---|---|---|\n");
    let empty = Map::new();
    for (field, spec) in object["properties"].as_object().unwrap_or(&empty) {
        let mut description = text(spec);
        if let Some(default) = spec.get("default") {
            let _ = write!(description, " Default: `{default}`.");
        }
        let _ = writeln!(
            md,
            "| `{field}` | {} | {} | {} |",
            type_of(spec),
            if required.contains(field.as_str()) {
                "yes"
            } else {
                "no"
            },
            cell(description.trim())
        );
    }
    if object["additionalProperties"] == Value::Bool(true) {
        md.push_str("\nOther fields are allowed and kept when a step rewrites the file.\n");
    }
    md.push('\n');
}

/// A field's type in words, with links to the definitions.
fn type_of(spec: &Value) -> String {
    if let Some(target) = spec["$ref"].as_str() {
        let name = target.rsplit('/').next().unwrap_or(target);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(options) = spec["anyOf"].as_array() {
        return options.iter().map(type_of).collect::<Vec<_>>().join(" or ");
    }
    match &spec["type"] {
        Value::Array(kinds) => kinds
            .iter()
            .map(|k| {
                let mut one = spec.clone();
                one["type"] = k.clone();
                type_of(&one)
            })
            .collect::<Vec<_>>()
            .join(" or "),
        Value::String(kind) => match kind.as_str() {
            "array" => format!("list of {}", type_of(&spec["items"])),
            "object" => match &spec["additionalProperties"] {
                Value::Object(_) => {
                    format!("map of name to {}", type_of(&spec["additionalProperties"]))
                }
                _ => "object".to_owned(),
            },
            "integer" if spec["minimum"].as_f64() == Some(0.0) => "integer ≥ 0".to_owned(),
            "string" if spec["format"] == "date-time" => "string (RFC 3339 time)".to_owned(),
            other => other.to_owned(),
        },
        _ => "any JSON value".to_owned(),
    }
}

/// A description with rustdoc links turned into code spans.
fn text(spec: &Value) -> String {
    let raw = spec["description"].as_str().unwrap_or("");
    raw.replace("[`", "`").replace("`]", "`")
}

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[test]
fn every_flag_the_docs_show_is_a_real_flag() {
    let mut known: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for name in EXECUTABLES {
        if bin_dir().join(name).exists() {
            let mut flags = flags_of(name, &[]);
            // Answered before clap parses (switchyard::cli::generate), so not in --help.
            flags.insert("generate".to_owned());
            known.insert(name, flags);
        }
    }
    assert!(
        known.len() >= 4,
        "the steps are not built: {:?}",
        known.keys()
    );
    let mut pages: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    pages.push(repo().join("README.md"));
    let mut unknown = Vec::new();
    let mut checked = 0;
    for page in &pages {
        for (line_no, command) in commands(&std::fs::read_to_string(page).unwrap()) {
            let mut words = command.split_whitespace();
            let Some(flags) = words.next().and_then(|w| known.get(w)) else {
                continue;
            };
            for word in words {
                let Some(flag) = word.strip_prefix("--") else {
                    continue;
                };
                let flag = flag.split('=').next().unwrap_or(flag);
                let flag = flag.trim_matches(|c: char| !(c.is_ascii_alphanumeric() || c == '-'));
                if flag.is_empty() {
                    continue;
                }
                checked += 1;
                if !flags.contains(flag) {
                    unknown.push(format!(
                        "{}:{line_no}: --{flag} in `{command}`",
                        page.display()
                    ));
                }
            }
        }
    }
    assert!(checked > 50, "only {checked} flags found in the docs");
    assert!(
        unknown.is_empty(),
        "flags no step knows:\n{}",
        unknown.join("\n")
    );
}

/// Lines of fenced code blocks, with `\` continuations joined and a `$ ` prompt removed.
fn commands(markdown: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut in_code = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if !in_code {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        let line = line.trim();
        let line = line.strip_prefix("$ ").unwrap_or(line);
        if let Some(head) = line.strip_suffix('\\') {
            text.push_str(head);
            text.push(' ');
            pending = Some((start, text));
        } else {
            text.push_str(line);
            out.push((start, text));
        }
    }
    out
}

/// The long flags of a step and all its subcommands, from their `--help`.
fn flags_of(name: &str, path: &[String]) -> BTreeSet<String> {
    let out = run(step(name, &[]).args(path).arg("--help"));
    assert_eq!(out.code, 0, "{name} {path:?} --help: {}", out.stderr);
    let mut flags: BTreeSet<String> = out
        .stdout
        .split(|c: char| c.is_whitespace() || c == ',' || c == '[' || c == ']')
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .filter(|w| !w.is_empty())
        .collect();
    let mut in_commands = false;
    for line in out.stdout.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.starts_with("   ") {
                continue; // a wrapped description
            }
            let Some(sub) = line
                .split_whitespace()
                .next()
                .filter(|_| line.starts_with("  "))
            else {
                in_commands = false;
                continue;
            };
            if sub != "help" {
                let mut deeper = path.to_vec();
                deeper.push(sub.to_owned());
                flags.extend(flags_of(name, &deeper));
            }
        }
    }
    flags
}
