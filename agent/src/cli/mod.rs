//! The `shoal` command line: `shoal agent` runs the daemon; the other
//! commands talk to a running agent over its HTTP API.
//!
//! - [`agent`]: `shoal agent` (flags, logging, signals, exit codes).
//! - [`members`]: `shoal members`.
//! - [`info`]: `shoal info`.
//! - [`leave`]: `shoal leave`.
//! - [`join`]: `shoal join ADDR...`; [`force_leave`]: `shoal force-leave`.
//! - [`services`]: `shoal services`, `shoal service`, `shoal checks`.
//! - [`register`]: `shoal register`, `shoal deregister`, `shoal maint`.
//! - [`kv`]: `shoal kv get|put|delete|ls|watch`.
//! - [`keyring`]: `shoal keygen`, `shoal keyring`.
//! - [`flags`]: `shoal flags ls|get|set|eval|rm`.
//! - [`reload`]: `shoal reload`.
//! - [`template`]: `shoal template render` (a dry run).
//! - [`watch`]: `shoal watch` (as `consul watch`).
//! - [`event`]: `shoal event` (user events).
//! - [`metrics`]: `shoal metrics`.
//! - [`monitor`]: `shoal monitor` (follows the agent's log).
//! - [`dns`]: `shoal dns lookup` (asks the agent's DNS interface).
//! - [`version`]: `shoal version` and `shoal --version`.
//! - [`catalog`]: `shoal catalog nodes|services|datacenters`.
//! - [`validate`]: `shoal validate FILE...` (config files, no agent needed).
//! - [`kv_transfer`]: `shoal kv export|import` (Consul's JSON format).
//!
//! Consul's habits hold: the global `--http-addr` and `--token` go before
//! or after the subcommand, `CONSUL_HTTP_ADDR`/`CONSUL_HTTP_TOKEN` are the
//! fallbacks after the `SHOAL_*` variables, and long options may be
//! written with one dash (`-recurse`), see [`consul_style_args`].

pub mod agent;
pub mod catalog;
pub mod dns;
pub mod event;
pub mod flags;
pub mod force_leave;
pub mod info;
pub mod join;
pub mod keyring;
pub mod kv;
pub mod kv_transfer;
pub mod leave;
pub mod members;
pub mod metrics;
pub mod monitor;
pub mod register;
pub mod reload;
pub mod rtt;
pub mod services;
pub mod template;
pub mod validate;
pub mod version;
pub mod watch;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::client::Client;

#[derive(Debug, Parser)]
#[command(
    name = "shoal",
    about = "A peer-to-peer service-discovery and config sidecar"
)]
pub struct Cli {
    /// Address of the agent's HTTP API: where `shoal agent` listens, and
    /// where the other commands find it (they fall back to
    /// CONSUL_HTTP_ADDR when SHOAL_HTTP_ADDR is unset) [default: 127.0.0.1:8500].
    #[arg(long, global = true, env = "SHOAL_HTTP_ADDR", value_name = "IP:PORT")]
    pub http_addr: Option<String>,

    /// API token for the commands that talk to the agent (`[acl] token` of
    /// the agent), sent as `X-Consul-Token` (falls back to
    /// CONSUL_HTTP_TOKEN when SHOAL_HTTP_TOKEN is unset).
    #[arg(
        long,
        global = true,
        env = "SHOAL_HTTP_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Agent(Box<agent::AgentArgs>),
    /// List the cluster's members as this agent sees them.
    Members(members::MembersArgs),
    /// Show this agent's identity and counters.
    Info(info::InfoArgs),
    /// Make the agent leave the cluster gracefully and stop.
    Leave,
    /// Join the cluster through these agents' gossip addresses (as
    /// `consul join`).
    Join(join::JoinArgs),
    /// Move a failed member to left on every agent, or remove it now with
    /// -prune (as `consul force-leave`).
    ForceLeave(force_leave::ForceLeaveArgs),
    /// List the cluster's services: passing and total instances, tags.
    Services(services::ServicesArgs),
    /// List the instances of one service: node, address, status, tags.
    Service(services::ServiceArgs),
    /// List this agent's checks.
    Checks(services::ChecksArgs),
    /// Register the services in a JSON or TOML file with this agent.
    Register(register::RegisterArgs),
    /// Deregister a service from this agent.
    Deregister(register::DeregisterArgs),
    /// Put this node or one of its services into maintenance, or out of it.
    Maint(register::MaintArgs),
    /// Read and write the replicated KV store.
    Kv(kv::KvArgs),
    /// Print a new random gossip encryption key.
    Keygen,
    /// Manage the cluster's gossip encryption keys.
    Keyring(keyring::KeyringArgs),
    /// Feature flags: list, show, set, evaluate, delete.
    Flags(flags::FlagsArgs),
    /// Make the agent load its config file again (as SIGHUP does).
    Reload,
    /// Templates: `shoal template render FILE` prints what FILE renders to now.
    Template(template::TemplateArgs),
    /// Run a program (or print JSON) when part of the cluster changes, as
    /// `consul watch`.
    Watch(watch::WatchArgs),
    /// Fire a user event on every agent (or those the filters match).
    Event(event::EventArgs),
    /// Show the agent's metrics (as /metrics serves them).
    Metrics(metrics::MetricsArgs),
    /// The round trip between two nodes estimated from their network
    /// coordinates (the second: the agent's own node), as `consul rtt`.
    Rtt(rtt::RttArgs),
    /// Ask the agent's DNS interface (`shoal dns lookup NAME [TYPE]`).
    Dns(dns::DnsArgs),
    /// Follow the agent's log, at a level of its own (as `consul monitor`).
    Monitor(monitor::MonitorArgs),
    /// Print the version, the commit it was built from, and the wire and
    /// data-dir formats this build speaks (also `shoal --version`).
    Version,
    /// The catalog as `consul catalog` shows it: nodes, services, datacenters.
    Catalog(catalog::CatalogArgs),
    /// Check config files without starting an agent (exit status 1 when one
    /// is invalid, with the file and the key).
    Validate(validate::ValidateArgs),
}

