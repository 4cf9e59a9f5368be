use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::registry::keys::normalize;

fn parse(value: Value) -> Result<CheckDefinition, FieldError> {
    CheckDefinition::parse(&normalize(value), "Check", Some("web"), "service:web")
}

/// The error's field and message, for compact assertions.
fn error(value: Value) -> (String, String) {
    let error = parse(value).expect_err("should be rejected");
    (error.field, error.message)
}

fn toml_value(text: &str) -> Value {
    let table: toml::Table = toml::from_str(text).unwrap();
    normalize(serde_json::to_value(table).unwrap())
}

#[test]
fn consul_http_check_in_camel_case() {
    let check = parse(json!({
        "CheckID": "web-http",
        "Name": "web health",
        "Notes": "front page",
        "HTTP": "http://127.0.0.1:8080/health",
        "Method": "post",
        "Header": {"X-Token": ["a", "b"], "Accept": "text/plain"},
        "Body": "{}",
        "Interval": "10s",
        "Timeout": "1s",
        "Status": "passing",
        "SuccessBeforePassing": 2,
        "FailuresBeforeCritical": 3,
        "DeregisterCriticalServiceAfter": "1m30s",
        "TLSSkipVerify": true,
        "Critical": false
    }))
    .unwrap();
    assert_eq!(check.id, "web-http");
    assert_eq!(check.name, "web health");
    assert_eq!(check.notes, "front page");
    assert_eq!(check.service_id.as_deref(), Some("web"));
    assert_eq!(
        check.kind,
        CheckKind::Http {
            url: "http://127.0.0.1:8080/health".into(),
            method: "POST".into(),
            headers: [
                ("Accept".to_string(), vec!["text/plain".to_string()]),
                ("X-Token".to_string(), vec!["a".into(), "b".into()]),
            ]
            .into(),
            body: "{}".into(),
            tls: HttpTls {
                skip_verify: true,
                server_name: None,
            },
        }
    );
    assert_eq!(check.interval, Duration::from_secs(10));
    assert_eq!(check.timeout, Duration::from_secs(1));
    assert_eq!(check.initial_status, CheckStatus::Passing);
    assert_eq!(check.success_before_passing, 2);
    assert_eq!(check.failures_before_critical, 3);
    // Consul: failures_before_warning defaults to failures_before_critical.
    assert_eq!(check.failures_before_warning, 3);
    assert_eq!(
        check.deregister_critical_service_after,
        Some(Duration::from_secs(90))
    );
    assert!(!check.critical);
    assert_eq!(check.kind_name(), "http");
}

#[test]
fn snake_case_and_defaults() {
    let check = parse(json!({"tcp": "localhost:5432", "interval": "5s", "failures_before_warning": 1, "failures_before_critical": 2})).unwrap();
    assert_eq!(check.id, "service:web");
    assert_eq!(check.name, "Service 'web' check");
    assert_eq!(check.initial_status, CheckStatus::Critical);
    // The default timeout (10s) is cut to the interval.
    assert_eq!(check.timeout, Duration::from_secs(5));
    assert_eq!(check.failures_before_warning, 1);
    assert!(check.critical);
    assert_eq!(check.kind_name(), "tcp");
}

#[test]
fn timeout_longer_than_interval_is_cut() {
    let check = parse(json!({"TCP": "a:1", "Interval": "2s", "Timeout": "10s"})).unwrap();
    assert_eq!(check.timeout, Duration::from_secs(2));
}

