//! The code base's own rules, checked by reading its sources (as rust-analyzer's tidy tests do),
//! so that what ARCHITECTURE.md states stays true:
//!
//! - no import cycle between the top-level modules of a crate;
//! - no source file over 600 lines, unless its first lines say why (`// tidy: long file: …`);
//! - the shared crate does no I/O;
//! - the appliance and the hub never depend on each other;
//! - only the store's thread writes the store: nothing in the appliance opens a database but
//!   through `sqlkit`, and the store's read-write opener is called by its thread's start and by
//!   restore (which builds a new store before any thread owns it).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const CRATES: &[&str] = &[
    "shared",
    "ssmix2",
    "serve",
    "sqlkit",
    "view",
    "edge",
    "hub",
    "provisioning",
    "tests",
];

/// The long-file marker, with its reason after it.
const LONG: &str = "// tidy: long file: ";
const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// A file without its `#[cfg(test)] mod tests { … }` blocks (tests may reach anywhere): each
/// block cut from its attribute to its closing brace, so code after one is still read. Braces in
/// strings and comments inside a test block could end it early; that only reads more code.
fn without_tests(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("#[cfg(test)]\nmod tests") {
        out.push_str(&rest[..i]);
        let block = &rest[i..];
        let Some(open) = block.find('{') else {
            return out;
        };
        let mut depth = 0usize;
        let mut end = block.len();
        for (k, c) in block[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + k + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &block[end..];
    }
    out.push_str(rest);
    out
}

/// The names `crate::…` paths in `s` start with: `crate::a::b`, `crate::{a, b::c}`.
fn crate_refs(s: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = s;
    while let Some(i) = rest.find("crate::") {
        // Not `some_crate::` (an identifier ending in "crate").
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            // The first name of each item at the group's own depth: `{a::{b, c}, d}` is a and d.
            let (mut depth, mut at_start) = (0usize, true);
            let mut name = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        if !name.is_empty() {
                            out.insert(std::mem::take(&mut name));
                        }
                        at_start = true
                    }
                    c if at_start && depth == 0 && (c.is_alphanumeric() || c == '_') => {
                        name.push(c)
                    }
                    _ if at_start && depth == 0 && !name.is_empty() => {
                        out.insert(std::mem::take(&mut name));
                        at_start = false;
                    }
                    _ => {}
                }
            }
            if !name.is_empty() {
                out.insert(name);
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            out.insert(name);
        }
    }
    out
}

/// The top-level modules of a crate's `src` and what each refers to among the others.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let is_module = |n: &str| src.join(format!("{n}.rs")).exists() || src.join(n).is_dir();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        if first == "lib.rs" || first == "main.rs" || first == "bin" {
            continue;
        }
        let m = first.trim_end_matches(".rs").to_string();
        let text = std::fs::read_to_string(&f).unwrap();
        for r in crate_refs(&without_tests(&text)) {
            if r != m && is_module(&r) {
                g.entry(m.clone()).or_default().insert(r);
            }
        }
    }
    g
}

/// A cycle through `start`, if there is one (depth-first search).
fn cycle_from(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                path.push(next.clone());
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(g, start, start, &mut path, &mut BTreeSet::new()).then_some(path)
}

