//! Entry points for the fuzz targets in `fuzz/` and for the replay of their
//! saved inputs in `tests/fuzz_regressions.rs`: the config file parser, the
//! service-registration JSON parser, the DNS query path ([`dns`]) and the
//! `?filter=` language ([`filter`]). Each takes arbitrary bytes and must
//! never panic.

mod dns;
mod filter;

use std::net::{IpAddr, SocketAddr};

pub use dns::dns;
pub use filter::filter;

use crate::config::{AgentConfig, FileConfig, Overrides};
use crate::registry::keys::normalize;
use crate::registry::service::ServiceDefinition;

/// The config path: the TOML file as `shoal agent --config` reads it, then
/// validation with the defaults of `--dev` (so no data dir is needed).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<FileConfig>(text) else {
        return;
    };
    // `host:port` addresses are resolved through DNS: keep the fuzzer off
    // the network (and fast) by skipping files that would look one up.
    let addresses = [&file.bind, &file.advertise, &file.http_addr]
        .into_iter()
        .flatten()
        .chain(file.join.iter().flatten());
    if addresses.into_iter().any(|text| would_resolve(text)) {
        return;
    }
    let overrides = Overrides {
        dev: true,
        ..Overrides::default()
    };
    let _ = AgentConfig::from_parts(file, &overrides);
}

/// Whether `config::parse_addr` would ask DNS about `text`.
fn would_resolve(text: &str) -> bool {
    let text = text.trim();
    text.parse::<SocketAddr>().is_err()
        && text.parse::<IpAddr>().is_err()
        && text
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The registration path of `PUT /v1/agent/service/register`: JSON,
/// normalized keys, then the service parser (which parses its checks).
pub fn service(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = ServiceDefinition::parse(&normalize(value), "service");
}
