//! The Shoal agent and its command line.
//!
//! - [`config`]: the TOML file, flags and `SHOAL_*` variables, validated.
//! - [`daemon`]: the running agent: core loop, timers, UDP and TCP, config
//!   reload. Nothing imports it back: readers use [`handle`] and [`snapshot`].
//! - [`handle`]: [`handle::AgentHandle`], the one typed way in to the core
//!   loop, and the vocabulary it speaks.
//! - [`wan`]: what readers see of the WAN pool (a WAN member's second pool).
//! - [`snapshot`]: what readers see of the agent, published by the core loop;
//!   [`core_counters`]: the core loop's counters, published beside it.
//! - [`fault`]: test-only fault injection (`--fault-injection`).
//! - [`frame`]: TCP frames between agents (anti-entropy, forwarded reads).
//! - [`reload_handle`]: the API's side of config hot reload.
//! - [`checks`]: health checks: definitions, the status state machine, probes.
//! - [`duration`]: Go's duration syntax, used by config, checks and the API.
//! - [`field_error`]: [`field_error::FieldError`], a user's mistake in a check or
//!   service definition and where it is.
//! - [`dns`]: the DNS interface (Consul's names), on the agent's runtime.
//! - [`api`]: the HTTP API (Consul-compatible where Consul has the endpoint).
//! - [`catalog`]: cluster-wide service queries over the membership table
//!   (no JSON: Consul's shapes are in [`consul_json`]).
//! - [`consul_json`]: Consul's JSON shapes (nodes, services, checks, KV
//!   pairs, members, user events), shared by the API, watches and events.
//! - [`registry`]: services and checks registered on this agent.
//! - [`kv`]: the replicated KV store's timestamps and disk.
//! - [`flags`]: feature flags: schema and per-user decisions.
//! - [`template`]: `[[templates]]`, files rendered from the catalog and KV.
//! - [`events`]: user events: filters, the recent list, the counters.
//! - [`watches`]: `[[watches]]` and `shoal watch`: handlers run on change.
//! - [`reads`]: what a reader read (cluster, KV, events) and whether a new
//!   snapshot changed it: blocking queries, the cache, templates, watches.
//! - [`runners`]: one task per configured item, kept in step with reloads.
//! - [`command`]: running a program (process group, timeout, capped output)
//!   for exec checks, watch handlers, template commands and `shoal watch`.
//! - [`logging`]: the logger: stderr written off the caller's thread, and
//!   the monitors of `GET /v1/agent/monitor`.
//! - [`metrics`]: a leaf: the [`metrics::Counters`] trait each subsystem's
//!   counters implement, their registry, the histogram and the encoders of
//!   `/metrics`, `/v1/agent/metrics` and `Stats` of `/v1/agent/self`.
//! - [`process`]: this process's CPU, memory and fds, as `process_*` metrics.
//! - [`persist`]: the data directory and the persisted generation.
//! - [`uuid`]: UUIDs in text form (node IDs, event IDs).
//! - [`resident`]: keeps an idle agent's resident memory small.
//! - [`fuzzing`]: the fuzz targets' entry points (replayed by the tests).
//! - [`cli`]: the `shoal` command, one file per subcommand: `agent` (run
//!   the agent), the inspection commands (`members`, `info`, `services`,
//!   `service`, `checks`, `catalog`, `metrics`, `monitor`, `version`), the
//!   operations (`join`, `force-leave`, `leave`, `reload`, `maint`,
//!   `register`, `deregister`, `validate`), the data commands (`kv`,
//!   `flags`, `event`, `keygen`, `keyring`, `template`, `watch`, `dns`).
//! - [`client`]: the CLI's HTTP client.

pub mod api;
pub mod catalog;
pub mod checks;
pub mod cli;
pub mod client;
pub mod command;
pub mod config;
pub mod consul_json;
pub mod coordinates;
pub mod core_counters;
pub mod daemon;
pub mod dns;
pub mod duration;
pub mod events;
pub mod fault;
pub mod field_error;
pub mod flags;
pub mod frame;
pub mod fuzzing;
pub mod handle;
pub mod kv;
pub mod logging;
pub mod metrics;
pub mod persist;
pub mod process;
pub mod reads;
pub mod registry;
pub mod reload_handle;
pub mod resident;
pub mod runners;
pub mod snapshot;
pub mod template;
pub mod uuid;
pub mod wan;
pub mod watches;