#[test]
fn toml_definitions_parse_through_the_same_path() {
    let value = toml_value(
        r#"
        name = "disk"
        interval = "30s"
        disk = { path = "/var", warning = 85, critical = 95.5 }
        "#,
    );
    let check = CheckDefinition::parse(&value, "checks[0]", None, "").unwrap();
    assert_eq!(
        check.id, "disk",
        "a node check without an id is known by its name"
    );
    assert_eq!(check.service_id, None);
    assert_eq!(
        check.kind,
        CheckKind::System(SystemCheck::Disk {
            path: "/var".into(),
            thresholds: Thresholds {
                warning: Some(85.0),
                critical: Some(95.5)
            }
        })
    );

    let value = toml_value(
        r#"
        script_args = ["/bin/check", "--quick"]
        interval = "1m"
        timeout = "1.5s"
        "#,
    );
    let check = CheckDefinition::parse(&value, "services[0].checks[1]", Some("api"), "x").unwrap();
    assert_eq!(
        check.kind,
        CheckKind::Exec {
            args: vec!["/bin/check".into(), "--quick".into()]
        }
    );
    assert_eq!(check.timeout, Duration::from_millis(1500));
}

#[test]
fn every_kind_parses() {
    let ttl = parse(json!({"TTL": "30s"})).unwrap();
    assert_eq!(
        ttl.kind,
        CheckKind::Ttl {
            ttl: Duration::from_secs(30)
        }
    );
    assert_eq!(
        ttl.interval,
        Duration::from_secs(30),
        "TTL needs no interval"
    );

    let memory =
        parse(json!({"Memory": {"Warning": 80, "Critical": 95}, "Interval": "10s"})).unwrap();
    assert_eq!(memory.kind_name(), "system");
    let load =
        parse(json!({"Load": {"Warning": 4.0, "Critical": 8.0}, "Interval": "10s"})).unwrap();
    assert_eq!(
        load.kind,
        CheckKind::System(SystemCheck::Load(Thresholds {
            warning: Some(4.0),
            critical: Some(8.0)
        }))
    );
    let cpu = parse(json!({"Cpu": {"Critical": 95}, "Interval": "10s"})).unwrap();
    assert_eq!(cpu.kind_name(), "system");
    let disk = parse(json!({"Disk": {"Warning": 85}, "Interval": "10s"})).unwrap();
    assert!(matches!(
        disk.kind,
        CheckKind::System(SystemCheck::Disk { ref path, .. }) if path.to_str() == Some("/")
    ));
    let dependency =
        parse(json!({"Dependency": {"Service": "db", "MinPassing": 2}, "Interval": "5s"})).unwrap();
    assert_eq!(
        dependency.kind,
        CheckKind::Dependency {
            service: "db".into(),
            min_passing: 2
        }
    );
    let args = parse(json!({"Args": ["true"], "Interval": "5s"})).unwrap();
    assert_eq!(args.kind_name(), "exec");
}

#[test]
fn go_clients_empty_fields_count_as_absent() {
    let check = parse(json!({
        "TCP": "a:1", "HTTP": "", "Interval": "5s", "Timeout": "", "ScriptArgs": null,
        "GRPC": "", "GRPCUseTLS": false, "Status": "", "Notes": "", "TCPUseTLS": false
    }))
    .unwrap();
    assert_eq!(check.kind_name(), "tcp");
}

#[test]
fn https_checks_take_consuls_tls_fields() {
    let check = parse(json!({
        "HTTP": "https://db.internal:8443/health", "Interval": "5s",
        "TLSSkipVerify": true, "TLSServerName": "db.example"
    }))
    .unwrap();
    let CheckKind::Http { url, tls, .. } = check.kind else {
        panic!("not an HTTP check: {:?}", check.kind);
    };
    assert_eq!(url, "https://db.internal:8443/health");
    assert_eq!(
        tls,
        HttpTls {
            skip_verify: true,
            server_name: Some("db.example".into())
        }
    );
    // Bad values name the field, in the surface's spelling.
    let (field, message) =
        error(json!({"HTTP": "https://x/", "Interval": "5s", "TLSServerName": "a b"}));
    assert_eq!(field, "Check.TLSServerName");
    assert!(message.contains("`a b`"), "{message}");
    let (field, _) = error(json!({"HTTP": "https://x/", "Interval": "5s", "TLSSkipVerify": "yes"}));
    assert_eq!(field, "Check.TLSSkipVerify");
    let (field, message) = error(json!({"HTTP": "ftp://x/", "Interval": "5s"}));
    assert_eq!(field, "Check.HTTP");
    assert!(message.contains("https://"), "{message}");
}

