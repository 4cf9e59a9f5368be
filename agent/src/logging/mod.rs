//! The agent's logger: what goes to stderr (at `log_level`, as text or
//! JSON, written off the caller's thread by [`writer`]) and what the
//! monitors of `GET /v1/agent/monitor` follow ([`monitor`], each at its own
//! level). [`cluster`] writes the lines about members, local checks,
//! local health and seeds, from the published snapshots. Which lines an operator reads is documented in
//! docs/operations.md, "Reading the log".

pub mod checks;
pub mod cluster;
pub mod members;
pub mod monitor;
pub mod seeds;
pub mod writer;

use tracing::{Level, Metadata};
use tracing_subscriber::filter::{EnvFilter, FilterFn};
use tracing_subscriber::layer::{Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Registry, fmt, reload};

use crate::config::LogFormat;
use monitor::{Format, MonitorWriter};

/// Sets the log level (`trace`..`error`) of the running agent.
pub type LogControl = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The filter directive for a configured log level: foca's own logs stay at
/// `warn` unless asked for with `RUST_LOG`.
pub fn log_directive(level: &str) -> String {
    format!("{level},foca=warn")
}

/// Installs the logger; returns how to change its level on reload (`None`
/// when `RUST_LOG` sets the filter: it then wins over `log_level`).
pub fn init(log_level: &str, format: LogFormat) -> Option<LogControl> {
    let from_env = EnvFilter::try_from_default_env().ok();
    let pinned = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(log_directive(log_level)));
    let (filter, handle) = reload::Layer::<EnvFilter, Registry>::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let stderr: Box<dyn Layer<Registry> + Send + Sync> = match writer::NonBlockingStderr::spawn() {
        Ok(queue) => stderr_layer(format, ansi, queue, filter),
        // No thread for the writer: write in place rather than not at all.
        Err(_) => stderr_layer(format, ansi, std::io::stderr, filter),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(
            fmt::layer()
                .with_ansi(false)
                .with_writer(MonitorWriter(Format::Text))
                .with_filter(monitor_filter(Format::Text)),
        )
        .with(
            fmt::layer()
                .json()
                .with_writer(MonitorWriter(Format::Json))
                .with_filter(monitor_filter(Format::Json)),
        )
        .init();
    let control: LogControl = Box::new(move |level: &str| {
        handle
            .reload(EnvFilter::new(log_directive(level)))
            .map_err(|error| error.to_string())
    });
    (!pinned).then_some(control)
}

fn stderr_layer<W>(
    format: LogFormat,
    ansi: bool,
    writer: W,
    filter: reload::Layer<EnvFilter, Registry>,
) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = fmt::layer().with_ansi(ansi).with_writer(writer);
    match format {
        LogFormat::Json => layer.json().with_filter(filter).boxed(),
        LogFormat::Text => layer.with_filter(filter).boxed(),
    }
}

/// Lines some monitor of `format` wants: its level or above, with foca's
/// own lines at `warn` unless a monitor asked for `trace` (as on stderr,
/// see [`log_directive`]).
fn monitor_filter(format: Format) -> FilterFn<impl Fn(&Metadata<'_>) -> bool> {
    FilterFn::new(move |meta: &Metadata<'_>| {
        let hub = monitor::hub();
        let level = *meta.level();
        if meta.target().starts_with("foca") && level > Level::WARN {
            return hub.wants(format, Level::TRACE);
        }
        hub.wants(format, level)
    })
}
