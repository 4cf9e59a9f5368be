//! One task per template: render, then wait for a change to what that
//! render read, let the changes settle, render again.
//!
//! The task only waits and hands work out: the render runs on the blocking
//! pool (the agent's runtime is single-threaded and also runs the gossip
//! loop), and so do the file write and its fsyncs. The command is awaited
//! here, so one template never runs two commands at once, and a template
//! whose command hangs is held up (until `command_timeout`) alone.

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::functions::{self, ALL_A_TEMPLATE_READS, RenderOptions};
use super::{TemplateCounters, TemplateStats, output};
use crate::config::{TemplateConfig, TemplateSource};
use crate::reads::Reads;
use crate::snapshot::Snapshot;

/// How often a `source` file is checked for edits.
const SOURCE_POLL: Duration = Duration::from_secs(2);

/// Configured templates are the operator's: no fuel limit, a large output.
const CONFIG_RENDER: RenderOptions = RenderOptions {
    allow_env: true,
    fuel: None,
    max_output: 64 * 1024 * 1024,
};

/// What identifies a version of a source file.
type SourceStamp = Option<(SystemTime, u64)>;

pub(super) async fn template_loop(
    config: TemplateConfig,
    mut snapshot_rx: watch::Receiver<Arc<Snapshot>>,
    stats: Arc<TemplateStats>,
    stop: CancellationToken,
) {
    let name = config.name();
    let mut poll = tokio::time::interval(SOURCE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let watches_source = matches!(config.source, TemplateSource::File(_));
    let mut last_stamp = source_stamp(&config.source).await;
    loop {
        let rendered_at = snapshot_rx.borrow_and_update().clone();
        let reads = render_once(&config, &name, rendered_at.clone(), &stats, &stop).await;
        if stop.is_cancelled() {
            return;
        }
        // Wait for a change to what the render read, or an edit of the source.
        let mut seen = rendered_at;
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => return,
                changed = snapshot_rx.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = snapshot_rx.borrow_and_update().clone();
                    if reads.changed(&seen.indexes(), &now.indexes()) {
                        seen = now;
                        break;
                    }
                }
                _ = poll.tick(), if watches_source => {
                    let stamp = source_stamp(&config.source).await;
                    if stamp != last_stamp {
                        last_stamp = stamp;
                        break;
                    }
                }
            }
        }
        if !settle(&config, reads, seen, &mut snapshot_rx, &stop).await {
            return;
        }
    }
}

/// Quiescence: returns once no relevant change has come for `wait_min`,
/// or `wait_max` after the first change, whichever is sooner. `false`:
/// stopped.
async fn settle(
    config: &TemplateConfig,
    reads: Reads,
    mut seen: Arc<Snapshot>,
    snapshot_rx: &mut watch::Receiver<Arc<Snapshot>>,
    stop: &CancellationToken,
) -> bool {
    let deadline = Instant::now() + config.wait_max;
    let mut quiet_until = (Instant::now() + config.wait_min).min(deadline);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return false,
            _ = tokio::time::sleep_until(quiet_until) => return true,
            changed = snapshot_rx.changed() => {
                if changed.is_err() {
                    return false;
                }
                let now = snapshot_rx.borrow_and_update().clone();
                if reads.changed(&seen.indexes(), &now.indexes()) {
                    seen = now;
                    quiet_until = (Instant::now() + config.wait_min).min(deadline);
                }
            }
        }
    }
}