/// Output format of the inspection commands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Table,
    Json,
}

pub fn main() -> ExitCode {
    let cli = parse();
    if !matches!(cli.command, Command::Agent(_)) {
        // Inspection commands are piped into `head` and friends: a closed
        // pipe ends them quietly, as it does any Unix tool.
        // SAFETY: restoring the default disposition of a signal.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    let client = || {
        let http_addr = (cli.http_addr.clone())
            .filter(|addr| !addr.trim().is_empty())
            .or_else(|| consul_env("CONSUL_HTTP_ADDR"));
        Client::new(
            http_addr
                .as_deref()
                .unwrap_or(crate::config::DEFAULT_HTTP_ADDR),
        )
        .with_token(
            (cli.token.clone())
                .filter(|token| !token.trim().is_empty())
                .or_else(|| consul_env("CONSUL_HTTP_TOKEN")),
        )
    };
    let result = match &cli.command {
        Command::Agent(args) => return agent::run(args, cli.http_addr.clone()),
        Command::Validate(args) => return validate::run(args),
        Command::Catalog(args) => catalog::run(&client(), args),
        Command::Members(args) => members::run(&client(), args),
        Command::Info(args) => info::run(&client(), args),
        Command::Leave => leave::run(&client()),
        Command::Join(args) => join::run(&client(), args),
        Command::ForceLeave(args) => force_leave::run(&client(), args),
        Command::Services(args) => services::services(&client(), args),
        Command::Service(args) => services::service(&client(), args),
        Command::Checks(args) => services::checks(&client(), args),
        Command::Register(args) => register::register(&client(), args),
        Command::Deregister(args) => register::deregister(&client(), args),
        Command::Maint(args) => register::maint(&client(), args),
        Command::Kv(args) => kv::run(&client(), args),
        Command::Keygen => keyring::keygen(),
        Command::Keyring(args) => keyring::run(&client(), args),
        Command::Flags(args) => flags::run(&client(), args),
        Command::Reload => reload::run(&client()),
        Command::Template(args) => template::run(&client(), args),
        Command::Watch(args) => watch::run(&client(), args),
        Command::Event(args) => event::run(&client(), args),
        Command::Metrics(args) => metrics::run(&client(), args),
        Command::Dns(args) => dns::run(args),
        Command::Rtt(args) => rtt::run(&client(), args),
        Command::Monitor(args) => monitor::run(&client(), args),
        Command::Version => {
            print!("{}", version::text());
            Ok(())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("Error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// A Consul client variable, the fallback after the `SHOAL_*` one (an
/// empty value counts as unset, as it does for Consul).
fn consul_env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|value| !value.trim().is_empty())
}

/// Parses the command line; `--version` prints what `shoal version` does.
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let command = Cli::command().version(version::clap_text());
    let args = consul_style_args(&command, std::env::args_os());
    let matches = command.get_matches_from(args);
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

/// Consul's CLI spells long options with one dash (`-recurse`,
/// `-http-addr=...`); clap wants two. An argument `-name` or `-name=value`
/// whose `name` is a long option of some `shoal` command becomes `--name`;
/// everything else (values such as `-` for standard input, negative
/// numbers, anything after `--`) is left alone.
pub fn consul_style_args(
    command: &clap::Command,
    args: impl IntoIterator<Item = std::ffi::OsString>,
) -> Vec<std::ffi::OsString> {
    let mut longs = std::collections::BTreeSet::new();
    collect_long_options(command, &mut longs);
    let mut after_separator = false;
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else {
                return arg;
            };
            if after_separator || text == "--" {
                after_separator = true;
                return arg;
            }
            let Some(rest) = text.strip_prefix('-') else {
                return arg;
            };
            let name = rest.split_once('=').map_or(rest, |(name, _)| name);
            if name.len() > 1 && !name.starts_with('-') && longs.contains(name) {
                format!("-{text}").into()
            } else {
                arg
            }
        })
        .collect()
}

fn collect_long_options(command: &clap::Command, longs: &mut std::collections::BTreeSet<String>) {
    for arg in command.get_arguments() {
        longs.extend(
            arg.get_long_and_visible_aliases()
                .into_iter()
                .flatten()
                .map(str::to_string),
        );
    }
    for sub in command.get_subcommands() {
        collect_long_options(sub, longs);
    }
}

/// A JSON object of strings as `k=v,k=v` (empty for anything else).
pub fn key_values(object: &serde_json::Value) -> String {
    object
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// Prints rows as left-aligned columns separated by two spaces.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
