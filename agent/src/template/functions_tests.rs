//! Template functions over a hand-built snapshot.

use std::collections::BTreeMap;

use shoal_protocol::kv::{KvEntry, KvStore};
use shoal_protocol::record::{CheckRecord, CheckStatus, ServiceRecord};
use shoal_protocol::{MemberStatus, MemberView, NodeId, NodeRecord};

use super::*;

const OPTIONS: RenderOptions = RenderOptions {
    allow_env: false,
    fuel: Some(1_000_000),
    max_output: 1 << 20,
};

fn web(index: u8, status: CheckStatus) -> MemberView {
    let id = NodeId {
        addr: format!("127.0.0.{index}:7946").parse().unwrap(),
        generation: 1,
    };
    let mut record = NodeRecord::new(id, format!("node-{index}"));
    record.services = vec![ServiceRecord {
        id: format!("web-{index}"),
        name: "web".into(),
        address: String::new(),
        port: 8000 + u16::from(index),
        tags: vec!["v1".into()],
        meta: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        checks: vec![CheckRecord {
            id: "http".into(),
            name: "http".into(),
            kind: "http".into(),
            status,
            critical: true,
            notes: String::new(),
            output: String::new(),
        }],
    }];
    MemberView {
        id,
        status: MemberStatus::Alive,
        record: Some(record),
    }
}

fn snapshot(entries: &[(&str, &str)]) -> Arc<Snapshot> {
    let members = vec![web(1, CheckStatus::Passing), web(2, CheckStatus::Critical)];
    let mut kv = KvStore::default();
    for (time, (key, value)) in entries.iter().enumerate() {
        kv.apply(Arc::new(KvEntry {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            flags: 0,
            time: time as u64 + 1,
            writer: "node-1".into(),
            deleted: false,
        }));
    }
    Arc::new(Snapshot {
        index: 10,
        cluster_index: 5,
        kv_index: 7,
        local: members[0].record.clone().unwrap(),
        members: Arc::new(members),
        kv,
        checks_loaded: true,
        name_rival: None,
        events: Arc::default(),
        event_index: 0,
    })
}

fn ok(source: &str, snapshot: Arc<Snapshot>) -> Rendered {
    render(source, snapshot, OPTIONS).unwrap_or_else(|error| panic!("{source}: {error:?}"))
}

#[test]
fn service_lists_passing_instances_with_their_fields() {
    let out = ok(
        "{% for s in service('web') %}{{ s.id }} {{ s.node }} {{ s.address }}:{{ s.port }} \
         {{ s.status }} {{ s.tags|join(',') }} {{ s.meta.zone }};{% endfor %}",
        snapshot(&[]),
    );
    assert_eq!(out.output, "web-1 node-1 127.0.0.1:8001 passing v1 a;");
    assert_eq!(out.reads, Reads::CLUSTER);
    let all = ok(
        "{% for s in service('web', passing=false) %}{{ s.id }}={{ s.status }} {% endfor %}\
         {{ service('web', 'nope')|length }} {{ services()|map(attribute='name')|join }} \
         {{ nodes()|length }}",
        snapshot(&[]),
    );
    assert_eq!(all.output, "web-1=passing web-2=critical 0 web 2");
}

#[test]
fn keys_trees_and_defaults_read_the_kv() {
    let snap = snapshot(&[
        ("app/color", "blue"),
        ("app/size", "9"),
        ("_shoal/keyring", "x"),
    ]);
    let out = ok(
        "{{ key('app/color') }} {{ key_or_default('app/none', 'red') }} \
         {% for e in tree('app/') %}{{ e.key }}={{ e.value }} {% endfor %}{{ tree('')|length }}",
        snap.clone(),
    );
    assert_eq!(out.output, "blue red app/color=blue app/size=9 2");
    assert_eq!(out.reads, Reads::KV);
    let error = render("{{ key('app/none') }}", snap.clone(), OPTIONS).unwrap_err();
    assert!(error.message.contains("app/none"), "{}", error.message);
    assert!(error.message.contains("line 1"), "{}", error.message);
    // The keyring is never readable, as on /v1/kv.
    assert!(render("{{ key('_shoal/keyring') }}", snap, OPTIONS).is_err());
}

#[test]
fn flags_decide_as_the_api_does() {
    let definition = r#"{"enabled": true, "rollout_percentage": 100}"#;
    let snap = snapshot(&[("_shoal/flags/new-ui", definition)]);
    let out = ok(
        "{% set f = flag('new-ui', user='42') %}{{ f.enabled }} {{ f.reason }}",
        snap.clone(),
    );
    // Jinja prints booleans as Python does.
    assert!(
        out.output.starts_with("True rollout 100%"),
        "{}",
        out.output
    );
    assert_eq!(out.reads, ALL_A_TEMPLATE_READS);
    assert!(render("{{ flag('missing') }}", snap, OPTIONS).is_err());
}

#[test]
fn errors_syntax_env_and_fuel() {
    let snap = snapshot(&[]);
    let error = render("{% for x in %}", snap.clone(), OPTIONS).unwrap_err();
    assert!(error.message.contains("syntax error"), "{}", error.message);
    let error = render("{{ env('HOME') }}", snap.clone(), OPTIONS).unwrap_err();
    assert!(error.message.contains("not available"), "{}", error.message);
    let with_env = RenderOptions {
        allow_env: true,
        ..OPTIONS
    };
    // SAFETY: the variable is unique to this test; nothing else reads it.
    unsafe { std::env::set_var("SHOAL_TEMPLATE_TEST_VAR", "here") };
    let out = render(
        "{{ env('SHOAL_TEMPLATE_TEST_VAR') }}",
        snap.clone(),
        with_env,
    )
    .unwrap();
    assert_eq!(out.output, "here");
    let error = render(
        "{% for a in range(1000) %}{% for b in range(1000) %}{% endfor %}{% endfor %}",
        snap.clone(),
        OPTIONS,
    )
    .unwrap_err();
    assert!(error.message.contains("fuel"), "{}", error.message);
    let error = render("{{ nothing_here }}", snap, OPTIONS).unwrap_err();
    assert!(error.message.contains("undefined"), "{}", error.message);
}

#[test]
fn the_output_cap_stops_the_render_and_fuel_bounds_big_strings() {
    let snap = snapshot(&[]);
    let small = RenderOptions {
        max_output: 1000,
        fuel: None,
        ..OPTIONS
    };
    let out = render("{{ 'x' * 1000 }}", snap.clone(), small).unwrap();
    assert_eq!(out.output.len(), 1000);
    // Stopped at the first write past the cap, not after building it all.
    let error = render(
        "{% for a in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
        snap.clone(),
        small,
    )
    .unwrap_err();
    assert!(
        error.message.contains("more than 1000 bytes"),
        "{}",
        error.message
    );
    // The API's fuel pays for ~16 MB of data: a 100 MB string is refused
    // before it is built.
    let api = RenderOptions {
        fuel: Some(crate::api::template::API_FUEL),
        max_output: crate::api::template::API_MAX_OUTPUT,
        allow_env: false,
    };
    let error = render("{% set s = 'x' * 100000000 %}", snap, api).unwrap_err();
    assert!(error.message.contains("fuel"), "{}", error.message);
}
