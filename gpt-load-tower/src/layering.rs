//! The modules every layer depends on depend on none of the layers.
//!
//! `context` (and the `channel` and `secret` it names) sits at the bottom; `telemetry` and
//! `error` use nothing above it, so any layer can fail with [`Error`](crate::Error) and record
//! metrics without the error type or the metrics knowing the key pool, the upstream registry or
//! any other layer. These tests read the sources and fail when a `use crate::…` (or an inline
//! `crate::…` path) in those modules reaches higher; doc links do not count, and neither do the
//! modules' own tests.

use std::{collections::BTreeSet, fs, path::Path};

/// Each low module, its source files, and the modules it may use.
const RULES: &[(&str, &[&str], &[&str])] = &[
    ("secret", &["secret.rs"], &[]),
    ("query", &["query.rs"], &[]),
    ("response_body", &["response_body.rs"], &[]),
    ("channel", &["channel.rs"], &["query", "secret"]),
    ("context", &["context.rs"], &["channel", "secret"]),
    ("telemetry", &["telemetry.rs"], &["context"]),
    (
        "error",
        &["error"],
        &[
            "error",
            "context",
            "channel",
            "secret",
            "telemetry",
            "response_body",
        ],
    ),
];

/// The files of `entry` (a file, or every `.rs` file under a directory), sorted.
fn sources(entry: &str) -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let path = root.join(entry);
    let mut files = Vec::new();
    if path.is_dir() {
        let mut dirs = vec![path];
        while let Some(dir) = dirs.pop() {
            for item in fs::read_dir(&dir).unwrap() {
                let item = item.unwrap().path();
                if item.is_dir() {
                    dirs.push(item);
                } else if item.extension().is_some_and(|e| e == "rs") {
                    files.push(item);
                }
            }
        }
    } else {
        files.push(path);
    }
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = fs::read_to_string(&f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f.strip_prefix(&root).unwrap().display().to_string(), text)
        })
        .collect()
}

/// The code of a file: comments and the `#[cfg(test)]` part at its end left out.
fn code(text: &str) -> String {
    let body = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    body.lines()
        .map(|line| line.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The first-level modules a piece of code names as `crate::module` or in `crate::{a, b::c}`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut used = BTreeSet::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        used.insert(ident(&group[i..]).to_owned());
                    }
                    _ => {}
                }
            }
        } else {
            used.insert(ident(rest).to_owned());
        }
    }
    used
}

#[test]
fn low_modules_use_nothing_above_them() {
    for (module, entries, allowed) in RULES {
        for entry in *entries {
            for (file, text) in sources(entry) {
                let used = crate_modules(&code(&text));
                let above: Vec<_> = used
                    .iter()
                    .filter(|m| !m.is_empty() && !allowed.contains(&m.as_str()))
                    .collect();
                assert!(
                    above.is_empty(),
                    "{file} ({module}) uses {above:?}; it may use only {allowed:?}"
                );
            }
        }
    }
}

#[test]
fn the_checker_sees_every_kind_of_path() {
    let sample = "use crate::{\n    context::{A, B},\n    keys::Slot,\n    telemetry,\n};\n\
                  fn f() { crate::upstream::pick(); }\n// crate::log in a comment\n";
    assert_eq!(
        crate_modules(&code(sample)).into_iter().collect::<Vec<_>>(),
        ["context", "keys", "telemetry", "upstream"]
    );
}
