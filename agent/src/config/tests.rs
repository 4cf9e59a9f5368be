//! Config unit tests: precedence, errors that name their key, the
//! annotated examples.

use super::*;

fn parse(toml_text: &str) -> Result<AgentConfig, ConfigError> {
    let file: FileConfig = toml::from_str(toml_text).map_err(|e| ConfigError::Parse {
        path: "test.toml".into(),
        message: e.to_string(),
    })?;
    AgentConfig::from_parts(file, &Overrides::default())
}

#[test]
fn unknown_keys_are_rejected_by_name() {
    let error = parse("data_dir = \"/tmp/x\"\nbogus_key = 1\n").unwrap_err();
    assert!(error.to_string().contains("bogus_key"), "{error}");
}

#[test]
fn invalid_values_name_their_key() {
    let error = parse("data_dir = \"/tmp/x\"\nbind = \"nonsense\"\n").unwrap_err();
    assert!(error.to_string().contains("`bind`"), "{error}");
    let error = parse("data_dir = \"/tmp/x\"\n[gossip]\nprobe_interval = \"soon\"\n").unwrap_err();
    assert!(
        error.to_string().contains("gossip.probe_interval"),
        "{error}"
    );
    let error = parse("bind = \"127.0.0.1:1\"\n").unwrap_err();
    assert!(error.to_string().contains("`data_dir`"), "{error}");
}

#[test]
fn flags_win_over_the_file() {
    let file: FileConfig = toml::from_str(
        "data_dir = \"/tmp/x\"\nnode_name = \"from-file\"\nbind = \"127.0.0.1:9000\"\n",
    )
    .unwrap();
    let overrides = Overrides {
        node_name: Some("from-flag".into()),
        tags: vec!["role=web".into()],
        ..Overrides::default()
    };
    let config = AgentConfig::from_parts(file, &overrides).unwrap();
    assert_eq!(config.node_name, "from-flag");
    assert_eq!(config.bind, "127.0.0.1:9000".parse().unwrap());
    assert_eq!(config.advertise, config.bind);
    assert_eq!(config.tags["role"], "web");
}

#[test]
fn the_annotated_examples_are_valid() {
    let file: FileConfig = toml::from_str(include_str!("../../../config/agent.toml")).unwrap();
    let config = AgentConfig::from_parts(file, &Overrides::default()).unwrap();
    assert_eq!(config.tags["role"], "web");
    // The example spells out the defaults of the KV bounds.
    assert_eq!(config.gossip.kv_max_bytes, super::DEFAULT_KV_MAX_BYTES);
    assert_eq!(
        config.gossip.max_clock_drift,
        shoal_protocol::clock::DEFAULT_MAX_CLOCK_DRIFT
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("services.toml"),
        include_str!("../../../config/services.toml"),
    )
    .unwrap();
    let (services, checks) = definitions::read_config_dir(dir.path()).unwrap();
    assert_eq!(services.len(), 2);
    assert_eq!(services[0].checks.len(), 4);
    assert_eq!(checks.len(), 4);
}

#[test]
fn dev_mode_needs_no_file() {
    let config = AgentConfig::from_parts(
        FileConfig::default(),
        &Overrides {
            dev: true,
            ..Overrides::default()
        },
    )
    .unwrap();
    assert_eq!(config.data_dir, DataDir::Temporary);
    assert!(config.bind.ip().is_loopback());
    assert!(config.http_addr.ip().is_loopback());
}

