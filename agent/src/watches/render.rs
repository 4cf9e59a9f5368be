//! What a watch hands its handler: the JSON the corresponding HTTP
//! endpoint answers, built from a snapshot with the API's own builders
//! (`consul_json`), so the two never differ.

use serde_json::{Value, json};
use shoal_protocol::record::CheckStatus;

use crate::catalog::{self, ServiceFilter};
use crate::config::WatchKind;
use crate::consul_json::{self, Member};
use crate::reads::Reads;
use crate::snapshot::Snapshot;

/// What a watch of this kind reads: it is rendered again only when that
/// moved.
pub fn reads(kind: &WatchKind) -> Reads {
    match kind {
        WatchKind::Key { .. } | WatchKind::KeyPrefix { .. } => Reads::KV,
        WatchKind::Event { .. } => Reads::EVENTS,
        WatchKind::Services
        | WatchKind::Service { .. }
        | WatchKind::Checks { .. }
        | WatchKind::Nodes
        | WatchKind::Members => Reads::CLUSTER,
    }
}

/// The JSON for every kind but `event` (whose handler gets only the new
/// events; see `watches::run`):
///
/// - `key`: `/v1/kv/:key`'s KVPair (the object, not the list), `null` when
///   missing;
/// - `keyprefix`: `/v1/kv/:prefix?recurse` (`[]` when empty);
/// - `services`: `/v1/catalog/services`;
/// - `service`: `/v1/health/service/:service[?tag=][&passing]`;
/// - `checks`: `/v1/health/checks/:service` or `/v1/health/state/:state`
///   (default `any`);
/// - `nodes`: `/v1/catalog/nodes`; `members`: `/v1/agent/members`.
pub fn render(kind: &WatchKind, snapshot: &Snapshot) -> Value {
    let members = &snapshot.members;
    match kind {
        WatchKind::Key { key } => snapshot
            .kv
            .get(key)
            .filter(|stored| !stored.entry.deleted)
            .map_or(Value::Null, consul_json::kv_pair),
        WatchKind::KeyPrefix { prefix } => Value::Array(
            snapshot
                .kv
                .prefix(prefix)
                .filter(|stored| {
                    !stored.entry.deleted && !crate::kv::is_reserved(&stored.entry.key)
                })
                .map(consul_json::kv_pair)
                .collect(),
        ),
        WatchKind::Services => consul_json::catalog_services(&catalog::service_tags(members, &[])),
        WatchKind::Service {
            service,
            tag,
            passing,
        } => {
            let filter = ServiceFilter {
                passing: *passing,
                tags: tag.iter().cloned().collect(),
                node_meta: Vec::new(),
            };
            Value::Array(
                catalog::matching_instances(members, service, &filter)
                    .map(|(node, instance)| consul_json::health_service_entry(&node, instance))
                    .collect(),
            )
        }
        WatchKind::Checks {
            service: Some(service),
            ..
        } => Value::Array(
            catalog::service_checks(members, service)
                .iter()
                .map(consul_json::cluster_check)
                .collect(),
        ),
        WatchKind::Checks {
            service: None,
            state,
        } => {
            let wanted = state.as_deref().and_then(CheckStatus::parse);
            Value::Array(
                catalog::all_checks(members)
                    .iter()
                    .filter(|found| {
                        wanted.is_none_or(|status| found.check.consul_status() == status)
                    })
                    .map(consul_json::cluster_check)
                    .collect(),
            )
        }
        WatchKind::Nodes => Value::Array(
            catalog::nodes(members)
                .map(|node| consul_json::node(&node))
                .collect(),
        ),
        WatchKind::Members => json!(members.iter().map(Member::from_view).collect::<Vec<_>>()),
        WatchKind::Event { name } => {
            crate::consul_json::event_list(snapshot, name.as_deref().unwrap_or_default())
        }
    }
}
