//! User events on the node: firing one (stamped by the event log, then
//! gossiped) and handing the delivered ones to the driver. See
//! [`crate::event`].

use std::sync::MutexGuard;

use super::Node;
use crate::codec;
use crate::event::{EventCounters, EventError, EventLog, EventRequest, UserEvent};
use crate::rumor::Rumor;

impl Node {
    /// Fires a user event: stamped with our Lamport time and the clock the
    /// driver set, delivered here, and gossiped to every member. Refused
    /// (nothing changes) when out of bounds. The broadcast backlog keeps at
    /// most [`crate::event::EVENT_BACKLOG`] events, dropping the oldest.
    pub fn fire_event(&mut self, request: EventRequest) -> Result<UserEvent, EventError> {
        let now = self.lock_state().clock().now_ntp64().unwrap_or(0);
        let event = self.lock_events().fire(request, now)?;
        if let Err(error) = self
            .swim
            .add_broadcast(&codec::encode(&Rumor::Event(event.clone())))
        {
            debug_assert!(false, "our own event rumor was refused: {error}");
        }
        if self.swim.num_members() > 0 {
            let _ = self.swim.gossip(&mut self.effects);
        }
        Ok(event)
    }

    /// User events delivered (fired here or received) since the last call,
    /// oldest first; at most [`crate::event::EVENT_RING`].
    pub fn take_user_events(&mut self) -> Vec<UserEvent> {
        self.lock_events().take_delivered()
    }

    /// The user events' Lamport clock.
    pub fn event_clock(&self) -> u64 {
        self.lock_events().clock()
    }

    pub fn event_counters(&self) -> EventCounters {
        self.lock_events().counters()
    }

    /// Events fired before now are not delivered here: called when the
    /// node starts, so that a late joiner doesn't replay old events.
    pub(super) fn mark_events_start(&mut self) {
        if let Some(now) = self.lock_state().clock().now_ntp64() {
            self.lock_events().set_started(now);
        }
    }

    fn lock_events(&self) -> MutexGuard<'_, EventLog> {
        self.events.lock().expect("event log lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::*;
    use crate::envelope::Envelope;
    use crate::event::EVENT_BACKLOG;
    use crate::identity::NodeId;
    use crate::node::GossipConfig;
    use crate::record::NodeRecord;

    fn node(last: u8, now: Duration) -> Node {
        let id = NodeId {
            addr: SocketAddr::from(([127, 0, 0, last], 7946)),
            generation: 1,
        };
        let record = NodeRecord::new(id, format!("node-{last}"));
        let mut node = Node::new(record, GossipConfig::default(), Envelope::new(1), 7);
        node.set_clock(now);
        node.start();
        node
    }

    #[test]
    fn a_fired_event_is_delivered_locally_and_queued_for_gossip() {
        let mut node = node(1, Duration::from_secs(1_000));
        // Its own record, gossiped from the start.
        let record = node.swim.custom_broadcast_backlog();
        let event = node
            .fire_event(EventRequest {
                id: [7; 16],
                name: "deploy".into(),
                payload: b"v42".to_vec(),
                ..EventRequest::default()
            })
            .unwrap();
        assert_eq!(event.ltime, 0);
        assert_eq!(node.event_clock(), 1);
        assert_eq!(node.take_user_events(), vec![event]);
        assert_eq!(node.swim.custom_broadcast_backlog(), record + 1);
        let refused = node.fire_event(EventRequest {
            name: "no spaces".into(),
            ..EventRequest::default()
        });
        assert_eq!(refused, Err(EventError::Name));
        assert_eq!(node.event_clock(), 1);
    }

    #[test]
    fn the_event_backlog_is_capped_dropping_the_oldest() {
        let mut node = node(1, Duration::from_secs(1_000));
        let record = node.swim.custom_broadcast_backlog();
        let extra = 10;
        for n in 0..EVENT_BACKLOG + extra {
            let mut id = [0; 16];
            id[..8].copy_from_slice(&n.to_be_bytes());
            node.fire_event(EventRequest {
                id,
                name: "deploy".into(),
                payload: vec![b'p'; 512],
                ..EventRequest::default()
            })
            .unwrap();
        }
        // Alone, the node sends nothing: only the cap took events out.
        assert_eq!(
            (node.swim.custom_broadcast_backlog() - record) as u64,
            EVENT_BACKLOG
        );
        assert_eq!(node.event_counters().backlog_dropped, extra);
        assert_eq!(node.event_clock(), EVENT_BACKLOG + extra);
    }
}
