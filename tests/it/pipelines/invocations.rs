//! The step invocations a shipped pipeline makes, in order, read from its
//! files: the Jenkinsfile (a small Groovy reader), the GitHub workflow with
//! the composite actions it calls (YAML, then the shell of their `run:`),
//! and pipelines/Makefile (`make -n`, then the same small shell reader).
//!
//! What is kept is what a release depends on: the executable, its
//! subcommand, and the flags in [`MATTERS`], whether given on the command
//! line or through their `SWITCHYARD_*` variable. Quoting, flag order, paths
//! and the names of parameters do not count, so two pipelines that run the
//! same release read the same.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::process::Command;

use yaml_rust2::{Yaml, YamlLoader};

use switchyard_tests::steps::EXECUTABLES;

/// How a flag that matters is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// Its value (after the pipeline's parameters are put in).
    Value,
    /// Whether it is given at all (a report file, a gate URL).
    Presence,
}

/// The flags that matter, per executable: the flag, the variable that sets
/// it too, and how it is compared. Anything else a pipeline passes is its own
/// business (its paths, its credentials, its messages).
const MATTERS: &[(&str, &str, &str, Compare)] = &[
    (
        "deploy-standby",
        "--driver",
        "SWITCHYARD_DRIVER",
        Compare::Value,
    ),
    (
        "deploy-standby",
        "--retire-after",
        "SWITCHYARD_RETIRE_AFTER",
        Compare::Value,
    ),
    (
        "deploy-standby",
        "--gate-url",
        "SWITCHYARD_GATE_URLS",
        Compare::Presence,
    ),
    (
        "verify-health",
        "--stack",
        "SWITCHYARD_STACK",
        Compare::Value,
    ),
    (
        "verify-health",
        "--junit",
        "SWITCHYARD_JUNIT",
        Compare::Presence,
    ),
    ("shift-weight", "--to", "SWITCHYARD_TO", Compare::Value),
    (
        "shift-weight",
        "--steps",
        "SWITCHYARD_STEPS",
        Compare::Value,
    ),
    ("shift-weight", "--rollback", "", Compare::Presence),
    (
        "shift-weight",
        "--gate-url",
        "SWITCHYARD_GATE_URLS",
        Compare::Presence,
    ),
];

/// Flags that take no value (so the word after them is not theirs).
const SWITCHES: &[&str] = &[
    "--rollback",
    "--no-wait",
    "--force",
    "--confirm",
    "--dry-run",
    "--prune",
    "--reset-weights",
    "--no-hooks",
    "-v",
    "-q",
];

/// The value a pipeline gets from `switchyard state stack --role ROLE`.
fn stack_with_role(role: &str) -> String {
    format!("<the {role} stack>")
}

/// One run of a switchyard executable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Invocation {
    /// The executable's name, without its folder.
    pub(super) exe: String,
    /// Subcommand words, e.g. `retire`, `state stack`.
    pub(super) sub: Vec<String>,
    /// Every flag given, on the command line or through its variable; "" for a switch.
    pub(super) flags: BTreeMap<String, String>,
}

impl Invocation {
    /// Reads `words` (the executable first) as clap would, then adds the
    /// flags that matter which `env` sets and the command line does not.
    fn new(words: &[String], env: &HashMap<String, String>) -> Option<Self> {
        let exe = words.first()?.rsplit('/').next()?.to_owned();
        if !EXECUTABLES.contains(&exe.as_str()) {
            return None;
        }
        let mut sub = Vec::new();
        let mut flags = BTreeMap::new();
        let mut i = 1;
        while i < words.len() {
            let word = &words[i];
            if let Some((flag, value)) = word.split_once('=').filter(|_| word.starts_with("--")) {
                flags.insert(flag.to_owned(), value.to_owned());
            } else if word.starts_with('-') && word.len() > 1 {
                let takes_value = !SWITCHES.contains(&word.as_str())
                    && words.get(i + 1).is_some_and(|next| !next.starts_with("--"));
                let value = if takes_value {
                    i += 1;
                    words[i].clone()
                } else {
                    String::new()
                };
                flags.insert(word.clone(), value);
            } else {
                sub.push(word.clone());
            }
            i += 1;
        }
        for (of, flag, var, _) in MATTERS {
            if *of == exe && !var.is_empty() && !flags.contains_key(*flag) {
                if let Some(value) = env.get(*var).filter(|v| !v.is_empty()) {
                    flags.insert((*flag).to_owned(), value.clone());
                }
            }
        }
        Some(Self { exe, sub, flags })
    }

    /// A lookup rather than a step: `switchyard state stack --role R` gives R's stack.
    fn lookup(&self) -> Option<String> {
        (self.exe == "switchyard" && self.sub == ["state", "stack"])
            .then(|| self.flags.get("--role").map(|r| stack_with_role(r)))
            .flatten()
    }
}