#[test]
fn unsupported_kinds_are_named() {
    for (key, field) in [
        ("GRPC", "Check.GRPC"),
        ("H2PING", "Check.H2PING"),
        ("UDP", "Check.UDP"),
        ("AliasService", "Check.AliasService"),
        ("OSService", "Check.OSService"),
        ("DockerContainerID", "Check.DockerContainerID"),
    ] {
        let (got, message) = error(json!({key: "x", "Interval": "5s"}));
        assert_eq!(got, field);
        assert!(message.contains("not supported by shoal"), "{message}");
    }
}

#[test]
fn errors_name_the_field() {
    let cases = [
        (
            json!({"TCP": "a:1", "Interval": "5s", "Bogus": 1}),
            "Check.bogus",
            "unknown field",
        ),
        (json!({"Interval": "5s"}), "Check", "no check kind"),
        (
            json!({"TCP": "a:1", "TTL": "5s"}),
            "Check",
            "more than one check kind (tcp, ttl)",
        ),
        (
            json!({"TCP": "a:1"}),
            "Check.Interval",
            "required for tcp checks",
        ),
        (
            json!({"TCP": "a:1", "Interval": "50ms"}),
            "Check.Interval",
            "at least 100ms",
        ),
        (
            json!({"TCP": "a:1", "Interval": "10"}),
            "Check.Interval",
            "no unit",
        ),
        (
            json!({"TCP": "a:1", "Interval": 10}),
            "Check.Interval",
            "expected a duration string",
        ),
        (
            json!({"TCP": "a:1", "Interval": "5s", "Timeout": "0s"}),
            "Check.Timeout",
            "longer than zero",
        ),
        (
            json!({"TCP": "a", "Interval": "5s"}),
            "Check.TCP",
            "not host:port",
        ),
        (
            json!({"TCP": "a:99999", "Interval": "5s"}),
            "Check.TCP",
            "not host:port",
        ),
        (
            json!({"HTTP": "ftp://x/", "Interval": "5s"}),
            "Check.HTTP",
            "not an http:// or https:// URL",
        ),
        (
            json!({"HTTP": "http://x/", "Method": "GE T", "Interval": "5s"}),
            "Check.Method",
            "not an HTTP method",
        ),
        (
            json!({"HTTP": "http://x/", "Header": {"X": [1]}, "Interval": "5s"}),
            "Check.Header.X",
            "list of strings",
        ),
        (
            json!({"HTTP": "http://x/", "Header": ["X"], "Interval": "5s"}),
            "Check.Header",
            "expected a map",
        ),
        (
            json!({"TCP": "a:1", "Method": "POST", "Interval": "5s"}),
            "Check.Method",
            "only used by HTTP",
        ),
        (
            json!({"Args": ["a", 2], "Interval": "5s"}),
            "Check.Args[1]",
            "expected a string",
        ),
        (
            json!({"Args": "true", "Interval": "5s"}),
            "Check.Args",
            "expected a list of strings",
        ),
        (json!({"TTL": "0s"}), "Check.TTL", "longer than zero"),
        (
            json!({"TTL": "5s", "Status": "ok"}),
            "Check.Status",
            "not one of passing",
        ),
        (
            json!({"TTL": "5s", "SuccessBeforePassing": -1}),
            "Check.SuccessBeforePassing",
            "not a count",
        ),
        (
            json!({"TTL": "5s", "FailuresBeforeWarning": 3, "FailuresBeforeCritical": 2}),
            "Check.FailuresBeforeWarning",
            "more than",
        ),
        (
            json!({"TTL": "5s", "DeregisterCriticalServiceAfter": "0s"}),
            "Check.DeregisterCriticalServiceAfter",
            "longer than zero",
        ),
        (
            json!({"TTL": "5s", "ServiceID": "api"}),
            "Check.ServiceID",
            "differs",
        ),
        (
            json!({"TTL": "5s", "CheckID": "a", "ID": "b"}),
            "Check.CheckID",
            "not both",
        ),
        (
            json!({"TTL": "5s", "Critical": "yes"}),
            "Check.Critical",
            "true or false",
        ),
        (
            json!({"TCP": "a:1", "Interval": "5s", "TCPUseTLS": true}),
            "Check.TCPUseTLS",
            "not supported yet",
        ),
        (
            json!({"Memory": {"Warning": 90, "Critical": 80}, "Interval": "5s"}),
            "Check.Memory.Warning",
            "below the critical",
        ),
        (
            json!({"Memory": {"Critical": 120}, "Interval": "5s"}),
            "Check.Memory.Critical",
            "at most 100",
        ),
        (
            json!({"Memory": {"Bogus": 1, "Critical": 90}, "Interval": "5s"}),
            "Check.Memory.bogus",
            "unknown field",
        ),
        (
            json!({"Cpu": {}, "Interval": "5s"}),
            "Check",
            "no check kind",
        ),
        (
            json!({"Cpu": {"Warning": null}, "Interval": "5s"}),
            "Check.Cpu",
            "set a warning level",
        ),
        (
            json!({"Load": {"Critical": -1}, "Interval": "5s"}),
            "Check.Load.Critical",
            "above 0",
        ),
        (
            json!({"Disk": {"Path": "var", "Critical": 90}, "Interval": "5s"}),
            "Check.Disk.Path",
            "absolute path",
        ),
        (
            json!({"Dependency": {"MinPassing": 1}, "Interval": "5s"}),
            "Check.Dependency.Service",
            "required",
        ),
        (
            json!({"Dependency": {"Service": "db", "MinPassing": 0}, "Interval": "5s"}),
            "Check.Dependency.MinPassing",
            "at least 1",
        ),
        (
            json!({"Dependency": "db", "Interval": "5s"}),
            "Check.Dependency",
            "expected an object",
        ),
        (json!("tcp"), "Check", "expected an object"),
    ];
    for (value, field, message) in cases {
        let input = value.to_string();
        let (got_field, got_message) = error(value);
        assert_eq!(got_field, field, "for {input}: {got_message}");
        assert!(
            got_message.contains(message),
            "for {input}: `{got_message}` lacks `{message}`"
        );
    }
}