#[test]
fn no_import_cycle_between_the_top_level_modules_of_any_crate() {
    let mut cycles = Vec::new();
    for c in CRATES {
        let g = module_graph(&root().join(c).join("src"));
        if ["edge", "hub"].contains(c) {
            // Not a vacuous pass: these crates' modules do use one another.
            assert!(g.len() > 10, "{c}: only {} modules read", g.len());
        }
        for m in g.keys() {
            if let Some(cycle) = cycle_from(&g, m) {
                cycles.push(format!("{c}: {}", cycle.join(" -> ")));
                break;
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_check_finds_a_cycle_and_reads_grouped_imports() {
    let refs = crate_refs(
        "use crate::{a, b::c};\nuse crate::d::e; my_crate::f; x = crate::g(1);\nuse crate::{h::{i, j}, k};",
    );
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["a", "b", "d", "g", "h", "k"]
    );
    let mut g = BTreeMap::new();
    g.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    g.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    g.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycle_from(&g, "a").unwrap(), ["a", "b", "c", "a"]);
    g.get_mut("c").unwrap().clear();
    assert_eq!(cycle_from(&g, "a"), None);
}

#[test]
fn no_source_file_is_over_600_lines_without_a_reason_at_its_top() {
    let mut long = Vec::new();
    let mut files = Vec::new();
    for c in CRATES.iter().chain(&["fuzz"]) {
        rust_files(&root().join(c), &mut files);
    }
    assert!(files.len() > 100, "only {} source files found", files.len());
    for f in files {
        if f.components().any(|c| c.as_os_str() == "target") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let lines = text.lines().count();
        let reason = text
            .lines()
            .take(5)
            .find_map(|l| l.strip_prefix(LONG))
            .filter(|r| r.trim().len() >= 10);
        if lines > MAX_LINES && reason.is_none() {
            long.push(format!(
                "{} ({lines} lines)",
                f.strip_prefix(root()).unwrap().display()
            ));
        }
    }
    assert!(
        long.is_empty(),
        "split these into modules, or say why not in a first line `{LONG}<reason>`:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_shared_crate_does_no_io() {
    // The clock is read (shared::time::now), nothing else of the outside world.
    const IO: &[&str] = &[
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "std::os",
        "std::io::std",
        "std::{",
        "File::",
        "tokio",
        "print!",
        "println!",
        "dbg!",
        ".exists()",
        "metadata(",
    ];
    let mut files = Vec::new();
    rust_files(&root().join("shared/src"), &mut files);
    assert!(files.len() > 5, "the shared crate's sources were not found");
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for needle in IO {
            if without_tests(&text).contains(needle) {
                found.push(format!("{}: {needle}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "I/O in the shared crate:\n{}",
        found.join("\n")
    );
    let manifest = std::fs::read_to_string(root().join("shared/Cargo.toml")).unwrap();
    assert!(
        !manifest.contains("dependencies."),
        "shared/Cargo.toml: list dependencies in [dependencies], one a line"
    );
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    for line in deps.lines().filter(|l| !l.trim().is_empty()) {
        let name = line.split(['.', ' ', '=']).next().unwrap();
        assert!(
            ["ring", "zstd", "serde"].contains(&name),
            "the shared crate takes a new dependency {name:?}: it must stay free of I/O"
        );
    }
}

#[test]
fn every_http_request_goes_through_the_one_client_and_every_listener_through_serve() {
    // A client or an accept loop of its own is written with these; `serve` holds the only ones.
    // Matched with the whitespace taken out, so `client :: conn` or a split line is caught too.
    const OWN: &[&str] = &[
        "client::conn",
        "client::legacy",
        "hyper::client",
        "hyper_util::client",
        "TlsConnector",
        "HttpsConnector",
        "server::conn",
        "TcpStream::connect",
        "TcpListener::accept",
        ".accept(",
        "poll_accept",
        "tokio_rustls",
        "hyper_rustls",
    ];
    let mut files = Vec::new();
    for dir in [
        "edge/src",
        "hub/src",
        "view/src",
        "provisioning/src",
        "sqlkit/src",
        "shared/src",
        "ssmix2/src",
    ] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 50, "the sources were not found");
    let mut found = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        let code: String = without_tests(&text)
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        for needle in OWN {
            if code.contains(needle) {
                found.push(format!("{}: {needle}", f.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "use serve::client and serve::serve instead:\n{}",
        found.join("\n")
    );
    let client = std::fs::read_to_string(root().join("serve/src/client.rs")).unwrap();
    assert!(client.contains("client::legacy") && client.contains("HttpsConnector"));
    // Nor a crate of its own: only `serve` takes the TLS and client crates, and no HTTP client
    // crate is taken at all (the tests' own crate may drive servers as it likes).
    const CLIENTS: &[&str] = &["reqwest", "ureq", "isahc", "surf", "attohttpc", "curl"];
    for krate in [
        "edge",
        "hub",
        "view",
        "provisioning",
        "sqlkit",
        "shared",
        "ssmix2",
        "serve",
    ] {
        let manifest = std::fs::read_to_string(root().join(krate).join("Cargo.toml")).unwrap();
        let names: Vec<&str> = manifest
            .lines()
            .filter_map(|l| l.split(['.', ' ', '=']).next())
            .collect();
        for dep in CLIENTS {
            assert!(!names.contains(dep), "{krate} depends on {dep}");
        }
        if krate != "serve" {
            for dep in ["hyper-rustls", "tokio-rustls"] {
                assert!(
                    !names.contains(&dep),
                    "{krate} depends on {dep}: connect through serve::client"
                );
            }
            assert!(
                !manifest.contains("client-legacy"),
                "{krate} turns on hyper-util's client"
            );
        }
    }
}

#[test]
fn the_appliance_and_the_hub_never_depend_on_each_other() {
    for (me, other, lib) in [
        ("edge", "tsunagi-hub", "hub"),
        ("hub", "tsunagi-edge", "edge"),
    ] {
        let manifest = std::fs::read_to_string(root().join(me).join("Cargo.toml")).unwrap();
        assert!(!manifest.contains(other), "{me}/Cargo.toml names {other}");
        let mut files = Vec::new();
        rust_files(&root().join(me).join("src"), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            assert!(
                !text.contains(&format!("use {lib}::")) && !text.contains(&format!(" {lib}::")),
                "{} refers to the {lib} crate",
                f.display()
            );
        }
    }
}

#[test]
fn only_the_store_thread_writes_the_store() {
    let mut files = Vec::new();
    rust_files(&root().join("edge/src"), &mut files);
    for f in files {
        let rel = f
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(&f).unwrap();
        let code = without_tests(&text);
        for opener in ["Connection::open(", "open_with_flags"] {
            assert!(
                !code.contains(opener),
                "{rel} opens a database itself ({opener}): open it through sqlkit"
            );
        }
        let writes = code.contains("store::open(")
            || code.contains("use crate::store::open")
            || code.contains("DB_FILE")
            || (rel == "edge/src/store/mod.rs" && code.contains("pub fn open("));
        assert!(
            !writes || ["edge/src/store/mod.rs", "edge/src/restore.rs"].contains(&rel.as_str()),
            "{rel} opens the store read-write: send the work to the store's thread (store::Handle)"
        );
    }
}
