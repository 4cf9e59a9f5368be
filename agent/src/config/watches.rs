//! `[[watches]]`: run a handler when part of the cluster's state changes,
//! as `consul watch` does (run by [`crate::watches`]). Reloaded with the
//! rest of the file; errors name the key (`watches[1].type`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid, parse_duration};

/// Default time a handler may run before it is killed (or an HTTP post
/// may take before it is abandoned).
pub const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// Most watches in one configuration.
pub const MAX_WATCHES: usize = 256;

/// What a watch looks at, with Consul's type names.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchKind {
    /// One KV key (`/v1/kv/:key`): a KVPair, or `null` when missing.
    Key { key: String },
    /// Keys under a prefix (`/v1/kv/:prefix?recurse`): a list of KVPairs.
    KeyPrefix { prefix: String },
    /// Service names and tags (`/v1/catalog/services`).
    Services,
    /// Instances of one service (`/v1/health/service/:service`).
    Service {
        service: String,
        tag: Option<String>,
        passing: bool,
    },
    /// Checks (`/v1/health/state/:state`, or `/v1/health/checks/:service`).
    Checks {
        service: Option<String>,
        state: Option<String>,
    },
    /// Nodes (`/v1/catalog/nodes`).
    Nodes,
    /// Members as this agent sees them (`/v1/agent/members`).
    Members,
    /// User events (`/v1/event/list?name=`): each new one, once.
    Event { name: Option<String> },
}

impl WatchKind {
    /// Consul's name of the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            WatchKind::Key { .. } => "key",
            WatchKind::KeyPrefix { .. } => "keyprefix",
            WatchKind::Services => "services",
            WatchKind::Service { .. } => "service",
            WatchKind::Checks { .. } => "checks",
            WatchKind::Nodes => "nodes",
            WatchKind::Members => "members",
            WatchKind::Event { .. } => "event",
        }
    }
}

/// Where the watch's JSON goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum WatchHandler {
    /// A program and its arguments, run without a shell; the JSON on stdin.
    Exec(Vec<String>),
    /// An HTTP request with the JSON as body (plain `http://` only).
    Http {
        url: String,
        method: String,
        headers: BTreeMap<String, String>,
    },
}

/// One validated `[[watches]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WatchDefinition {
    pub kind: WatchKind,
    pub handler: WatchHandler,
    /// How long one handler run may take.
    pub timeout: Duration,
}

/// A `[[watches]]` entry as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWatch {
    #[serde(rename = "type")]
    kind: Option<String>,
    key: Option<String>,
    prefix: Option<String>,
    service: Option<String>,
    tag: Option<String>,
    passing: Option<bool>,
    state: Option<String>,
    name: Option<String>,
    handler: Option<Vec<String>>,
    http: Option<FileHttpHandler>,
    timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHttpHandler {
    url: Option<String>,
    method: Option<String>,
    headers: Option<BTreeMap<String, String>>,
}

/// Parses and validates `[[watches]]`.
pub(super) fn watch_definitions(
    items: Option<Vec<toml::Value>>,
) -> Result<Vec<WatchDefinition>, ConfigError> {
    let items = items.unwrap_or_default();
    if items.len() > MAX_WATCHES {
        return Err(invalid(
            "watches",
            format!("at most {MAX_WATCHES} watches, not {}", items.len()),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(index, item)| {
            let at = format!("watches[{index}]");
            let file = item
                .try_into::<FileWatch>()
                .map_err(|error| invalid(&at, error.message().to_string()))?;
            watch_definition(&at, file)
        })
        .collect()
}

fn watch_definition(at: &str, file: FileWatch) -> Result<WatchDefinition, ConfigError> {
    let kind = watch_kind(at, &file)?;
    let handler = match (file.handler, file.http) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                &format!("{at}.http"),
                "give either `handler` or `http`, not both",
            ));
        }
        (Some(args), None) => {
            if args.is_empty() || args[0].trim().is_empty() {
                return Err(invalid(
                    &format!("{at}.handler"),
                    "must name a program: [\"/path/to/program\", \"arg\", ...]",
                ));
            }
            WatchHandler::Exec(args)
        }
        (None, Some(http)) => http_handler(&format!("{at}.http"), http)?,
        (None, None) => {
            return Err(invalid(
                &format!("{at}.handler"),
                "missing: give `handler = [\"/path/to/program\"]` or `http = { url = \"http://...\" }`",
            ));
        }
    };
    let timeout = match file.timeout {
        Some(text) => parse_duration(&format!("{at}.timeout"), &text)?,
        None => DEFAULT_WATCH_TIMEOUT,
    };
    Ok(WatchDefinition {
        kind,
        handler,
        timeout,
    })
}

