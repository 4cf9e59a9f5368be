//! The references can't drift from what they describe:
//!
//! - every key of `config/agent.toml` (the annotated config, its
//!   commented-out examples included) is listed in `docs/configuration.md`,
//!   and every key listed there is in `config/agent.toml`;
//! - every route the HTTP API registers (`agent/src/api/mod.rs`, and the
//!   refused ones of `agent/src/api/refused.rs`) is in `docs/http-api.md`,
//!   and every route its tables list is one the API registers;
//! - every metric the agent exposes (a `"shoal_…"` name in `agent/src`)
//!   is in `docs/metrics.md`, and every one listed there is exposed;
//! - the README stays a front page (at most 250 lines) and every page of
//!   `docs/` is linked from `docs/README.md`.
//!
//! A new config key or route that is not documented fails here, and so
//! does a documented one that is gone.

use std::collections::BTreeSet;
use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("read {path}: {error}"))
}

/// Tables whose keys are the user's own (tag names, HTTP header names),
/// listed as one key.
const FREE_FORM: &[&str] = &["tags", "watches.http.headers"];

/// `config/agent.toml` with its commented-out examples switched on: a line
/// `# key = value`, `# [table]` or `# [[array]]` (exactly one space after
/// the `#`, so the indented prose of the comments stays a comment).
fn uncomment_examples(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if is_key_line(rest) || is_table_line(rest) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_key_line(text: &str) -> bool {
    text.split_once(" = ").is_some_and(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    })
}

fn is_table_line(text: &str) -> bool {
    let name = text.trim_start_matches('[').trim_end_matches(']');
    text.starts_with('[')
        && text.ends_with(']')
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.')
}

/// Every key of `table` as a dotted path (`gossip.probe_interval`); the
/// tables of an array of tables share their array's name
/// (`watches.handler`).
fn dotted_keys(prefix: &str, value: &toml::Value, keys: &mut BTreeSet<String>) {
    match value {
        toml::Value::Table(table) if !FREE_FORM.contains(&prefix) => {
            for (key, value) in table {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                dotted_keys(&path, value, keys);
            }
        }
        toml::Value::Array(items)
            if items.iter().all(toml::Value::is_table) && !items.is_empty() =>
        {
            for item in items {
                dotted_keys(prefix, item, keys);
            }
        }
        _ => {
            keys.insert(prefix.to_string());
        }
    }
}

fn agent_toml_keys() -> BTreeSet<String> {
    let text = uncomment_examples(&repo_file("config/agent.toml"));
    let table: toml::Table = toml::from_str(&text)
        .unwrap_or_else(|error| panic!("config/agent.toml with its examples switched on: {error}"));
    let mut keys = BTreeSet::new();
    dotted_keys("", &toml::Value::Table(table), &mut keys);
    keys
}

/// The first cell of each row of every table in `markdown`.
fn first_cells(markdown: &str) -> Vec<&str> {
    markdown
        .lines()
        .filter_map(|line| line.trim().strip_prefix('|'))
        .filter_map(|row| row.split('|').next())
        .map(str::trim)
        .collect()
}

/// The `code` spans of `text`.
fn code_spans(text: &str) -> Vec<&str> {
    text.split('`').skip(1).step_by(2).collect()
}