#[test]
fn every_duration_key_takes_go_durations() {
    let config = parse(
        "data_dir = \"/tmp/x\"\n[gossip]\nprobe_interval = \"1.5s\"\nprobe_timeout = \"750ms\"\n\
         gossip_interval = \"200000µs\"\npush_pull_interval = \"1m30s\"\n\
         leave_propagate_delay = \"0.5s\"\nreannounce_interval = \"1h2m3.5s\"\n\
         [kv]\ntombstone_grace = \"1.5h\"\n",
    )
    .unwrap();
    let ms = std::time::Duration::from_millis;
    assert_eq!(config.gossip.probe_period, ms(1500));
    assert_eq!(config.gossip.probe_rtt, ms(750));
    assert_eq!(config.gossip.gossip_interval, ms(200));
    assert_eq!(config.gossip.anti_entropy_interval, ms(90_000));
    assert_eq!(config.gossip.leave_spread, ms(500));
    assert_eq!(config.gossip.seed_reannounce, ms(3_723_500));
    assert_eq!(config.kv_tombstone_grace, ms(5_400_000));
}

#[test]
fn bad_durations_say_what_is_wrong_and_where() {
    let cases = [
        (
            "[gossip]\nprobe_interval = \"1 hour\"",
            "gossip.probe_interval",
            "unknown unit",
        ),
        (
            "[gossip]\ngossip_interval = \"200\"",
            "gossip.gossip_interval",
            "no unit",
        ),
        (
            "[gossip]\npush_pull_interval = \"-1s\"",
            "gossip.push_pull_interval",
            "sign",
        ),
        (
            "[gossip]\nreannounce_interval = \"0\"",
            "gossip.reannounce_interval",
            "longer than zero",
        ),
        (
            "[kv]\ntombstone_grace = \"2days\"",
            "kv.tombstone_grace",
            "unknown unit `days`",
        ),
        (
            "[gossip]\nprobe_interval = \"1s\"\nprobe_timeout = \"1.5s\"",
            "gossip.probe_timeout",
            "(1.5s) must be shorter than gossip.probe_interval (1s)",
        ),
    ];
    for (text, key, message) in cases {
        let error = parse(&format!("data_dir = \"/tmp/x\"\n{text}\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains(&format!("`{key}`")), "{text}: {error}");
        assert!(error.contains(message), "{text}: {error}");
    }
}

#[test]
fn names_are_limited_to_what_peers_accept() {
    use shoal_protocol::state::MAX_NAME;
    let longest = "n".repeat(MAX_NAME);
    let config = parse(&format!(
        "data_dir = \"/tmp/x\"\nnode_name = \"{longest}\"\n"
    ))
    .unwrap();
    assert_eq!(config.node_name, longest);
    let error = parse(&format!(
        "data_dir = \"/tmp/x\"\nnode_name = \"{longest}n\"\n"
    ))
    .unwrap_err();
    assert!(error.to_string().contains("`node_name`"), "{error}");
}

#[test]
fn flag_tags_add_to_the_file_and_bad_ones_are_refused() {
    let file: FileConfig =
        toml::from_str("data_dir = \"/tmp/x\"\n[tags]\nrole = \"db\"\nrack = \"r1\"\n").unwrap();
    let overrides = Overrides {
        tags: vec!["role=web".into()],
        acl_token: Some("secret".into()),
        acl_protect_reads: true,
        ..Overrides::default()
    };
    let config = AgentConfig::from_parts(file, &overrides).unwrap();
    assert_eq!(config.tags["role"], "web");
    assert_eq!(config.tags["rack"], "r1");
    assert_eq!(config.acl.token.as_deref(), Some("secret"));
    assert!(config.acl.protect_reads);
    let bad = Overrides {
        tags: vec!["no-equals".into()],
        ..Overrides::default()
    };
    let error = AgentConfig::from_parts(FileConfig::default(), &bad).unwrap_err();
    assert!(error.to_string().contains("`tags`"), "{error}");
    // `id` carries the node ID.
    let reserved = Overrides {
        tags: vec!["id=mine".into()],
        ..Overrides::default()
    };
    let file: FileConfig = toml::from_str("data_dir = \"/tmp/x\"\n").unwrap();
    let error = AgentConfig::from_parts(file, &reserved).unwrap_err();
    assert!(error.to_string().contains("`id` is reserved"), "{error}");
}

#[test]
fn more_checks_than_a_record_carries_are_refused_naming_the_file_and_dir() {
    let dir = tempfile::tempdir().unwrap();
    let checks = |from: usize, to: usize| -> String {
        (from..to)
            .map(|i| format!("[[checks]]\nid = \"c{i}\"\nname = \"c{i}\"\nttl = \"60s\"\n\n"))
            .collect()
    };
    let max = crate::registry::store::MAX_CHECKS;
    let file = dir.path().join("agent.toml");
    let config_dir = dir.path().join("agent.d");
    std::fs::create_dir(&config_dir).unwrap();
    std::fs::write(&file, format!("data_dir = \"/tmp/x\"\n{}", checks(0, 10))).unwrap();
    std::fs::write(config_dir.join("more.toml"), checks(10, max)).unwrap();
    let overrides = Overrides {
        config_file: Some(file.clone()),
        config_dir: Some(config_dir.clone()),
        ..Overrides::default()
    };
    assert_eq!(AgentConfig::load(&overrides).unwrap().checks.len(), max);
    std::fs::write(config_dir.join("one-more.toml"), checks(max, max + 1)).unwrap();
    let error = AgentConfig::load(&overrides).unwrap_err().to_string();
    assert!(
        error.contains("agent.toml")
            && error.contains("agent.d")
            && error.contains("`checks`")
            && error.contains(&format!("at most {max} checks")),
        "{error}"
    );
}

#[test]
fn join_ready_timeout_is_bounded_and_named_in_errors() {
    let config = parse("data_dir = \"/tmp/x\"\n").unwrap();
    assert_eq!(config.join_ready_timeout, super::DEFAULT_JOIN_READY_TIMEOUT);
    let config = parse("data_dir = \"/tmp/x\"\njoin_ready_timeout = \"2.5s\"\n").unwrap();
    assert_eq!(config.join_ready_timeout, Duration::from_millis(2500));
    for bad in ["0s", "soon", "2h"] {
        let error = parse(&format!(
            "data_dir = \"/tmp/x\"\njoin_ready_timeout = \"{bad}\"\n"
        ))
        .unwrap_err();
        assert!(
            error.to_string().contains("`join_ready_timeout`"),
            "{error}"
        );
    }
}

#[test]
fn the_packaged_default_config_is_valid() {
    let file: FileConfig = toml::from_str(include_str!("../../../packaging/agent.toml")).unwrap();
    assert_eq!(
        file.config_dir.as_deref(),
        Some(std::path::Path::new("/etc/shoal/agent.d"))
    );
    let config = AgentConfig::from_parts(file, &Overrides::default()).unwrap();
    assert_eq!(config.data_dir, DataDir::Path("/var/lib/shoal".into()));
    assert!(config.join.is_empty(), "a fresh install starts alone");
}

#[test]
fn reap_timeouts_default_to_consul_and_serf_and_have_a_minimum() {
    let hours = |h: u64| std::time::Duration::from_secs(h * 3600);
    let defaults = parse("data_dir = \"/tmp/x\"\n").unwrap();
    assert_eq!(defaults.gossip.reconnect_timeout, hours(72));
    assert_eq!(defaults.gossip.tombstone_timeout, hours(24));
    let set = parse(
        "data_dir = \"/tmp/x\"\n[gossip]\nreconnect_timeout = \"8h\"\ntombstone_timeout = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(set.gossip.reconnect_timeout, hours(8));
    assert_eq!(set.gossip.tombstone_timeout, hours(1));
    for (key, value, minimum) in [
        ("reconnect_timeout", "7h59m", "8h"),
        ("tombstone_timeout", "59m", "1h"),
    ] {
        let error = parse(&format!(
            "data_dir = \"/tmp/x\"\n[gossip]\n{key} = \"{value}\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(error.contains(&format!("gossip.{key}")), "{error}");
        assert!(error.contains(minimum) && error.contains(value), "{error}");
    }
}

#[test]
fn the_wan_table_needs_enabled_and_its_own_port() {
    let config = parse("data_dir = \"/tmp/x\"\nbind = \"10.0.0.5:7946\"\n[wan]\nenabled = true\njoin = [\"10.1.0.5\"]\n[wan.gossip]\nprobe_interval = \"10s\"\n").unwrap();
    let wan = config.wan.expect("a WAN member");
    assert_eq!(wan.bind, "10.0.0.5:8302".parse().unwrap());
    assert_eq!(wan.advertise, "10.0.0.5:8302".parse().unwrap());
    assert_eq!(wan.join, vec!["10.1.0.5:8302".parse().unwrap()]);
    // memberlist's WAN timings, with the file's over them.
    assert_eq!(wan.gossip.probe_period, std::time::Duration::from_secs(10));
    assert_eq!(wan.gossip.probe_rtt, std::time::Duration::from_secs(3));
    assert_eq!(
        wan.gossip.anti_entropy_interval,
        std::time::Duration::from_secs(60)
    );
    assert_eq!(wan.gossip.suspicion_mult, 6.0);
    assert_eq!(wan.gossip.seeds, wan.join);

    // Not a WAN member: no WAN pool, and its keys are refused.
    assert!(parse("data_dir = \"/tmp/x\"\n").unwrap().wan.is_none());
    let error = parse("data_dir = \"/tmp/x\"\n[wan]\njoin = [\"10.1.0.5\"]\n").unwrap_err();
    assert!(
        error.to_string().contains("wan.join") && error.to_string().contains("wan.enabled"),
        "{error}"
    );
    // The LAN port is not the WAN's.
    let error = parse("data_dir = \"/tmp/x\"\nbind = \"10.0.0.5:7946\"\n[wan]\nenabled = true\nbind = \"10.0.0.5:7946\"\n").unwrap_err();
    assert!(error.to_string().contains("wan.bind"), "{error}");
    // Its gossip keys are checked under their own names.
    let error = parse(
        "data_dir = \"/tmp/x\"\n[wan]\nenabled = true\n[wan.gossip]\nprobe_interval = \"soon\"\n",
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("wan.gossip.probe_interval"),
        "{error}"
    );
    let error = parse("data_dir = \"/tmp/x\"\n[wan]\nenabled = true\n[wan.gossip]\nprobe_interval = \"1s\"\nprobe_timeout = \"2s\"\n").unwrap_err();
    assert!(
        error.to_string().contains("wan.gossip.probe_timeout"),
        "{error}"
    );
    // `node.dc` names the agent in the WAN pool: it must fit a name.
    let long = "n".repeat(125);
    let error = parse(&format!(
        "data_dir = \"/tmp/x\"\nnode_name = \"{long}\"\n[wan]\nenabled = true\n"
    ))
    .unwrap_err();
    assert!(
        error.to_string().contains("wan.enabled") && error.to_string().contains("dc1"),
        "{error}"
    );
}

#[test]
fn dns_failover_lists_other_datacenters_once() {
    let config = parse(
        "data_dir = \"/tmp/x\"\ndatacenter = \"dc1\"\n[dns]\nfailover = [\"DC2\", \"dc3\"]\n",
    )
    .unwrap();
    assert_eq!(config.dns.failover, ["dc2", "dc3"]);
    assert!(
        parse("data_dir = \"/tmp/x\"\n")
            .unwrap()
            .dns
            .failover
            .is_empty()
    );
    for (list, says) in [
        ("[\"dc2\", \"Dc2\"]", "twice"),
        ("[\"dc 2\"]", "dns.failover"),
        ("[\"DC1\"]", "own datacenter"),
    ] {
        let error = parse(&format!(
            "data_dir = \"/tmp/x\"\ndatacenter = \"dc1\"\n[dns]\nfailover = {list}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("dns.failover") && error.contains(says),
            "{list}: {error}"
        );
    }
}
