//! Every environment variable a crate or app reads is in the README's
//! configuration table: the sources of `crates/`, `examples/` and this suite's
//! harness are searched for the names they read (`var("NAME")`,
//! `var_os("NAME")`, and the `"NAME" =>` arms of the `from_vars` parsers), and
//! each must have a row of its own (`| \`NAME\` |`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under `dir`'s `src` folders (tests, benches and examples of
/// a crate are not what it reads in production).
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(name.as_str(), "tests" | "benches" | "examples" | "target") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") && path.components().any(|c| c.as_os_str() == "src") {
            out.push(path);
        }
    }
}

/// Whether `s` looks like an environment variable's name.
fn is_var_name(s: &str) -> bool {
    s.len() >= 4
        && s.contains('_') | matches!(s, "PORT")
        && s.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && s.starts_with(|c: char| c.is_ascii_uppercase())
}

/// The names a source file reads.
fn names_read(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let reads_env =
        text.contains("env::var") || text.contains("from_vars") || text.contains("var(\"");
    if !reads_env {
        return names;
    }
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        // var("NAME"), var_os("NAME"), env::var("NAME")
        for opener in ["var(\"", "var_os(\""] {
            let mut rest = code;
            while let Some(at) = rest.find(opener) {
                rest = &rest[at + opener.len()..];
                if let Some(end) = rest.find('"') {
                    if is_var_name(&rest[..end]) {
                        names.insert(rest[..end].to_owned());
                    }
                }
            }
        }
        // "NAME" => ... and "NAME" if ... => (the parsers' match arms)
        let trimmed = code.trim_start();
        if let Some(rest) = trimmed.strip_prefix('"') {
            if let Some((name, after)) = rest.split_once('"') {
                let after = after.trim_start();
                if is_var_name(name)
                    && (after.starts_with("=>")
                        || after.starts_with("if ")
                        || after.starts_with('|'))
                {
                    names.insert(name.to_owned());
                }
            }
        }
    }
    names
}

#[test]
fn every_variable_read_is_in_the_readme_table() {
    let root = workspace();
    let mut files = Vec::new();
    for dir in ["crates", "examples", "tests"] {
        sources(&root.join(dir), &mut files);
    }
    assert!(files.len() > 20, "the sources were found: {}", files.len());
    let mut read = BTreeSet::new();
    for f in &files {
        for name in names_read(&std::fs::read_to_string(f).unwrap()) {
            read.insert(name);
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let rows: Vec<&str> = readme.lines().filter(|l| l.starts_with("| `")).collect();
    let missing: Vec<&String> = read
        .iter()
        .filter(|name| {
            let quoted = format!("`{name}`");
            !rows.iter().any(|row| {
                row.split(" | ")
                    .next()
                    .is_some_and(|cell| cell.contains(&quoted))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "read in the code but not in the README's configuration table: {missing:?}"
    );
    // The search finds what it must (else an empty result would pass).
    for known in [
        "REDIS_URL",
        "JOBS_PARTITIONS",
        "SESSION_DEGRADED",
        "CELERY_BROKER_URL",
        "PORT",
    ] {
        assert!(
            read.contains(known),
            "{known} was not found in the sources: {read:?}"
        );
    }
}

#[test]
fn the_search_sees_each_way_of_reading() {
    let text = r#"
        fn from_vars() { match k {
            "JOBS_LEASE_MS" => x,
            "JOBS_REDIS_URL" if !v.is_empty() => y,
            "fail-closed" => z,
        } }
        let a = std::env::var("SESSION_KEY");
        let b = std::env::var_os("CACHE_KEY_PREFIX"); // var("NOT_THIS") is a comment
    "#;
    let names: Vec<String> = names_read(text).into_iter().collect();
    assert_eq!(
        names,
        [
            "CACHE_KEY_PREFIX",
            "JOBS_LEASE_MS",
            "JOBS_REDIS_URL",
            "SESSION_KEY"
        ]
    );
}
