//! `shoal watch`: `consul watch` on the command line. Follows one part of
//! the cluster's state with blocking queries against the local agent and
//! runs a program with Consul's JSON on stdin at start and on every
//! change; without a program, prints the JSON once and exits (as `consul
//! watch` does), or on every change with `--follow`.

use std::time::Duration;

use clap::Args;
use serde_json::Value;

use crate::client::{Client, ClientError};
use crate::command::{Program, RunError};
use crate::config::WatchKind;
use crate::config::watches::{WatchParams, watch_kind_from};

/// How long each blocking query waits (below the client's 15 s timeout).
const BLOCKING_WAIT: &str = "10s";
/// How often `members` (which has no blocking query) is polled.
const MEMBERS_POLL: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// key, keyprefix, services, service, checks, nodes, members or event.
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: String,
    /// `key`: the key.
    #[arg(long)]
    pub key: Option<String>,
    /// `keyprefix`: the prefix.
    #[arg(long)]
    pub prefix: Option<String>,
    /// `service` (required) and `checks`: the service.
    #[arg(long)]
    pub service: Option<String>,
    /// `service`: only instances with this tag.
    #[arg(long)]
    pub tag: Option<String>,
    /// `service`: only instances whose checks all pass.
    #[arg(long)]
    pub passing: bool,
    /// `checks`: any, passing, warning or critical.
    #[arg(long)]
    pub state: Option<String>,
    /// `event`: only events with this name.
    #[arg(long)]
    pub name: Option<String>,
    /// Without a handler: print every change instead of exiting after the
    /// first answer.
    #[arg(long)]
    pub follow: bool,
    /// The handler: a program and its arguments, after `--`.
    #[arg(last = true, value_name = "HANDLER")]
    pub handler: Vec<String>,
}

pub fn run(client: &Client, args: &WatchArgs) -> anyhow::Result<()> {
    let params = WatchParams {
        key: args.key.clone(),
        prefix: args.prefix.clone(),
        service: args.service.clone(),
        tag: args.tag.clone(),
        passing: args.passing.then_some(true),
        state: args.state.clone(),
        name: args.name.clone(),
    };
    let kind = watch_kind_from("--", &args.kind, &params)
        .map_err(|error| anyhow::anyhow!("{}", error.to_string().replace("`--.", "`--")))?;
    let mut index = 0u64;
    let mut last: Option<Value> = None;
    let mut last_event: Option<String> = None;
    let mut first = true;
    loop {
        let (next_index, body) = fetch(client, &kind, index)?;
        index = next_index;
        let body = match &kind {
            WatchKind::Event { .. } => {
                let events = body.as_array().cloned().unwrap_or_default();
                let start = last_event
                    .as_ref()
                    .and_then(|id| events.iter().position(|e| e["ID"] == **id))
                    .map_or(0, |at| at + 1);
                let new = events[start..].to_vec();
                if let Some(newest) = new.last() {
                    last_event = newest["ID"].as_str().map(str::to_string);
                }
                (first || !new.is_empty()).then_some(Value::Array(if first { events } else { new }))
            }
            _ => {
                let differs = first || last.as_ref() != Some(&body);
                last = Some(body.clone());
                differs.then_some(body)
            }
        };
        if let Some(body) = body {
            if args.handler.is_empty() {
                println!("{}", serde_json::to_string_pretty(&body)?);
                if !args.follow {
                    return Ok(());
                }
            } else if let Err(error) = run_handler(&args.handler, &body, index) {
                eprintln!("watch handler failed: {error}");
            }
        }
        first = false;
        if matches!(kind, WatchKind::Members) {
            // No blocking query on members: poll.
            std::thread::sleep(MEMBERS_POLL);
        }
    }
}

/// The endpoint a watch reads, as path and query.
fn endpoint(kind: &WatchKind) -> String {
    let encode = |text: &str| -> String {
        text.bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect()
    };
    match kind {
        WatchKind::Key { key } => format!("/v1/kv/{}?", encode(key)),
        WatchKind::KeyPrefix { prefix } => format!("/v1/kv/{}?recurse&", encode(prefix)),
        WatchKind::Services => "/v1/catalog/services?".into(),
        WatchKind::Service {
            service,
            tag,
            passing,
        } => {
            let mut path = format!("/v1/health/service/{}?", encode(service));
            if let Some(tag) = tag {
                path.push_str(&format!("tag={}&", encode(tag)));
            }
            if *passing {
                path.push_str("passing&");
            }
            path
        }
        WatchKind::Checks {
            service: Some(service),
            ..
        } => format!("/v1/health/checks/{}?", encode(service)),
        WatchKind::Checks { state, .. } => format!(
            "/v1/health/state/{}?",
            encode(state.as_deref().unwrap_or("any"))
        ),
        WatchKind::Nodes => "/v1/catalog/nodes?".into(),
        WatchKind::Members => "/v1/agent/members?".into(),
        WatchKind::Event { name } => format!(
            "/v1/event/list?name={}&",
            encode(name.as_deref().unwrap_or_default())
        ),
    }
}

/// One blocking query; the JSON as the agent's watches see it (a missing
/// key is `null`, an empty prefix `[]`).
fn fetch(client: &Client, kind: &WatchKind, index: u64) -> anyhow::Result<(u64, Value)> {
    let path = format!("{}index={index}&wait={BLOCKING_WAIT}", endpoint(kind));
    match client.get_json_with_index(&path) {
        Ok((index, body)) => {
            let body = match kind {
                WatchKind::Key { .. } => body.get(0).cloned().unwrap_or(Value::Null),
                _ => body,
            };
            Ok((index, body))
        }
        Err(ClientError::Status {
            status: 404,
            index: Some(index),
            ..
        }) if matches!(kind, WatchKind::Key { .. } | WatchKind::KeyPrefix { .. }) => {
            let empty = match kind {
                WatchKind::Key { .. } => Value::Null,
                _ => Value::Array(Vec::new()),
            };
            Ok((index, empty))
        }
        Err(error) => Err(error.into()),
    }
}

/// Runs the handler with the JSON on stdin and waits for it: never two at
/// once. It prints to the terminal and stays in its process group (a
/// Ctrl-C reaches it too), as `consul watch`'s handler does.
fn run_handler(handler: &[String], body: &Value, index: u64) -> Result<(), String> {
    let mut input = body.to_string().into_bytes();
    input.push(b'\n');
    let program = Program::new(handler)
        .env("CONSUL_INDEX", index.to_string())
        .env("SHOAL_INDEX", index.to_string())
        .stdin(&input)
        .attached_to_terminal();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a runtime for the handler: {error}"))?;
    let finished = runtime
        .block_on(program.run())
        .map_err(|error| match error {
            RunError::Empty => "no program".to_string(),
            error => error.to_string(),
        })?;
    if finished.status.success() {
        Ok(())
    } else {
        Err(format!("`{}` {}", program.name(), finished.status))
    }
}