/// The invocation as compared: executable, subcommand, the flags that matter.
impl fmt::Display for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.exe)?;
        for word in &self.sub {
            write!(f, " {word}")?;
        }
        for (of, flag, _, compare) in MATTERS {
            match (self.flags.get(*flag), compare) {
                (Some(value), Compare::Value) if *of == self.exe => write!(f, " {flag} {value}")?,
                (Some(_), Compare::Presence) if *of == self.exe => write!(f, " {flag}")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// What one pipeline runs: the release as it goes when every stage passes,
/// and what it runs to put the traffic back after a failure.
#[derive(Debug, Default)]
pub(super) struct Release {
    pub(super) steps: Vec<Invocation>,
    pub(super) rollback: Vec<Invocation>,
}

impl Release {
    /// One line per invocation, as compared.
    pub(super) fn render(&self) -> String {
        let line = |step: &Invocation| format!("  {step}\n");
        let steps: String = self.steps.iter().map(line).collect();
        let rollback: String = self.rollback.iter().map(line).collect();
        format!("release:\n{steps}rollback:\n{rollback}")
    }
}

// ---------------------------------------------------------------------------
// Shell: enough of it for make's recipes, a Jenkins `sh` and an action's `run:`.

/// Stands in for a `$` inside single quotes, which is no expansion.
const LITERAL_DOLLAR: char = '\u{1}';

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// A word, quotes removed; `$NAME`, `${...}` and `$(...)` kept as written.
    Word(String),
    /// `;`, a newline, `&&`, `||`, `|`, `&`, `(`, `)`, or a redirection.
    Op(String),
}

/// Splits a script into words and operators.
fn shell_tokens(src: &str) -> Vec<Tok> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut i = 0;
    let end_word = |toks: &mut Vec<Tok>, word: &mut String, in_word: &mut bool| {
        if *in_word {
            toks.push(Tok::Word(std::mem::take(word)));
            *in_word = false;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            '\\' if next == Some('\n') => i += 2,
            '\\' => {
                if let Some(n) = next {
                    word.push(n);
                }
                in_word = true;
                i += 2;
            }
            ' ' | '\t' | '\r' => {
                end_word(&mut toks, &mut word, &mut in_word);
                i += 1;
            }
            '\n' => {
                end_word(&mut toks, &mut word, &mut in_word);
                toks.push(Tok::Op("\n".into()));
                i += 1;
            }
            '#' if !in_word => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '\'' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    word.push(if chars[i] == '$' {
                        LITERAL_DOLLAR
                    } else {
                        chars[i]
                    });
                    i += 1;
                }
                i += 1;
            }
            '"' => {
                in_word = true;
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' && i + 1 < chars.len() && "\"\\$`".contains(chars[i + 1]) {
                        word.push(chars[i + 1]);
                        i += 2;
                    } else if chars[i] == '$' && chars.get(i + 1) == Some(&'(') {
                        i = copy_balanced(&chars, i, &mut word);
                    } else {
                        word.push(chars[i]);
                        i += 1;
                    }
                }
                i += 1;
            }
            '$' if next == Some('(') || next == Some('{') => {
                in_word = true;
                i = copy_balanced(&chars, i, &mut word);
            }
            ';' | '&' | '|' | '(' | ')' => {
                end_word(&mut toks, &mut word, &mut in_word);
                let op = if (c == '&' || c == '|') && next == Some(c) {
                    i += 2;
                    format!("{c}{c}")
                } else {
                    i += 1;
                    c.to_string()
                };
                toks.push(Tok::Op(op));
            }
            '>' | '<' => {
                // A redirection; a file descriptor number before it goes with it.
                if in_word && word.chars().all(|d| d.is_ascii_digit()) {
                    word.clear();
                    in_word = false;
                }
                end_word(&mut toks, &mut word, &mut in_word);
                let mut op = c.to_string();
                i += 1;
                while i < chars.len() && (chars[i] == c || chars[i] == '&') {
                    op.push(chars[i]);
                    i += 1;
                }
                toks.push(Tok::Op(op));
            }
            _ => {
                word.push(c);
                in_word = true;
                i += 1;
            }
        }
    }
    end_word(&mut toks, &mut word, &mut in_word);
    toks
}

