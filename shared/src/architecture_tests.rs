//! The library's layers, checked from its sources: leaves import nothing of
//! the domain, the domain imports nothing of the command line, and no two
//! top-level modules import each other, directly or around a loop.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Modules that know nothing of the rest: they may import only each other.
const LEAVES: [&str; 3] = ["outcome", "wait", "hooks"];
/// The domain: may import the leaves and each other, never the layers above.
const DOMAIN: [&str; 8] = [
    "state", "aws", "health", "host", "image", "lease", "stack", "traffic",
];
/// The layers above the domain, lowest first: each may import only those below it.
const ABOVE: [&str; 3] = ["cli", "step", "commands"];

/// The non-test source of every top-level module: `src/m.rs` and `src/m/**.rs`,
/// without `*_tests.rs` files and without what follows a `#[cfg(test)]`.
fn sources() -> BTreeMap<String, String> {
    fn walk(dir: &Path, files: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, files);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&root).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap().trim_end_matches(".rs").to_owned();
        let name = file.file_name().unwrap().to_str().unwrap();
        if top == "lib" || name.ends_with("_tests.rs") || name == "tests.rs" {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = production_code(&text);
        let entry = modules.entry(top).or_default();
        entry.push_str(&code);
        entry.push('\n');
    }
    modules
}

/// A file's lines without comments and without what `#[cfg(test)]` marks:
/// the item after it (a `mod fake;` declaration, a helper function) or, for
/// an inline `mod tests {`, the rest of the file.
fn production_code(text: &str) -> String {
    let mut code = Vec::new();
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line.starts_with("//") {
            continue;
        }
        if line != "#[cfg(test)]" {
            code.push(line);
            continue;
        }
        // Skip further attributes, then the item they mark.
        let item = lines.by_ref().find(|l| !l.starts_with("#["));
        match item {
            Some(l) if l.starts_with("mod tests {") => break,
            Some(l) if l.ends_with('{') => {
                let (mut opened, mut closed) = (1, 0);
                for l in lines.by_ref() {
                    opened += l.matches('{').count();
                    closed += l.matches('}').count();
                    if closed >= opened {
                        break;
                    }
                }
            }
            _ => {}
        }
    }
    code.join("\n")
}

/// The top-level modules each module's code names as `crate::m`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let names = sources();
    let mut graph = BTreeMap::new();
    for (module, code) in &names {
        let mut used = BTreeSet::new();
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if &name != module && names.contains_key(&name) {
                used.insert(name);
            }
        }
        graph.insert(module.clone(), used);
    }
    graph
}

#[test]
fn every_module_is_in_a_layer() {
    for module in sources().keys() {
        assert!(
            LEAVES.contains(&module.as_str())
                || DOMAIN.contains(&module.as_str())
                || ABOVE.contains(&module.as_str()),
            "module {module} is in no layer: add it to one in architecture_tests.rs"
        );
    }
}

#[test]
fn each_layer_imports_only_what_is_below_it() {
    for (module, used) in imports() {
        let allowed: Vec<&str> = if LEAVES.contains(&module.as_str()) {
            LEAVES.to_vec()
        } else if DOMAIN.contains(&module.as_str()) {
            LEAVES.iter().chain(DOMAIN.iter()).copied().collect()
        } else {
            let at = ABOVE.iter().position(|m| *m == module).unwrap();
            LEAVES
                .iter()
                .chain(DOMAIN.iter())
                .chain(ABOVE[..at].iter())
                .copied()
                .collect()
        };
        let wrong: Vec<&String> = used
            .iter()
            .filter(|u| !allowed.contains(&u.as_str()))
            .collect();
        assert!(
            wrong.is_empty(),
            "{module} imports {wrong:?}, which sit above it"
        );
    }
}

#[test]
fn the_domain_and_the_leaves_know_nothing_of_clap() {
    for (module, code) in sources() {
        if ABOVE.contains(&module.as_str()) {
            continue;
        }
        assert!(
            !code.contains("clap::") && !code.contains("use clap"),
            "{module} uses clap: the command line belongs in crate::cli"
        );
    }
}

/// Depth-first search for a back edge; the path names the loop.
fn visit<'a>(
    module: &'a str,
    graph: &'a BTreeMap<String, BTreeSet<String>>,
    path: &mut Vec<&'a str>,
    done: &mut BTreeSet<&'a str>,
) {
    if let Some(at) = path.iter().position(|m| *m == module) {
        panic!("module cycle: {} -> {module}", path[at..].join(" -> "));
    }
    if done.contains(module) {
        return;
    }
    path.push(module);
    for next in &graph[module] {
        visit(next, graph, path, done);
    }
    path.pop();
    done.insert(module);
}

#[test]
fn no_two_modules_import_each_other() {
    let graph = imports();
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}