/// The watch type and its parameters; parameters of other types are
/// refused rather than ignored.
pub fn watch_kind_from(
    at: &str,
    kind: &str,
    params: &WatchParams,
) -> Result<WatchKind, ConfigError> {
    let allowed: &[&str] = match kind {
        "key" => &["key"],
        "keyprefix" => &["prefix"],
        "services" | "nodes" | "members" => &[],
        "service" => &["service", "tag", "passing"],
        "checks" => &["service", "state"],
        "event" => &["name"],
        other => {
            return Err(invalid(
                &format!("{at}.type"),
                format!(
                    "`{other}` is not one of key, keyprefix, services, service, checks, nodes, members, event"
                ),
            ));
        }
    };
    for (name, given) in params.given() {
        if given && !allowed.contains(&name) {
            return Err(invalid(
                &format!("{at}.{name}"),
                format!("not a parameter of a `{kind}` watch"),
            ));
        }
    }
    let required = |name: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|value| !value.is_empty())
            .ok_or_else(|| {
                invalid(
                    &format!("{at}.{name}"),
                    format!("missing: a `{kind}` watch needs it"),
                )
            })
    };
    Ok(match kind {
        "key" => WatchKind::Key {
            key: required("key", &params.key)?,
        },
        "keyprefix" => WatchKind::KeyPrefix {
            prefix: params.prefix.clone().unwrap_or_default(),
        },
        "services" => WatchKind::Services,
        "nodes" => WatchKind::Nodes,
        "members" => WatchKind::Members,
        "service" => WatchKind::Service {
            service: required("service", &params.service)?,
            tag: params.tag.clone(),
            passing: params.passing.unwrap_or(false),
        },
        "checks" => {
            if let Some(state) = &params.state
                && !["any", "passing", "warning", "critical"].contains(&state.as_str())
            {
                return Err(invalid(
                    &format!("{at}.state"),
                    format!("`{state}` is not one of any, passing, warning, critical"),
                ));
            }
            if params.service.is_some() && params.state.is_some() {
                return Err(invalid(
                    &format!("{at}.state"),
                    "give either `service` or `state`, not both",
                ));
            }
            WatchKind::Checks {
                service: params.service.clone(),
                state: params.state.clone(),
            }
        }
        _ => WatchKind::Event {
            name: params.name.clone().filter(|name| !name.is_empty()),
        },
    })
}

/// The parameters a watch may take (shared with `shoal watch`).
#[derive(Clone, Debug, Default)]
pub struct WatchParams {
    pub key: Option<String>,
    pub prefix: Option<String>,
    pub service: Option<String>,
    pub tag: Option<String>,
    pub passing: Option<bool>,
    pub state: Option<String>,
    pub name: Option<String>,
}

