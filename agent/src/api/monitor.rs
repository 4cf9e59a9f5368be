//! `GET /v1/agent/monitor?loglevel=…[&logjson]`: the agent's log as it is
//! written, as Consul's endpoint streams it: one line per log line, plain
//! text (or JSON lines with `?logjson`), chunked, until the client goes
//! away or the agent has left. The level may be more verbose than the
//! agent's `log_level`. Budgets are in [`crate::logging::monitor`]: a few
//! monitors at once (429 past them), and a bounded queue per client that
//! drops lines, and says how many, rather than grow or slow the agent.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Frame;
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::Level;

use super::{ApiError, ApiState, Query};
use crate::logging::monitor::{Format, Subscription, hub};

/// Consul's level names (any case); `warning` is taken for `warn`.
pub fn parse_level(text: &str) -> Option<Level> {
    match text.to_ascii_lowercase().as_str() {
        "trace" => Some(Level::TRACE),
        "debug" => Some(Level::DEBUG),
        "info" => Some(Level::INFO),
        "warn" | "warning" => Some(Level::WARN),
        "err" | "error" => Some(Level::ERROR),
        _ => None,
    }
}

pub async fn monitor(State(state): State<ApiState>, query: Query) -> Result<Response, ApiError> {
    let level = match query.get("loglevel") {
        None | Some("") => Level::INFO,
        Some(text) => parse_level(text).ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("loglevel: unknown level `{text}`; use trace, debug, info, warn or error"),
            )
        })?,
    };
    let format = if query.present("logjson") {
        Format::Json
    } else {
        Format::Text
    };
    let subscription = hub()
        .subscribe(level, format)
        .map_err(|error| ApiError::new(StatusCode::TOO_MANY_REQUESTS, error.to_string()))?;
    let content_type = match format {
        Format::Json => "application/x-ndjson",
        Format::Text => "text/plain; charset=utf-8",
    };
    let body = MonitorBody {
        subscription,
        format,
        left: Box::pin(state.left.clone().cancelled_owned()),
    };
    Ok((
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-store"),
        ],
        Body::new(body),
    )
        .into_response())
}

/// The streamed body: the client's lines, and a notice when some were
/// dropped because it read too slowly.
struct MonitorBody {
    subscription: Subscription,
    format: Format,
    /// Ends the stream once the agent has left the cluster.
    left: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl MonitorBody {
    fn dropped_notice(&self, dropped: u64) -> Bytes {
        let text = format!("monitor: {dropped} log lines dropped: this client read too slowly");
        match self.format {
            Format::Text => Bytes::from(format!("{text}\n")),
            Format::Json => Bytes::from(format!(
                "{}\n",
                serde_json::json!({ "level": "WARN", "fields": { "message": text, "dropped": dropped }, "target": "shoal_agent::api::monitor" })
            )),
        }
    }
}

impl hyper::body::Body for MonitorBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        let dropped = this.subscription.take_dropped();
        if dropped > 0 {
            return Poll::Ready(Some(Ok(Frame::data(this.dropped_notice(dropped)))));
        }
        match this.subscription.lines_rx.poll_recv(cx) {
            Poll::Ready(Some(line)) => Poll::Ready(Some(Ok(Frame::data(line)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.left.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}
