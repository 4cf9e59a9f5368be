//! Metrics of the features beside the gossip loop: templates, watches and
//! user events. Each keeps its own atomic counters; these read them at
//! scrape time.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{Exposition, MetricSource};
use crate::events::EventCounters;
use crate::template::TemplateCounters;
use crate::watches::WatchCounters;

fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

impl MetricSource for TemplateCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_template_renders_total",
            "Renders of configured templates, failed ones included.",
            load(&self.renders),
        );
        out.counter(
            "shoal_template_errors_total",
            "Template renders that failed or whose file could not be written (the old file is kept).",
            load(&self.errors),
        );
        out.counter(
            "shoal_template_writes_total",
            "Template destination files written because the output changed.",
            load(&self.writes),
        );
        out.counter(
            "shoal_template_command_runs_total",
            "Template commands started.",
            load(&self.command_runs),
        );
        out.counter(
            "shoal_template_command_failures_total",
            "Template commands that exited non-zero, timed out or could not start.",
            load(&self.command_failures),
        );
        out.counter(
            "shoal_template_dry_runs_total",
            "Template dry runs through the API.",
            load(&self.api_renders),
        );
    }
}

impl MetricSource for WatchCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_watch_runs_total",
            "Watch handler runs started.",
            load(&self.runs),
        );
        out.counter(
            "shoal_watch_failures_total",
            "Watch handler runs that failed (non-zero exit, timeout, HTTP error).",
            load(&self.failures),
        );
        out.gauge(
            "shoal_watch_running",
            "Watch handlers running now.",
            load(&self.running) as f64,
        );
    }
}

impl MetricSource for EventCounters {
    fn collect(&self, out: &mut Exposition) {
        out.counter(
            "shoal_events_fired_total",
            "User events fired through this agent's API.",
            load(&self.fired),
        );
        out.counter(
            "shoal_events_listed_total",
            "User events delivered here whose filters matched this agent.",
            load(&self.listed),
        );
        out.counter(
            "shoal_events_filtered_out_total",
            "User events delivered here whose filters did not match this agent.",
            load(&self.filtered_out),
        );
        out.counter(
            "shoal_events_refused_total",
            "User events from peers refused as out of bounds.",
            load(&self.refused),
        );
        out.counter(
            "shoal_events_ignored_old_total",
            "User events fired before this agent started, or too old: not replayed.",
            load(&self.ignored_old),
        );
    }
}