impl WatchParams {
    fn given(&self) -> [(&'static str, bool); 7] {
        [
            ("key", self.key.is_some()),
            ("prefix", self.prefix.is_some()),
            ("service", self.service.is_some()),
            ("tag", self.tag.is_some()),
            ("passing", self.passing.is_some()),
            ("state", self.state.is_some()),
            ("name", self.name.is_some()),
        ]
    }
}

fn watch_kind(at: &str, file: &FileWatch) -> Result<WatchKind, ConfigError> {
    let kind = file.kind.as_deref().ok_or_else(|| {
        invalid(
            &format!("{at}.type"),
            "missing: key, keyprefix, services, service, checks, nodes, members or event",
        )
    })?;
    let params = WatchParams {
        key: file.key.clone(),
        prefix: file.prefix.clone(),
        service: file.service.clone(),
        tag: file.tag.clone(),
        passing: file.passing,
        state: file.state.clone(),
        name: file.name.clone(),
    };
    watch_kind_from(at, kind, &params)
}

fn http_handler(at: &str, file: FileHttpHandler) -> Result<WatchHandler, ConfigError> {
    let url = file
        .url
        .ok_or_else(|| invalid(&format!("{at}.url"), "missing: http://host:port/path"))?;
    match url.parse::<hyper::Uri>() {
        Ok(uri) if uri.scheme_str() == Some("http") && uri.host().is_some() => {}
        _ => {
            return Err(invalid(
                &format!("{at}.url"),
                format!("`{url}` is not an http:// URL with a host (https is not supported)"),
            ));
        }
    }
    let method = file.method.unwrap_or_else(|| "POST".into()).to_uppercase();
    if !["POST", "PUT", "PATCH", "GET"].contains(&method.as_str()) {
        return Err(invalid(
            &format!("{at}.method"),
            format!("`{method}` is not one of POST, PUT, PATCH, GET"),
        ));
    }
    let headers = file.headers.unwrap_or_default();
    for (name, value) in &headers {
        let valid = hyper::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
            && hyper::header::HeaderValue::from_str(value).is_ok();
        if !valid {
            return Err(invalid(
                &format!("{at}.headers.{name}"),
                "not a valid HTTP header name and value",
            ));
        }
    }
    Ok(WatchHandler::Http {
        url,
        method,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<WatchDefinition>, String> {
        let table: toml::Table = toml::from_str(text).unwrap();
        let items = table
            .get("watches")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        watch_definitions(Some(items)).map_err(|error| error.to_string())
    }

    #[test]
    fn every_type_parses_with_its_parameters() {
        let watches = parse(
            r#"
            [[watches]]
            type = "service"
            service = "web"
            tag = "primary"
            passing = true
            handler = ["/bin/cat"]
            timeout = "5s"

            [[watches]]
            type = "event"
            name = "deploy"
            http = { url = "http://127.0.0.1:9000/hook", headers = { X-Env = "prod" } }
            "#,
        )
        .unwrap();
        assert_eq!(
            watches[0].kind,
            WatchKind::Service {
                service: "web".into(),
                tag: Some("primary".into()),
                passing: true
            }
        );
        assert_eq!(watches[0].timeout, Duration::from_secs(5));
        assert!(
            matches!(&watches[1].handler, WatchHandler::Http { method, .. } if method == "POST")
        );
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (r#"type = "nope""#, "watches[0].type"),
            (r#"type = "key""#, "watches[0].key"),
            (
                r#"type = "key"
                key = "a"
                service = "x""#,
                "watches[0].service",
            ),
            (r#"type = "services""#, "watches[0].handler"),
            (
                r#"type = "services"
                handler = []"#,
                "watches[0].handler",
            ),
            (
                r#"type = "services"
                http = { url = "https://example.test/" }"#,
                "watches[0].http.url",
            ),
            (
                r#"type = "checks"
                state = "sad"
                handler = ["/bin/true"]"#,
                "watches[0].state",
            ),
            (
                r#"type = "services"
                handler = ["/bin/true"]
                hander = 1"#,
                "watches[0]",
            ),
        ];
        for (body, key) in cases {
            let error = parse(&format!("[[watches]]\n{body}")).unwrap_err();
            assert!(error.contains(&format!("`{key}`")), "{body}: {error}");
        }
    }

    #[test]
    fn more_watches_than_the_limit_are_refused() {
        let one = "[[watches]]\ntype = \"services\"\nhandler = [\"/bin/true\"]\n";
        assert!(parse(&one.repeat(MAX_WATCHES)).is_ok());
        let error = parse(&one.repeat(MAX_WATCHES + 1)).unwrap_err();
        assert!(
            error.contains("`watches`") && error.contains("at most 256 watches, not 257"),
            "{error}"
        );
    }
}
