//! TCP probes: passing when a connection opens.

use tokio::net::TcpStream;

use super::{ProbeResult, error_chain};

/// Connects to `address` (`host:port`; names are resolved each run) and
/// closes the connection at once. The caller bounds it with the timeout.
pub async fn probe_tcp(address: &str) -> ProbeResult {
    match TcpStream::connect(address).await {
        Ok(stream) => {
            drop(stream);
            ProbeResult::passing(format!("TCP connect {address}: Success"))
        }
        Err(error) => {
            ProbeResult::critical(format!("TCP connect {address}: {}", error_chain(&error)))
        }
    }
}