/// The keys `docs/configuration.md` lists: the first cell of its table
/// rows, one `key` each.
fn documented_keys() -> BTreeSet<String> {
    let doc = repo_file("docs/configuration.md");
    first_cells(&doc)
        .into_iter()
        .filter_map(|cell| cell.strip_prefix('`')?.strip_suffix('`'))
        .filter(|key| {
            key.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.')
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_configuration_reference_lists_every_key_of_agent_toml_and_no_other() {
    let in_file = agent_toml_keys();
    let in_doc = documented_keys();
    // Guard against a parser that finds nothing (the test would pass).
    for key in [
        "node_name",
        "gossip.probe_interval",
        "dns.allow_clients",
        "watches.http.url",
    ] {
        assert!(
            in_file.contains(key),
            "config/agent.toml should have `{key}`: {in_file:?}"
        );
    }
    let undocumented: Vec<&String> = in_file.difference(&in_doc).collect();
    assert!(
        undocumented.is_empty(),
        "keys of config/agent.toml missing from docs/configuration.md (add a table row whose first cell is the key): {undocumented:?}"
    );
    let unknown: Vec<&String> = in_doc.difference(&in_file).collect();
    assert!(
        unknown.is_empty(),
        "keys listed in docs/configuration.md that config/agent.toml lacks (document them there, commented out if optional, or drop the row): {unknown:?}"
    );
}

/// A route or a documented path with its parameters made alike:
/// `GET /v1/kv/:key?raw` and `/v1/kv/{*key}` both become `/v1/kv/:`.
fn normalize_route(text: &str) -> Option<String> {
    let path = match text.split_once(' ') {
        Some((method, path)) if ["GET", "PUT", "POST", "DELETE"].contains(&method) => path,
        _ => text,
    };
    let path = path.split('?').next()?;
    if !path.starts_with('/') {
        return None;
    }
    let segments: Vec<&str> = path
        .split('/')
        .map(|segment| {
            if segment.starts_with(':') || segment.starts_with('{') || segment == "*" {
                ":"
            } else {
                segment
            }
        })
        .collect();
    Some(segments.join("/"))
}

/// The routes of `routes` whose normalized form is not in `known`.
fn not_among<'a, T: AsRef<str> + 'a>(
    routes: impl IntoIterator<Item = &'a T>,
    known: &BTreeSet<String>,
) -> Vec<&'a T> {
    routes
        .into_iter()
        .filter(|route| !normalize_route(route.as_ref()).is_some_and(|path| known.contains(&path)))
        .collect()
}

/// The string literal that opens `text` (after whitespace), if any.
fn leading_string(text: &str) -> Option<&str> {
    let rest = text.trim_start().strip_prefix('"')?;
    rest.split('"').next()
}

/// Every path the router registers.
fn registered_routes() -> BTreeSet<String> {
    let router = repo_file("agent/src/api/mod.rs");
    let mut routes = BTreeSet::new();
    for call in [".read(", ".write(", ".secret(", ".open(", ".keyring("] {
        for (at, _) in router.match_indices(call) {
            if let Some(path) = leading_string(&router[at + call.len()..]) {
                routes.insert(path.to_string());
            }
        }
    }
    let refused = repo_file("agent/src/api/refused.rs");
    let table = refused
        .split_once("pub const REFUSED")
        .and_then(|(_, rest)| rest.split_once("];"))
        .map(|(table, _)| table)
        .expect("agent/src/api/refused.rs has the REFUSED table");
    for literal in table.split('"').skip(1).step_by(2) {
        if literal.starts_with('/') {
            routes.insert(literal.to_string());
        }
    }
    routes
}

#[test]
fn the_http_reference_lists_every_route_and_no_other() {
    let routes = registered_routes();
    for route in [
        "/v1/agent/self",
        "/v1/kv/{*key}",
        "/v1/session/{*rest}",
        "/health/live",
    ] {
        assert!(
            routes.contains(route),
            "the router should have `{route}`: {routes:?}"
        );
    }
    let doc = repo_file("docs/http-api.md");
    let mentioned: BTreeSet<String> = code_spans(&doc)
        .into_iter()
        .filter_map(normalize_route)
        .collect();
    let undocumented = not_among(&routes, &mentioned);
    assert!(
        undocumented.is_empty(),
        "routes of agent/src/api/mod.rs missing from docs/http-api.md: {undocumented:?}"
    );
    let registered: BTreeSet<String> = routes.iter().filter_map(|r| normalize_route(r)).collect();
    let listed: Vec<&str> = first_cells(&doc)
        .into_iter()
        .flat_map(code_spans)
        .filter(|span| normalize_route(span).is_some())
        .collect();
    assert!(
        listed.len() > 40,
        "docs/http-api.md's tables list only {listed:?}"
    );
    let unknown = not_among(&listed, &registered);
    assert!(
        unknown.is_empty(),
        "routes listed in docs/http-api.md's tables that the API does not register: {unknown:?}"
    );
}

/// The README stays a front page (at most 250 lines) and links the docs'
/// index, ARCHITECTURE, CONTRIBUTING and CHANGELOG; the index links every
/// page in `docs/`, so none is orphaned.
#[test]
fn the_readme_is_a_front_page_and_every_doc_is_linked() {
    let readme = repo_file("README.md");
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines: keep it a front page (at most 250) and move the rest to docs/"
    );
    for link in [
        "(docs/README.md)",
        "(ARCHITECTURE.md)",
        "(CONTRIBUTING.md)",
        "(CHANGELOG.md)",
    ] {
        assert!(readme.contains(link), "README.md should link {link}");
    }
    let index = repo_file("docs/README.md");
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let mut orphans = Vec::new();
    for entry in std::fs::read_dir(&docs).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "README.md" && !index.contains(&format!("]({name}")) {
            orphans.push(name);
        }
    }
    assert!(
        orphans.is_empty(),
        "docs/README.md should link every page of docs/: {orphans:?}"
    );
}

/// The metric names the agent's code exposes: every `"shoal_…"` string
/// literal of `agent/src` outside tests (prefixes, which end in `_`, left
/// out).
fn exposed_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut folders = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/src")];
    while let Some(folder) = folders.pop() {
        for entry in std::fs::read_dir(&folder).expect("read agent/src") {
            let path = entry.expect("dir entry").path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                folders.push(path);
                continue;
            }
            if !name.ends_with(".rs") || name == "tests.rs" || name.ends_with("_tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read source");
            // Unit tests sit at the end of a file, after `#[cfg(test)]`.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default();
            for line in code
                .lines()
                .filter(|line| !line.trim_start().starts_with("//"))
            {
                for piece in line.split('"').skip(1).step_by(2) {
                    let is_name = piece.starts_with("shoal_")
                        && !piece.ends_with('_')
                        && piece
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
                    if is_name {
                        names.insert(piece.to_string());
                    }
                }
            }
        }
    }
    names
}

#[test]
fn the_metrics_reference_lists_every_metric_and_no_other() {
    let exposed = exposed_metrics();
    assert!(
        exposed.len() > 50,
        "too few metric names found in agent/src: {exposed:?}"
    );
    let reference = repo_file("docs/metrics.md");
    let documented: BTreeSet<String> = first_cells(&reference)
        .into_iter()
        .flat_map(code_spans)
        .filter(|span| span.starts_with("shoal_"))
        .map(str::to_string)
        .collect();
    let undocumented: Vec<_> = exposed.difference(&documented).collect();
    let gone: Vec<_> = documented.difference(&exposed).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "docs/metrics.md is out of step with the code: exposed but not documented {undocumented:?}; documented but not exposed {gone:?}"
    );
}
