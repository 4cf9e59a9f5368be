//! What a check is: [`CheckDefinition`], parsed from a normalized JSON
//! object (Consul's HTTP API, or a TOML definition converted to JSON).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use shoal_protocol::record::CheckStatus;

use super::fields::Fields;
use super::kinds;
use crate::field_error::FieldError;

/// Shortest interval accepted: below it a check is a load generator.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Timeout when none is given (Consul's), cut to the interval if longer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// One health check, validated.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckDefinition {
    /// Unique on this agent (`CheckID` / `ID`; defaults to what the caller
    /// passes, e.g. `service:web`).
    pub id: String,
    pub name: String,
    pub notes: String,
    /// The service this check belongs to; `None` for a node check.
    pub service_id: Option<String>,
    pub kind: CheckKind,
    /// Time between two runs. For TTL checks: the TTL (nothing runs).
    pub interval: Duration,
    /// Longest a run may take before it counts as critical; never longer
    /// than `interval` (runs never overlap).
    pub timeout: Duration,
    /// Status before the first result (Consul's default: critical, so an
    /// instance is not served before it was seen healthy once).
    pub initial_status: CheckStatus,
    /// Consecutive non-critical results needed before the status follows
    /// them (0 or 1: at once).
    pub success_before_passing: u32,
    /// Consecutive critical results before the status turns warning.
    /// Defaults to `failures_before_critical`, as in Consul.
    pub failures_before_warning: u32,
    /// Consecutive critical results before the status turns critical.
    pub failures_before_critical: u32,
    /// Deregister the service once this check has been critical for longer.
    pub deregister_critical_service_after: Option<Duration>,
    /// Shoal: whether failing makes the service unhealthy (true) or only
    /// degraded (false).
    pub critical: bool,
}

/// What a check probes.
#[derive(Clone, Debug, PartialEq)]
pub enum CheckKind {
    /// An HTTP request: 2xx passing, 429 warning, anything else critical.
    Http {
        /// `http://` or `https://`.
        url: String,
        /// Upper-case HTTP method (default `GET`).
        method: String,
        headers: BTreeMap<String, Vec<String>>,
        body: String,
        /// How an `https://` URL's server is verified (unused for `http://`).
        tls: HttpTls,
    },
    /// A TCP connect to `host:port`.
    Tcp { address: String },
    /// A command (no shell): exit 0 passing, 1 warning, else critical.
    Exec { args: Vec<String> },
    /// The service reports its own status; critical when `ttl` runs out.
    Ttl { ttl: Duration },
    /// A measurement of this host against thresholds.
    System(SystemCheck),
    /// Passing while the cluster has at least `min_passing` passing
    /// instances of `service`.
    Dependency { service: String, min_passing: usize },
}

/// Consul's TLS fields of an HTTP check, used for `https://` URLs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HttpTls {
    /// `TLSSkipVerify` / `tls_skip_verify`: accept any certificate.
    pub skip_verify: bool,
    /// `TLSServerName` / `tls_server_name`: the SNI sent and the name the
    /// certificate must hold, instead of the URL's host.
    pub server_name: Option<String>,
}

/// Host measurements a system check can compare with thresholds.
#[derive(Clone, Debug, PartialEq)]
pub enum SystemCheck {
    /// Memory used, in percent of total.
    Memory(Thresholds),
    /// Space used on the file system holding `path`, in percent (as `df`).
    Disk {
        path: PathBuf,
        thresholds: Thresholds,
    },
    /// One-minute load average divided by the number of CPUs.
    Load(Thresholds),
    /// CPU busy time since the previous run, in percent of all CPUs.
    Cpu(Thresholds),
}

/// Levels at or above which a measurement is warning / critical.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub warning: Option<f64>,
    pub critical: Option<f64>,
}

impl Thresholds {
    /// The status of a measured `value`.
    pub fn status(&self, value: f64) -> CheckStatus {
        if self.critical.is_some_and(|level| value >= level) {
            CheckStatus::Critical
        } else if self.warning.is_some_and(|level| value >= level) {
            CheckStatus::Warning
        } else {
            CheckStatus::Passing
        }
    }
}