#[test]
fn toml_paths_use_toml_names() {
    let value = toml_value("tcp = \"a:1\"\ninterval = \"5s\"\nfailures_before_warning = 3");
    let error = CheckDefinition::parse(&value, "services[0].checks[0]", None, "c").unwrap_err();
    assert_eq!(error.field, "services[0].checks[0].failures_before_warning");
    assert_eq!(
        error.to_string(),
        "`services[0].checks[0].failures_before_warning`: 3 is more than \
         failures_before_critical (0): the check would turn critical first"
    );
}

#[test]
fn a_node_check_needs_an_id_or_a_name() {
    let error = CheckDefinition::parse(&json!({"ttl": "5s"}), "Check", None, "").unwrap_err();
    assert_eq!(error.field, "Check");
    let check = CheckDefinition::parse(
        &json!({"ttl": "5s", "serviceid": "api"}),
        "Check",
        None,
        "c",
    )
    .unwrap();
    assert_eq!(check.service_id.as_deref(), Some("api"));
}

#[test]
fn an_empty_path_is_a_top_level_api_body() {
    let value = normalize(json!({"TCP": "a:1"}));
    let error = CheckDefinition::parse(&value, "", None, "c").unwrap_err();
    assert_eq!(error.field, "Interval");
    let value = normalize(json!({"TCP": "a:1", "Interval": "1s", "Memory": {"Bogus": 1}}));
    let error = CheckDefinition::parse(&value, "", None, "c").unwrap_err();
    assert_eq!(error.field, "");
    let value = normalize(json!({"Memory": {"Critical": 101}, "Interval": "1s"}));
    let error = CheckDefinition::parse(&value, "", None, "c").unwrap_err();
    assert_eq!(error.field, "Memory.Critical");
}