/// Renders, writes the file if the output changed, runs the command.
/// Returns what the next render waits on.
async fn render_once(
    config: &TemplateConfig,
    name: &str,
    snapshot: Arc<Snapshot>,
    stats: &TemplateStats,
    stop: &CancellationToken,
) -> Reads {
    let counters = &stats.counters;
    TemplateCounters::bump(&counters.renders);
    let rendered = match read_source(&config.source).await {
        Ok(source) => {
            tokio::task::spawn_blocking(move || functions::render(&source, snapshot, CONFIG_RENDER))
                .await
                .unwrap_or_else(|panic| {
                    Err(functions::RenderError {
                        message: format!("the renderer panicked: {panic}"),
                        reads: ALL_A_TEMPLATE_READS,
                    })
                })
        }
        Err(message) => Err(functions::RenderError {
            message,
            reads: Reads::default(),
        }),
    };
    let rendered = match rendered {
        Ok(rendered) => rendered,
        Err(error) => {
            fail(stats, name, &error.message, "template render failed");
            // Whatever changes next may fix it (a missing key appears).
            return ALL_A_TEMPLATE_READS;
        }
    };
    let now = now_rfc3339();
    stats.update(name, |state| {
        state.last_render = Some(now.clone());
        state.reads = rendered.reads.names();
    });
    let destination = config.destination.clone();
    let perms = config.perms;
    let output = rendered.output.into_bytes();
    let written =
        tokio::task::spawn_blocking(move || output::write_if_changed(&destination, &output, perms))
            .await
            .unwrap_or_else(|panic| Err(std::io::Error::other(panic.to_string())));
    match written {
        Ok(false) => {
            stats.update(name, |state| state.last_error = None);
            tracing::debug!(template = %name, "template rendered; the file is unchanged");
        }
        Ok(true) => {
            TemplateCounters::bump(&counters.writes);
            stats.update(name, |state| {
                state.last_error = None;
                state.last_write = Some(now.clone());
            });
            tracing::info!(template = %name, "template rendered and written");
            if let Some(command) = &config.command {
                let outcome =
                    output::run_command(name, command, config.command_timeout, stop, counters)
                        .await;
                stats.update(name, |state| state.last_command = Some(outcome));
            }
        }
        Err(error) => {
            let message = format!("cannot write {name}: {error}");
            fail(stats, name, &message, "template output not written");
            return ALL_A_TEMPLATE_READS;
        }
    }
    rendered.reads
}

fn fail(stats: &TemplateStats, name: &str, message: &str, what: &'static str) {
    TemplateCounters::bump(&stats.counters.errors);
    tracing::error!(template = %name, error = %message, "{what}; the previous file stays");
    stats.update(name, |state| state.last_error = Some(message.to_string()));
}

async fn read_source(source: &TemplateSource) -> Result<String, String> {
    match source {
        TemplateSource::Inline(text) => Ok(text.clone()),
        TemplateSource::File(path) => {
            let owned = path.clone();
            let limit = crate::config::MAX_TEMPLATE_BYTES;
            // At most one byte past the limit is read: a huge file (or a
            // device) named as the source costs no more than that.
            let bytes = tokio::task::spawn_blocking(move || {
                let mut bytes = Vec::new();
                std::fs::File::open(owned)
                    .and_then(|file| file.take(limit as u64 + 1).read_to_end(&mut bytes))
                    .map(|_| bytes)
            })
            .await
            .map_err(|error| error.to_string())
            .and_then(|read| read.map_err(|error| error.to_string()))
            .map_err(|error| format!("cannot read the source {}: {error}", path.display()))?;
            if bytes.len() > limit {
                return Err(format!(
                    "the source {} is more than {limit} bytes (the limit for a template)",
                    path.display()
                ));
            }
            String::from_utf8(bytes)
                .map_err(|_| format!("the source {} is not UTF-8", path.display()))
        }
    }
}

async fn source_stamp(source: &TemplateSource) -> SourceStamp {
    let TemplateSource::File(path) = source else {
        return None;
    };
    // Off the runtime: a stat can hang on a network file system.
    let owned = path.clone();
    let metadata = tokio::task::spawn_blocking(move || std::fs::metadata(owned))
        .await
        .ok()?
        .ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

pub(super) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_source_past_the_size_limit_is_refused_without_reading_it_whole() {
        // /dev/zero never ends: only the limit and one byte are read.
        let error = read_source(&TemplateSource::File("/dev/zero".into()))
            .await
            .unwrap_err();
        assert!(
            error.contains("/dev/zero") && error.contains("more than 1048576 bytes"),
            "{error}"
        );
    }
}