/// Consul check kinds shoal does not run: rejected rather than silently
/// ignored, or the service would look checked when it is not.
const UNSUPPORTED_KINDS: &[(&str, &str)] = &[
    ("grpc", "gRPC"),
    ("h2ping", "H2PING"),
    ("udp", "UDP"),
    ("aliasnode", "alias"),
    ("aliasservice", "alias"),
    ("osservice", "OS service"),
    ("dockercontainerid", "Docker"),
    ("script", "`Script` (shell string)"),
];

/// Fields Consul clients send that change nothing for the kinds we run
/// (`TLSSkipVerify` and `TLSServerName` are read by HTTP checks; other
/// kinds ignore them, as Consul's TCP and gRPC checks without TLS do).
const IGNORED: &[&str] = &[
    "tlsskipverify",
    "tlsservername",
    "outputmaxsize",
    "shell",
    "type",
    "grpcusetls",
    "h2pingusetls",
    "disableredirects",
];

impl CheckDefinition {
    /// Parses one check from a normalized object (see
    /// [`crate::registry::keys::normalize`]).
    ///
    /// `field` is the object's path for error messages (`"Check"`,
    /// `"Checks[1]"`, `"services[0].checks[0]"`); an upper-case path makes
    /// errors use Consul's field names, a lower-case one the TOML names. An
    /// empty `field` is a top-level API body: errors name `Interval`, and
    /// errors about the whole object have an empty `field`.
    /// `service_id` is the service the check is defined in, if any.
    /// `default_id` is the id when the definition has none (e.g.
    /// `service:web`); if it is empty, the name is the id, as in Consul.
    pub fn parse(
        value: &serde_json::Value,
        field: &str,
        service_id: Option<&str>,
        default_id: &str,
    ) -> Result<CheckDefinition, FieldError> {
        let mut fields = Fields::new(value, field)?;
        fields.ignore(IGNORED);
        for (key, what) in UNSUPPORTED_KINDS {
            if fields.is_set(key) {
                return Err(fields.error(key, format!("{what} checks are not supported by shoal")));
            }
        }
        if fields.bool("tcpusetls")? == Some(true) {
            return Err(fields.error(
                "tcpusetls",
                "TLS checks are not supported yet: use a plain tcp check",
            ));
        }

        let kind = kinds::parse_kind(&mut fields)?;
        let is_ttl = matches!(kind, CheckKind::Ttl { .. });

        let interval = match (&kind, fields.duration("interval")?) {
            (CheckKind::Ttl { ttl }, _) => *ttl,
            (_, Some(interval)) if interval < MIN_INTERVAL => {
                return Err(fields.error("interval", "must be at least 100ms"));
            }
            (_, Some(interval)) => interval,
            (_, None) => {
                return Err(fields.error(
                    "interval",
                    format!("required for {} checks (e.g. \"10s\")", kind.name()),
                ));
            }
        };
        let timeout = match fields.duration("timeout")? {
            Some(timeout) if timeout.is_zero() && !is_ttl => {
                return Err(fields.error("timeout", "must be longer than zero"));
            }
            // Runs never overlap, so a run can use at most one interval;
            // cutting (rather than rejecting) keeps clients that send
            // Consul's 10s default with a 5s interval working.
            Some(timeout) => timeout.min(interval),
            None => DEFAULT_TIMEOUT.min(interval),
        };

        let initial_status = match fields.string("status")? {
            None => CheckStatus::Critical,
            Some(text) => CheckStatus::parse(&text).ok_or_else(|| {
                fields.error(
                    "status",
                    format!("`{text}` is not one of passing, warning, critical"),
                )
            })?,
        };

        let success_before_passing = fields.count("successbeforepassing")?.unwrap_or(0);
        let failures_before_critical = fields.count("failuresbeforecritical")?.unwrap_or(0);
        let failures_before_warning = fields
            .count("failuresbeforewarning")?
            .unwrap_or(failures_before_critical);
        if failures_before_warning > failures_before_critical {
            return Err(fields.error(
                "failuresbeforewarning",
                format!(
                    "{failures_before_warning} is more than failures_before_critical \
                     ({failures_before_critical}): the check would turn critical first"
                ),
            ));
        }

        let deregister_critical_service_after =
            match fields.duration("deregistercriticalserviceafter")? {
                Some(after) if after.is_zero() => {
                    return Err(fields.error(
                        "deregistercriticalserviceafter",
                        "must be longer than zero (leave it out to never deregister)",
                    ));
                }
                other => other,
            };

        let service_id = match (service_id, fields.string("serviceid")?) {
            (Some(outer), Some(own)) if outer != own => {
                return Err(fields.error(
                    "serviceid",
                    format!("`{own}` differs from the service it is defined in (`{outer}`)"),
                ));
            }
            (Some(outer), _) => Some(outer.to_string()),
            (None, own) => own,
        };

        let name = fields.string("name")?;
        let id = match (fields.string("checkid")?, fields.string("id")?) {
            (Some(_), Some(_)) => {
                return Err(fields.error("checkid", "set either CheckID or ID, not both"));
            }
            (Some(id), None) | (None, Some(id)) => id,
            (None, None) if !default_id.is_empty() => default_id.to_string(),
            (None, None) => name.clone().ok_or_else(|| {
                fields.whole_error("a check needs an ID or a Name to be known by")
            })?,
        };
        let name = name.unwrap_or_else(|| match &service_id {
            Some(service) => format!("Service '{service}' check"),
            None => kind.default_name(),
        });
        let notes = fields.string("notes")?.unwrap_or_default();
        let critical = fields.bool("critical")?.unwrap_or(true);

        fields.finish()?;
        Ok(CheckDefinition {
            id,
            name,
            notes,
            service_id,
            kind,
            interval,
            timeout,
            initial_status,
            success_before_passing,
            failures_before_warning,
            failures_before_critical,
            deregister_critical_service_after,
            critical,
        })
    }

