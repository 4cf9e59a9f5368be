//! Unit tests of [`super`]: restart-only keys, event filtering, and
//! reloads keeping the state of unchanged checks.

use super::*;
use crate::checks::CheckDefinition;
use crate::config::FileConfig;
use crate::registry::ServiceDefinition;

fn config(text: &str) -> AgentConfig {
    let file: FileConfig = toml::from_str(text).unwrap();
    AgentConfig::from_parts(file, &Overrides::default()).unwrap()
}

#[test]
fn restart_only_keys_are_named() {
    let running = config("data_dir = \"/tmp/a\"\nbind = \"127.0.0.1:7000\"\n");
    let same = config(
        "data_dir = \"/tmp/a\"\nbind = \"127.0.0.1:7000\"\nlog_level = \"debug\"\ntags = { env = \"prod\" }\n",
    );
    assert!(restart_only_changes(&running, &same).is_empty());
    let moved = config(
        "data_dir = \"/tmp/b\"\nbind = \"127.0.0.1:7001\"\n[gossip]\nprobe_interval = \"2s\"\n",
    );
    assert_eq!(
        restart_only_changes(&running, &moved),
        ["data_dir", "bind", "advertise", "gossip"]
    );
    let dns = config(
        "data_dir = \"/tmp/a\"\nbind = \"127.0.0.1:7000\"\ndns_addr = \"off\"\n[dns]\nservice_ttl = \"5s\"\n",
    );
    assert_eq!(restart_only_changes(&running, &dns), ["dns_addr", "dns"]);
}

#[test]
fn a_reload_keeps_the_state_of_unchanged_checks() {
    use crate::registry::Registry;
    use shoal_protocol::record::CheckStatus;
    let parse = |value: serde_json::Value| {
        ServiceDefinition::parse(&crate::registry::keys::normalize(value), "services[0]").unwrap()
    };
    let web = parse(serde_json::json!({
        "name": "web", "id": "web-1",
        "checks": [{"id": "web-ttl", "ttl": "30s"}],
    }));
    let status = |registry: &Registry| registry.records().0[0].checks[0].status;
    let mut registry = Registry::default();
    let mut spawn = |_: Arc<CheckDefinition>| None;
    let now = std::time::Instant::now();
    registry
        .replace_config(vec![web.clone()], Vec::new(), &mut spawn, now)
        .unwrap();
    registry
        .ttl_update("web-ttl", CheckStatus::Passing, None, now)
        .unwrap();
    registry
        .replace_config(vec![web.clone()], Vec::new(), &mut spawn, now)
        .unwrap();
    assert_eq!(status(&registry), CheckStatus::Passing);
    let mut changed = web.clone();
    changed.tags = vec!["v2".into()];
    registry
        .replace_config(vec![changed], Vec::new(), &mut spawn, now)
        .unwrap();
    assert_ne!(status(&registry), CheckStatus::Passing);
    registry
        .replace_config(Vec::new(), Vec::new(), &mut spawn, now)
        .unwrap();
    assert!(registry.records().0.is_empty());
}

#[test]
fn only_config_paths_and_real_changes_count() {
    use notify::event::{AccessKind, CreateKind, DataChange, MetadataKind, ModifyKind, RenameMode};
    let relevant = Relevant {
        file: PathBuf::from("/etc/shoal/agent.toml"),
        config_dir: PathBuf::from("/etc/shoal/config.d"),
    };
    let event = |kind, path: &str| notify::Event::new(kind).add_path(PathBuf::from(path));
    let data = EventKind::Modify(ModifyKind::Data(DataChange::Any));
    assert!(relevant.matches(&event(data, "/etc/shoal/agent.toml")));
    assert!(relevant.matches(&event(
        EventKind::Modify(ModifyKind::Name(RenameMode::To)),
        "/etc/shoal/agent.toml"
    )));
    assert!(relevant.matches(&event(
        EventKind::Create(CreateKind::File),
        "/etc/shoal/config.d/web.toml"
    )));
    assert!(!relevant.matches(&event(data, "/etc/shoal/.agent.toml.swp")));
    assert!(!relevant.matches(&event(data, "/etc/shoal/config.d/notes.txt")));
    assert!(!relevant.matches(&event(
        EventKind::Access(AccessKind::Any),
        "/etc/shoal/agent.toml"
    )));
    assert!(!relevant.matches(&event(
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
        "/etc/shoal/agent.toml"
    )));
}
