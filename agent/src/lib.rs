//! The Shoal agent and its command line.
//!
//! - [`config`]: the TOML file, flags and `SHOAL_*` variables, validated.
//! - [`daemon`]: the running agent: gossip loop, timers, UDP and TCP, config
//!   reload, and [`daemon::handle::AgentHandle`], the one way in to the loop.
//! - [`checks`]: health checks: definitions, the status state machine, probes.
//! - [`duration`]: Go's duration syntax, used by config, checks and the API.
//! - [`field_error`]: [`field_error::FieldError`], a user's mistake in a check or
//!   service definition and where it is.
//! - [`dns`]: the DNS interface (Consul's names), on its own thread.
//! - [`api`]: the HTTP API (Consul-compatible where Consul has the endpoint).
//! - [`catalog`]: cluster-wide service queries over the membership table
//!   (no JSON: Consul's shapes are in `api::consul_json`).
//! - [`registry`]: services and checks registered on this agent.
//! - [`kv`]: the replicated KV store's timestamps and disk.
//! - [`flags`]: feature flags: schema and per-user decisions.
//! - [`template`]: `[[templates]]`, files rendered from the catalog and KV.
//! - [`events`]: user events: filters, the recent list, Consul's JSON.
//! - [`watches`]: `[[watches]]` and `shoal watch`: handlers run on change.
//! - [`reads`]: what a reader read (cluster, KV, events) and whether a new
//!   snapshot changed it: blocking queries, the cache, templates, watches.
//! - [`runners`]: one task per configured item, kept in step with reloads.
//! - [`command`]: running a program (process group, timeout, capped output)
//!   for exec checks, watch handlers, template commands and `shoal watch`.
//! - [`logging`]: the logger: stderr written off the caller's thread, and
//!   the monitors of `GET /v1/agent/monitor`.
//! - [`metrics`]: counters and histograms, collected at scrape time for
//!   `/metrics` and `/v1/agent/metrics`.
//! - [`persist`]: the data directory and the persisted generation.
//! - [`resident`]: keeps an idle agent's resident memory small.
//! - [`fuzzing`]: the fuzz targets' entry points (replayed by the tests).
//! - [`cli`]: `shoal agent`, `shoal members`, `shoal info`, `shoal leave`.
//! - [`client`]: the CLI's HTTP client.

pub mod api;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod daemon;
pub mod dns;
pub mod duration;
pub mod events;
pub mod field_error;
pub mod flags;
pub mod fuzzing;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod persist;
pub mod reads;
pub mod registry;
pub mod resident;
pub mod runners;
pub mod template;
pub mod watches;