    /// The kind as gossiped in [`shoal_protocol::record::CheckRecord::kind`]:
    /// "http", "tcp", "exec", "ttl", "system" or "dependency".
    pub fn kind_name(&self) -> &'static str {
        self.kind.name()
    }

    /// Whether this check runs a program (`Args`), as the agent's user:
    /// where such checks may come from is restricted
    /// (`enable_script_checks`, `enable_local_script_checks`).
    pub fn runs_a_program(&self) -> bool {
        matches!(self.kind, CheckKind::Exec { .. })
    }
}

impl CheckKind {
    /// "http", "tcp", "exec", "ttl", "system" or "dependency".
    pub fn name(&self) -> &'static str {
        match self {
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Exec { .. } => "exec",
            CheckKind::Ttl { .. } => "ttl",
            CheckKind::System(_) => "system",
            CheckKind::Dependency { .. } => "dependency",
        }
    }

    fn default_name(&self) -> String {
        match self {
            CheckKind::Http { url, .. } => format!("HTTP check {url}"),
            CheckKind::Tcp { address } => format!("TCP check {address}"),
            CheckKind::Exec { args } => format!("Exec check {}", args[0]),
            CheckKind::Ttl { .. } => "TTL check".into(),
            CheckKind::System(SystemCheck::Memory(_)) => "Memory usage".into(),
            CheckKind::System(SystemCheck::Disk { path, .. }) => {
                format!("Disk usage {}", path.display())
            }
            CheckKind::System(SystemCheck::Load(_)) => "Load average".into(),
            CheckKind::System(SystemCheck::Cpu(_)) => "CPU usage".into(),
            CheckKind::Dependency { service, .. } => format!("Dependency on '{service}'"),
        }
    }
}

#[cfg(test)]
#[path = "definition_tests.rs"]
mod tests;