/// Copies `$(...)` or `${...}` starting at `at` into `word`; returns the index after it.
fn copy_balanced(chars: &[char], at: usize, word: &mut String) -> usize {
    let (open, close) = if chars[at + 1] == '(' {
        ('(', ')')
    } else {
        ('{', '}')
    };
    let mut depth = 0;
    let mut quote: Option<char> = None;
    let mut i = at;
    while i < chars.len() {
        let c = chars[i];
        word.push(c);
        i += 1;
        match quote {
            Some(q) if c == q => quote = None,
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == open => depth += 1,
            None if c == close => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
    }
    i
}

/// One simple command: its words and its redirections (operator, target).
#[derive(Debug, Default, Clone)]
struct Simple {
    words: Vec<String>,
    redirects: Vec<(String, String)>,
}

/// Shell words that open or close a compound command.
const KEYWORDS: &[&str] = &[
    "if", "elif", "else", "fi", "do", "done", "while", "until", "!", "{", "}",
];

fn is_redirect(op: &str) -> bool {
    op.starts_with('>') || op.starts_with('<')
}

/// The simple commands a script runs when everything succeeds: the command
/// after `||` (a failure handler) and the bodies of `if` (a condition the
/// release does not take when it goes well) are left out.
fn happy_path(toks: &[Tok]) -> Vec<Simple> {
    let mut out = Vec::new();
    let mut cur = Simple::default();
    let mut i = 0;
    let flush = |out: &mut Vec<Simple>, cur: &mut Simple| {
        if !cur.words.is_empty() {
            out.push(std::mem::take(cur));
        }
        *cur = Simple::default();
    };
    while i < toks.len() {
        match &toks[i] {
            Tok::Op(op) if op == "||" => {
                flush(&mut out, &mut cur);
                i = skip_unit(toks, i + 1);
                continue;
            }
            Tok::Op(op) if is_redirect(op) => {
                if let Some(Tok::Word(target)) = toks.get(i + 1) {
                    cur.redirects.push((op.clone(), target.clone()));
                }
                i += 2;
                continue;
            }
            Tok::Op(_) => flush(&mut out, &mut cur),
            Tok::Word(w) if cur.words.is_empty() && w == "then" => {
                i = skip_to_fi(toks, i + 1);
                continue;
            }
            Tok::Word(w) if cur.words.is_empty() && KEYWORDS.contains(&w.as_str()) => {}
            Tok::Word(w) => cur.words.push(w.clone()),
        }
        i += 1;
    }
    flush(&mut out, &mut cur);
    out
}

/// The index after the command that starts at `at` (a `{ }` or `( )` group,
/// or a simple command up to the next separator).
fn skip_unit(toks: &[Tok], at: usize) -> usize {
    let (open, close) = match toks.get(at) {
        Some(Tok::Word(w)) if w == "{" => (Tok::Word("{".into()), Tok::Word("}".into())),
        Some(Tok::Op(o)) if o == "(" => (Tok::Op("(".into()), Tok::Op(")".into())),
        _ => {
            let mut i = at;
            while i < toks.len() {
                if matches!(&toks[i], Tok::Op(o) if !is_redirect(o) && o != "(" && o != ")") {
                    return i;
                }
                i += 1;
            }
            return i;
        }
    };
    let mut depth = 0;
    for (i, tok) in toks.iter().enumerate().skip(at) {
        if *tok == open {
            depth += 1;
        } else if *tok == close {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
    }
    toks.len()
}

/// The index of the `fi` that closes the `if` whose `then` was just before `at`.
fn skip_to_fi(toks: &[Tok], at: usize) -> usize {
    let mut depth = 1;
    for (i, tok) in toks.iter().enumerate().skip(at) {
        match tok {
            Tok::Word(w) if w == "if" => depth += 1,
            Tok::Word(w) if w == "fi" => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    toks.len()
}

/// What a script did, read on its happy path.
#[derive(Debug, Default)]
struct ShellRun {
    invocations: Vec<Invocation>,
    /// Lines it appended to `$GITHUB_OUTPUT`, as name → value.
    outputs: HashMap<String, String>,
}

/// Reads `script` with the variables `env` (and those it sets itself).
/// `wrapper` names a script that runs the executable given as its first
/// argument (an action's run-step.sh), plus the words of `extra_args`.
fn read_shell(
    script: &str,
    env: &HashMap<String, String>,
    wrapper: Option<(&str, &[String])>,
) -> ShellRun {
    let mut vars = env.clone();
    let mut run = ShellRun::default();
    for simple in happy_path(&shell_tokens(script)) {
        let mut words = simple.words.iter().peekable();
        let mut assigned = Vec::new();
        while let Some((name, value)) = words.peek().and_then(|w| assignment(w)) {
            assigned.push((name.to_owned(), value.to_owned()));
            words.next();
        }
        let rest: Vec<&String> = words.collect();
        if rest.is_empty() {
            for (name, value) in assigned {
                let value = expand_one(&value, &vars);
                vars.insert(name, value);
            }
            continue;
        }
        let mut command_env = vars.clone();
        for (name, value) in assigned {
            command_env.insert(name, expand_one(&value, &vars));
        }
        let mut expanded: Vec<String> = rest.iter().flat_map(|w| expand(w, &command_env)).collect();
        match expanded[0].as_str() {
            "read" => {
                // `read -r -a NAME <<<WORD`
                if let (Some(name), Some((_, word))) = (
                    expanded.iter().skip(1).find(|w| !w.starts_with('-')),
                    simple.redirects.iter().find(|(op, _)| op == "<<<"),
                ) {
                    vars.insert(name.clone(), expand_one(word, &vars));
                }
                continue;
            }
            "unset" => {
                for name in &expanded[1..] {
                    vars.remove(name);
                }
                continue;
            }
            "echo" | "printf" => {
                let to_output = simple
                    .redirects
                    .iter()
                    .any(|(_, target)| target == "$GITHUB_OUTPUT" || target == "${GITHUB_OUTPUT}");
                if to_output {
                    for word in &expanded[1..] {
                        if let Some((name, value)) = word.split_once('=') {
                            run.outputs.insert(name.to_owned(), value.to_owned());
                        }
                    }
                }
                continue;
            }
            _ => {}
        }
        if let Some((script_name, extra)) = wrapper {
            if expanded[0].ends_with(script_name) {
                expanded.remove(0);
                expanded.extend(extra.iter().cloned());
            }
        }
        if let Some(invocation) = Invocation::new(&expanded, &command_env) {
            run.invocations.push(invocation);
        }
    }
    run
}

/// `NAME=value` at the start of a simple command.
fn assignment(word: &str) -> Option<(&str, &str)> {
    let (name, value) = word.split_once('=')?;
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    ok.then_some((name, value))
}

/// Expands one word; `${NAME[@]}` alone becomes one word per element.
fn expand(word: &str, vars: &HashMap<String, String>) -> Vec<String> {
    if let Some(name) = word.strip_prefix("${").and_then(|w| w.strip_suffix("[@]}")) {
        return vars
            .get(name)
            .map(|v| v.split_whitespace().map(str::to_owned).collect())
            .unwrap_or_default();
    }
    vec![expand_one(word, vars)]
}

/// Puts in `$NAME`, `${NAME}` and `$(command)` (a lookup's answer, else a
/// placeholder); unknown variables stay as written.
fn expand_one(word: &str, vars: &HashMap<String, String>) -> String {
    let chars: Vec<char> = word.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(if chars[i] == LITERAL_DOLLAR {
                '$'
            } else {
                chars[i]
            });
            i += 1;
            continue;
        }
        match chars.get(i + 1) {
            Some('(') => {
                let mut inner = String::new();
                let end = copy_balanced(&chars, i, &mut inner);
                let command = &inner[2..inner.len() - 1];
                let run = read_shell(command, vars, None);
                let answer = run
                    .invocations
                    .first()
                    .and_then(Invocation::lookup)
                    .unwrap_or_else(|| format!("<output of {command}>"));
                out.push_str(&answer);
                i = end;
            }
            Some('{') => {
                let close = chars[i..]
                    .iter()
                    .position(|c| *c == '}')
                    .map_or(chars.len(), |p| i + p);
                let name: String = chars[i + 2..close].iter().collect();
                if let Some(value) = vars.get(&name) {
                    out.push_str(value);
                } else {
                    out.push_str("${");
                    out.push_str(&name);
                    out.push('}');
                }
                i = close + 1;
            }
            _ => {
                let name: String = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .collect();
                match vars.get(&name) {
                    Some(value) if !name.is_empty() => out.push_str(value),
                    _ => {
                        out.push('$');
                        out.push_str(&name);
                    }
                }
                i += 1 + name.len();
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// make

/// The release and the rollback of a Makefile: `make -n` of its `release` and
/// `rollback` targets in an empty folder, with `vars` (e.g. `CONFIRM=yes`),
/// read with the variables the Makefile exports.
pub(super) fn makefile(path: &Path, vars: &[&str]) -> Release {
    let dir = tempfile::tempdir().unwrap();
    let make = |args: &[&str]| {
        // Only PATH from the test's environment: a SWITCHYARD_* variable there
        // would read as the Makefile's.
        let out = Command::new("make")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .arg("-f")
            .arg(path)
            .arg("-C")
            .arg(dir.path())
            .arg("--no-print-directory")
            .args(args)
            .args(vars)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "make {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    // What the Makefile exports reaches every step: read it as a recipe would.
    let exported = make(&[
        "--eval",
        "switchyard-exported-env: ; @env -0",
        "switchyard-exported-env",
    ]);
    let env: HashMap<String, String> = exported
        .split('\0')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| k.starts_with("SWITCHYARD_"))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let steps = read_shell(&make(&["-n", "release"]), &env, None).invocations;
    let rollback = read_shell(&make(&["-n", "rollback"]), &env, None).invocations;
    Release { steps, rollback }
}

// ---------------------------------------------------------------------------
// Groovy: enough of it for a declarative Jenkinsfile.

#[derive(Debug, Clone, PartialEq, Eq)]
enum G {
    Ident(String),
    /// A string literal's text; `${...}` left as written in a GString.
    Str(String),
    Punct(char),
}

fn groovy_tokens(src: &str) -> Vec<G> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let rest: String = chars[i..chars.len().min(i + 3)].iter().collect();
        if c.is_whitespace() {
            i += 1;
        } else if rest.starts_with("//") {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if rest.starts_with("/*") {
            i += 2;
            while i + 1 < chars.len() && !(chars[i] == '*' && chars[i + 1] == '/') {
                i += 1;
            }
            i += 2;
        } else if c == '\'' || c == '"' {
            let triple = rest == format!("{c}{c}{c}");
            let delim: Vec<char> = if triple { vec![c; 3] } else { vec![c] };
            i += delim.len();
            let mut text = String::new();
            while i < chars.len() && !chars[i..].starts_with(&delim) {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    text.push(chars[i + 1]);
                    i += 2;
                } else {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            i += delim.len();
            toks.push(G::Str(text));
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            toks.push(G::Ident(chars[start..i].iter().collect()));
        } else {
            toks.push(G::Punct(c));
            i += 1;
        }
    }
    toks
}

/// The index of the bracket that closes the one at `at`.
fn closing(toks: &[G], at: usize) -> usize {
    let G::Punct(open) = toks[at] else {
        panic!("no bracket at {at}")
    };
    let close = match open {
        '{' => '}',
        '(' => ')',
        '[' => ']',
        _ => panic!("{open} is no bracket"),
    };
    let mut depth = 0;
    for (i, tok) in toks.iter().enumerate().skip(at) {
        if *tok == G::Punct(open) {
            depth += 1;
        } else if *tok == G::Punct(close) {
            depth -= 1;
            if depth == 0 {
                return i;
            }
        }
    }
    panic!("bracket at {at} is not closed")
}

fn is_ident(tok: Option<&G>, name: &str) -> bool {
    matches!(tok, Some(G::Ident(n)) if n == name)
}

/// The body of the block `NAME {` at depth 0 within `toks` (not brackets' content).
fn block<'a>(toks: &'a [G], name: &str) -> Option<&'a [G]> {
    let mut i = 0;
    while i < toks.len() {
        if is_ident(toks.get(i), name) && toks.get(i + 1) == Some(&G::Punct('{')) {
            let end = closing(toks, i + 1);
            return Some(&toks[i + 2..end]);
        }
        if matches!(toks[i], G::Punct('{' | '(' | '[')) {
            i = closing(toks, i);
        }
        i += 1;
    }
    None
}

/// Splits the tokens between a call's parentheses into its arguments.
fn arguments(toks: &[G]) -> Vec<&[G]> {
    let mut args = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < toks.len() {
        match toks[i] {
            G::Punct('{' | '(' | '[') => i = closing(toks, i),
            G::Punct(',') => {
                args.push(&toks[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < toks.len() {
        args.push(&toks[start..]);
    }
    args
}

/// A function defined in the Jenkinsfile: its parameters and its body.
struct Function<'a> {
    params: Vec<String>,
    body: &'a [G],
}

/// A value as the Jenkinsfile's code sees it.
#[derive(Debug, Clone)]
enum Value {
    Text(String),
    Map(Vec<(String, String)>),
}

/// Reads a declarative Jenkinsfile, its parameters at their defaults except
/// those in `given`.
pub(super) fn jenkinsfile(src: &str, given: &[(&str, &str)]) -> Release {
    let toks = groovy_tokens(src);
    let pipeline = block(&toks, "pipeline").expect("a `pipeline { }` block");
    let mut jenkins = Jenkins {
        functions: functions(&toks),
        params: HashMap::new(),
        env: HashMap::new(),
        steps: Vec::new(),
    };
    if let Some(params) = block(pipeline, "parameters") {
        let mut i = 0;
        while i < params.len() {
            if params.get(i + 1) == Some(&G::Punct('(')) {
                let end = closing(params, i + 1);
                let named = named_arguments(&params[i + 2..end]);
                if let Some(name) = named.get("name") {
                    let default = named.get("defaultValue").cloned().unwrap_or_default();
                    jenkins.params.insert(name.clone(), default);
                }
                i = end;
            }
            i += 1;
        }
    }
    for (name, value) in given {
        jenkins
            .params
            .insert((*name).to_owned(), (*value).to_owned());
    }
    // Parameters are in every step's environment, as Jenkins puts them there.
    jenkins.env = jenkins.params.clone();
    if let Some(environment) = block(pipeline, "environment") {
        let mut i = 0;
        while i + 2 < environment.len() {
            if let (G::Ident(name), G::Punct('='), G::Str(value)) =
                (&environment[i], &environment[i + 1], &environment[i + 2])
            {
                let value = jenkins.interpolate(value, &HashMap::new());
                jenkins.env.insert(name.clone(), value);
                i += 3;
            } else {
                i += 1;
            }
        }
    }
    let stages = block(pipeline, "stages").expect("a `stages { }` block");
    jenkins.walk(stages, &HashMap::new());
    let steps = std::mem::take(&mut jenkins.steps);
    // What runs after a failure: the pipeline's own `post { failure { } }`.
    if let Some(failure) = block(pipeline, "post").and_then(|post| block(post, "failure")) {
        jenkins.walk(failure, &HashMap::new());
    }
    Release {
        steps,
        rollback: jenkins.steps,
    }
}

/// `name: value` arguments whose value is a string literal.
fn named_arguments(toks: &[G]) -> HashMap<String, String> {
    arguments(toks)
        .into_iter()
        .filter_map(|arg| match arg {
            [G::Ident(name), G::Punct(':'), G::Str(value)] => Some((name.clone(), value.clone())),
            _ => None,
        })
        .collect()
}

/// Every `Type name(params) { body }` outside the pipeline block.
fn functions(toks: &[G]) -> HashMap<String, Function<'_>> {
    let mut out = HashMap::new();
    let mut i = 0;
    while i < toks.len() {
        if let (Some(G::Ident(_)), Some(G::Ident(name)), Some(G::Punct('('))) =
            (toks.get(i), toks.get(i + 1), toks.get(i + 2))
        {
            let close = closing(toks, i + 2);
            if toks.get(close + 1) == Some(&G::Punct('{')) {
                let end = closing(toks, close + 1);
                let params = arguments(&toks[i + 3..close])
                    .into_iter()
                    .filter_map(|p| match p {
                        [G::Ident(_), G::Ident(n), ..] => Some(n.clone()),
                        _ => None,
                    })
                    .collect();
                out.insert(
                    name.clone(),
                    Function {
                        params,
                        body: &toks[close + 2..end],
                    },
                );
                i = end + 1;
                continue;
            }
        }
        if matches!(toks[i], G::Punct('{')) {
            i = closing(toks, i);
        }
        i += 1;
    }
    out
}

struct Jenkins<'a> {
    functions: HashMap<String, Function<'a>>,
    params: HashMap<String, String>,
    /// The environment every step gets: parameters, `environment { }`, `env.X = ...`.
    env: HashMap<String, String>,
    steps: Vec<Invocation>,
}

impl Jenkins<'_> {
    /// Puts `${name}` (a bound argument) and `${params.X}` into a GString.
    fn interpolate(&self, text: &str, bound: &HashMap<String, Value>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let end = rest[start..].find('}').map_or(rest.len(), |e| start + e);
            let expr = &rest[start + 2..end];
            let value = match (bound.get(expr), expr.strip_prefix("params.")) {
                (Some(Value::Text(t)), _) => t.clone(),
                (_, Some(param)) => self.params.get(param).cloned().unwrap_or_default(),
                _ => format!("${{{expr}}}"),
            };
            out.push_str(&value);
            rest = &rest[(end + 1).min(rest.len())..];
        }
        out.push_str(rest);
        out
    }

    /// The value of a call's argument.
    fn value(&self, arg: &[G], bound: &HashMap<String, Value>) -> Value {
        match arg {
            [G::Str(text)] => Value::Text(self.interpolate(text, bound)),
            [G::Ident(name)] => bound
                .get(name)
                .cloned()
                .unwrap_or(Value::Text(String::new())),
            [G::Ident(p), G::Punct('.'), G::Ident(name)] if p == "params" => {
                Value::Text(self.params.get(name).cloned().unwrap_or_default())
            }
            [G::Punct('['), .., G::Punct(']')] => {
                let inner = &arg[1..arg.len() - 1];
                let entries = arguments(inner)
                    .into_iter()
                    .filter_map(|entry| {
                        let colon = entry.iter().position(|t| *t == G::Punct(':'))?;
                        let key = match &entry[..colon] {
                            [G::Ident(k) | G::Str(k)] => k.clone(),
                            _ => return None,
                        };
                        match self.value(&entry[colon + 1..], bound) {
                            Value::Text(v) => Some((key, v)),
                            Value::Map(_) => None,
                        }
                    })
                    .collect();
                Value::Map(entries)
            }
            [G::Ident(name), G::Punct('('), .., G::Punct(')')] => {
                // A function of the Jenkinsfile that returns a value.
                let function = self
                    .functions
                    .get(name)
                    .unwrap_or_else(|| panic!("no function {name}"));
                let at = function
                    .body
                    .iter()
                    .position(|t| is_ident(Some(t), "return"))
                    .unwrap_or_else(|| panic!("{name} returns nothing"));
                self.value(&function.body[at + 1..], &HashMap::new())
            }
            _ => Value::Text(String::new()),
        }
    }

    /// Reads a block's statements in order: `runStep(...)` calls, calls of the
    /// Jenkinsfile's functions (followed into their bodies), `env.X = ...`.
    /// A stage's own `post { }` (its clean-up) is not part of the release.
    fn walk(&mut self, toks: &[G], bound: &HashMap<String, Value>) {
        let mut i = 0;
        while i < toks.len() {
            if is_ident(toks.get(i), "post") && toks.get(i + 1) == Some(&G::Punct('{')) {
                i = closing(toks, i + 1) + 1;
                continue;
            }
            if let (
                Some(G::Ident(env)),
                Some(G::Punct('.')),
                Some(G::Ident(name)),
                Some(G::Punct('=')),
                Some(G::Ident(f)),
                Some(G::Punct('(')),
            ) = (
                toks.get(i),
                toks.get(i + 1),
                toks.get(i + 2),
                toks.get(i + 3),
                toks.get(i + 4),
                toks.get(i + 5),
            ) {
                if env == "env" {
                    let end = closing(toks, i + 5);
                    let answer = self.shell_output(f, &toks[i + 6..end], bound);
                    self.env.insert(name.clone(), answer);
                    i = end + 1;
                    continue;
                }
            }
            if let (Some(G::Ident(name)), Some(G::Punct('('))) = (toks.get(i), toks.get(i + 1)) {
                let end = closing(toks, i + 1);
                let args: Vec<Value> = arguments(&toks[i + 2..end])
                    .into_iter()
                    .map(|a| self.value(a, bound))
                    .collect();
                if name == "runStep" {
                    self.run_step(&args);
                } else if self.functions.contains_key(name) {
                    let function = &self.functions[name];
                    let body = function.body;
                    let inner: HashMap<String, Value> =
                        function.params.iter().cloned().zip(args).collect();
                    self.walk(body, &inner);
                }
                i = end + 1;
                continue;
            }
            i += 1;
        }
    }

    /// `runStep(command, extra)`: `sh command` with the SWITCHYARD_* variables
    /// of `extra` that are set, as the Jenkinsfile's runStep does.
    fn run_step(&mut self, args: &[Value]) {
        let function = self
            .functions
            .get("runStep")
            .expect("the Jenkinsfile defines runStep");
        let command_param = &function.params[0];
        let runs_it = function
            .body
            .windows(2)
            .any(|w| is_ident(Some(&w[0]), "sh") && is_ident(Some(&w[1]), command_param));
        assert!(
            runs_it,
            "runStep no longer runs `sh {command_param}`: teach this reader what it does"
        );
        let Some(Value::Text(command)) = args.first() else {
            panic!("runStep without a command: {args:?}")
        };
        let mut env = self.env.clone();
        if let Some(Value::Map(extra)) = args.get(1) {
            for (k, v) in extra {
                if !v.is_empty() {
                    env.insert(k.clone(), v.clone());
                }
            }
        }
        self.steps
            .extend(read_shell(command, &env, None).invocations);
    }

    /// What `f(args)` returns when f returns an `sh(returnStdout: true, script: ...)`'s output.
    fn shell_output(&self, f: &str, args: &[G], bound: &HashMap<String, Value>) -> String {
        let Some(function) = self.functions.get(f) else {
            return format!("<{f}()>");
        };
        let values: Vec<Value> = arguments(args)
            .into_iter()
            .map(|a| self.value(a, bound))
            .collect();
        let inner: HashMap<String, Value> = function.params.iter().cloned().zip(values).collect();
        let body = function.body;
        for (i, tok) in body.iter().enumerate() {
            if is_ident(Some(tok), "sh") && body.get(i + 1) == Some(&G::Punct('(')) {
                let end = closing(body, i + 1);
                let call = &body[i + 2..end];
                let stdout = arguments(call).iter().any(|a| {
                    matches!(a, [G::Ident(n), G::Punct(':'), G::Ident(v)] if n == "returnStdout" && v == "true")
                });
                let script = arguments(call).into_iter().find_map(|a| match a {
                    [G::Ident(n), G::Punct(':'), G::Str(s)] if n == "script" => Some(s.clone()),
                    _ => None,
                });
                if let (true, Some(script)) = (stdout, script) {
                    let script = self.interpolate(&script, &inner);
                    let run = read_shell(&script, &self.env, None);
                    if let Some(answer) = run.invocations.first().and_then(Invocation::lookup) {
                        return answer;
                    }
                    return format!("<output of {script}>");
                }
            }
        }
        format!("<{f}()>")
    }
}

// ---------------------------------------------------------------------------
// GitHub Actions: the workflow, and the composite actions it calls.

/// Evaluates a `${{ }}` expression: context paths, string literals, `==`,
/// `!=`, `!`, `&&`, `||` (which yield one of their operands, as in Actions),
/// parentheses, and the status functions (`always()`, `success()` true;
/// `failure()`, `cancelled()` false: the release as it goes when all passes).
fn evaluate(expr: &str, context: &dyn Fn(&str) -> String) -> String {
    let toks = expression_tokens(expr);
    let mut at = 0;
    let value = or_expr(&toks, &mut at, context);
    assert_eq!(at, toks.len(), "cannot read the expression `{expr}`");
    value
}

fn expression_tokens(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
        if c.is_whitespace() {
            i += 1;
        } else if c == '\'' {
            let mut text = String::from("'");
            i += 1;
            while i < chars.len() {
                if chars[i] == '\'' && chars.get(i + 1) == Some(&'\'') {
                    text.push('\'');
                    i += 2;
                } else if chars[i] == '\'' {
                    i += 1;
                    break;
                } else {
                    text.push(chars[i]);
                    i += 1;
                }
            }
            toks.push(text);
        } else if ["||", "&&", "==", "!="].contains(&two.as_str()) {
            toks.push(two);
            i += 2;
        } else if "!()".contains(c) {
            toks.push(c.to_string());
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || "._-*".contains(chars[i])) {
                i += 1;
            }
            assert!(i > start, "cannot read `{c}` in `{expr}`");
            toks.push(chars[start..i].iter().collect());
        }
    }
    toks
}

fn truthy(value: &str) -> bool {
    !value.is_empty() && value != "false" && value != "0"
}

fn or_expr(toks: &[String], at: &mut usize, context: &dyn Fn(&str) -> String) -> String {
    let mut left = and_expr(toks, at, context);
    while toks.get(*at).is_some_and(|t| t == "||") {
        *at += 1;
        let right = and_expr(toks, at, context);
        if !truthy(&left) {
            left = right;
        }
    }
    left
}

fn and_expr(toks: &[String], at: &mut usize, context: &dyn Fn(&str) -> String) -> String {
    let mut left = compare_expr(toks, at, context);
    while toks.get(*at).is_some_and(|t| t == "&&") {
        *at += 1;
        let right = compare_expr(toks, at, context);
        if truthy(&left) {
            left = right;
        }
    }
    left
}

fn compare_expr(toks: &[String], at: &mut usize, context: &dyn Fn(&str) -> String) -> String {
    let left = unary_expr(toks, at, context);
    match toks.get(*at).map(String::as_str) {
        Some(op @ ("==" | "!=")) => {
            let equal_wanted = op == "==";
            *at += 1;
            let right = unary_expr(toks, at, context);
            (left.eq_ignore_ascii_case(&right) == equal_wanted).to_string()
        }
        _ => left,
    }
}

fn unary_expr(toks: &[String], at: &mut usize, context: &dyn Fn(&str) -> String) -> String {
    let tok = toks.get(*at).cloned().unwrap_or_default();
    *at += 1;
    if tok == "!" {
        return (!truthy(&unary_expr(toks, at, context))).to_string();
    }
    if tok == "(" {
        let value = or_expr(toks, at, context);
        assert_eq!(
            toks.get(*at).map(String::as_str),
            Some(")"),
            "unclosed ( in {toks:?}"
        );
        *at += 1;
        return value;
    }
    if let Some(text) = tok.strip_prefix('\'') {
        return text.to_owned();
    }
    if toks.get(*at).is_some_and(|t| t == "(") {
        // A status function: the release as it goes when every job passes.
        let close = toks[*at..]
            .iter()
            .position(|t| t == ")")
            .map_or(toks.len(), |p| *at + p);
        *at = close + 1;
        return (tok == "always" || tok == "success").to_string();
    }
    if tok == "true" || tok == "false" {
        return tok;
    }
    context(&tok)
}

/// Puts every `${{ expression }}` of `text` in.
fn template(text: &str, context: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${{") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find("}}").map_or(rest.len(), |e| start + e);
        out.push_str(&evaluate(&rest[start + 3..end], context));
        rest = &rest[(end + 2).min(rest.len())..];
    }
    out.push_str(rest);
    out
}

/// A YAML scalar as text ("" when absent).
fn text(yaml: &Yaml) -> String {
    match yaml {
        Yaml::String(s) | Yaml::Real(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        Yaml::Boolean(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A YAML mapping's entries as text.
fn entries(yaml: &Yaml) -> Vec<(String, &Yaml)> {
    yaml.as_hash()
        .map(|h| h.iter().map(|(k, v)| (text(k), v)).collect())
        .unwrap_or_default()
}

fn load_yaml(src: &str, what: &str) -> Yaml {
    YamlLoader::load_from_str(src)
        .unwrap_or_else(|e| panic!("{what} is not YAML: {e}"))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{what} is empty"))
}

/// The name of a switchyard composite action that `uses:` calls, e.g.
/// `switchyard/switchyard/pipelines/github/actions/shift-weight@v0.1.0` or
/// `./pipelines/github/actions/shift-weight`.
fn own_action(uses: &str) -> Option<&str> {
    let path = uses.split('@').next()?;
    let rest = path
        .strip_prefix("./pipelines/github/actions/")
        .or_else(|| path.strip_prefix("switchyard/switchyard/pipelines/github/actions/"))?;
    Some(rest.trim_end_matches('/'))
}

/// Reads the workflow: its jobs in the order their `needs` give, each job's
/// steps in order, into the composite actions they call; `given` are the
/// workflow inputs that are set (the others take their defaults). A job
/// whose `if:` asks for a failure is the rollback.
pub(super) fn workflow(
    src: &str,
    action: &dyn Fn(&str) -> String,
    given: &[(&str, &str)],
) -> Release {
    let doc = load_yaml(src, "the workflow");
    let on = &doc["on"];
    let declared = if on["workflow_call"]["inputs"].is_badvalue() {
        &on["workflow_dispatch"]["inputs"]
    } else {
        &on["workflow_call"]["inputs"]
    };
    let mut inputs: HashMap<String, String> = entries(declared)
        .into_iter()
        .map(|(name, spec)| (name, text(&spec["default"])))
        .collect();
    for (name, value) in given {
        inputs.insert((*name).to_owned(), (*value).to_owned());
    }
    let workflow_env = &doc["env"];

    // Jobs in the order of their needs, the file's order among equals.
    let jobs = entries(&doc["jobs"]);
    let needs_of = |job: &Yaml| -> Vec<String> {
        match &job["needs"] {
            Yaml::Array(list) => list.iter().map(text).collect(),
            other => Some(text(other))
                .filter(|t| !t.is_empty())
                .into_iter()
                .collect(),
        }
    };
    let mut order: Vec<usize> = Vec::new();
    while order.len() < jobs.len() {
        let next = (0..jobs.len())
            .find(|i| {
                !order.contains(i)
                    && needs_of(jobs[*i].1)
                        .iter()
                        .all(|n| order.iter().any(|o| jobs[*o].0 == *n))
            })
            .expect("the jobs' needs form no cycle");
        order.push(next);
    }

    let mut job_outputs: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut release = Release::default();
    for index in order {
        let (name, job) = (&jobs[index].0, jobs[index].1);
        // `failure()`, or `needs.X.result == 'failure'`.
        let failure_path = text(&job["if"]).contains("failure");
        let mut step_outputs: HashMap<String, HashMap<String, String>> = HashMap::new();
        let mut invocations = Vec::new();
        for step in job["steps"].as_vec().into_iter().flatten() {
            let context = |path: &str| -> String {
                context_value(path, &inputs, &step_outputs, &job_outputs, &HashMap::new())
            };
            let condition = text(&step["if"]);
            if !condition.is_empty() && !truthy(&evaluate(&condition, &context)) {
                continue;
            }
            let mut env: HashMap<String, String> = HashMap::new();
            for layer in [workflow_env, &job["env"], &step["env"]] {
                for (k, v) in entries(layer) {
                    env.insert(k, template(&text(v), &context));
                }
            }
            let id = text(&step["id"]);
            let uses = text(&step["uses"]);
            let run = if let Some(action_name) = own_action(&uses) {
                let with: HashMap<String, String> = entries(&step["with"])
                    .into_iter()
                    .map(|(k, v)| (k, template(&text(v), &context)))
                    .collect();
                composite(&action(action_name), action_name, &with, &env)
            } else if !text(&step["run"]).is_empty() {
                read_shell(&text(&step["run"]), &env, None)
            } else {
                ShellRun::default()
            };
            if !id.is_empty() {
                step_outputs.insert(id, run.outputs);
            }
            invocations.extend(run.invocations);
        }
        let outputs = entries(&job["outputs"])
            .into_iter()
            .map(|(k, v)| {
                let context = |path: &str| -> String {
                    context_value(path, &inputs, &step_outputs, &job_outputs, &HashMap::new())
                };
                (k, template(&text(v), &context))
            })
            .collect();
        job_outputs.insert(name.clone(), outputs);
        if failure_path {
            release.rollback.extend(invocations);
        } else {
            release.steps.extend(invocations);
        }
    }
    release
}

/// The value of a context path: `inputs.X`, `steps.ID.outputs.X`, `needs.JOB.outputs.X`, `env.X`.
fn context_value(
    path: &str,
    inputs: &HashMap<String, String>,
    steps: &HashMap<String, HashMap<String, String>>,
    needs: &HashMap<String, HashMap<String, String>>,
    env: &HashMap<String, String>,
) -> String {
    let parts: Vec<&str> = path.split('.').collect();
    let found = match parts.as_slice() {
        ["inputs", name] => inputs.get(*name).cloned(),
        ["env", name] => env.get(*name).cloned(),
        ["steps", id, "outputs", name] => steps.get(*id).and_then(|o| o.get(*name)).cloned(),
        ["needs", job, "outputs", name] => needs.get(*job).and_then(|o| o.get(*name)).cloned(),
        _ => None,
    };
    found.unwrap_or_else(|| format!("<{path}>"))
}

/// What a composite action runs with the inputs `with` (the others at their
/// defaults), in the environment `env` of the job's step. An action runs a
/// step through `setup/run-step.sh`, which turns every non-empty
/// `SWITCHYARD_IN_X` into `SWITCHYARD_X` and adds `SWITCHYARD_ARGS`' words.
fn composite(
    src: &str,
    name: &str,
    with: &HashMap<String, String>,
    job_env: &HashMap<String, String>,
) -> ShellRun {
    let doc = load_yaml(src, &format!("action {name}"));
    let mut inputs: HashMap<String, String> = entries(&doc["inputs"])
        .into_iter()
        .map(|(input, spec)| (input, text(&spec["default"])))
        .collect();
    for (k, v) in with {
        assert!(
            inputs.contains_key(k),
            "the workflow gives action {name} the input {k}, which it does not declare"
        );
        inputs.insert(k.clone(), v.clone());
    }
    let mut run = ShellRun::default();
    for step in doc["runs"]["steps"].as_vec().into_iter().flatten() {
        let script = text(&step["run"]);
        if script.is_empty() {
            continue;
        }
        let context = |path: &str| -> String {
            context_value(path, &inputs, &HashMap::new(), &HashMap::new(), job_env)
        };
        let mut env = job_env.clone();
        for (k, v) in entries(&step["env"]) {
            env.insert(k, template(&text(v), &context));
        }
        let given: Vec<(String, String)> = env
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix("SWITCHYARD_IN_")?.to_owned(), v.clone())))
            .collect();
        for (k, v) in given {
            env.remove(&format!("SWITCHYARD_IN_{k}"));
            if !v.is_empty() {
                env.insert(format!("SWITCHYARD_{k}"), v);
            }
        }
        let extra: Vec<String> = env
            .remove("SWITCHYARD_ARGS")
            .unwrap_or_default()
            .split_whitespace()
            .map(str::to_owned)
            .collect();
        let step_run = read_shell(&script, &env, Some(("/setup/run-step.sh", &extra)));
        run.invocations.extend(step_run.invocations);
        run.outputs.extend(step_run.outputs);
    }
    run
}

/// The invocations a shell script makes on its happy path (lookups left out).
pub(super) fn shell_steps(script: &str) -> Vec<Invocation> {
    read_shell(script, &HashMap::new(), None).invocations
}
