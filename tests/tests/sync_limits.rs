//! The limits of an anti-entropy exchange past its first frame, crossed by
//! a test that speaks the protocol as a peer does (these agents run without
//! `encrypt`, so any host may; with it, a peer must hold the key): at most
//! 8 exchanges are served at once and a ninth is closed at once; a later
//! frame must arrive within 10 s and be at most 16 MiB; an exchange ends
//! after 4,096 messages. (`docs/budgets.md`, "Gossip datagrams and
//! anti-entropy connections".)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use shoal_protocol::anti_entropy::{Digest, KvCursor, KvPage, Records, SyncMessage, SyncStep};
use shoal_tests::peer::{
    connect_from, loopback_v4, plaintext_envelope, read_sync_frame, write_sync_frame,
};
use shoal_tests::{Cluster, wait_for};

/// A one-agent cluster, serving.
fn one_agent() -> Cluster {
    let cluster = Cluster::start(1);
    wait_for(Duration::from_secs(20), "node-0 to serve", || {
        cluster.agents[0].get("/v1/agent/self").map(|_| ())
    });
    cluster
}

/// A full digest that holds nothing: the agent answers with a Delta and
/// then waits for our Records.
fn empty_digest() -> SyncMessage {
    SyncMessage::Digest(Digest {
        nodes: Vec::new(),
        kv_root: 1,
        kv_bucket_hashes: Vec::new(),
        members: Vec::new(),
        kv_horizon: 0,
        nodes_hash: 0,
        members_hash: 0,
        summary: false,
    })
}

/// A page that says we have more to send (so the exchange goes on), over
/// no bucket (so it stays a few bytes).
fn page_with_more() -> KvPage {
    KvPage {
        next: Some(KvCursor {
            start: Some("a".into()),
            after: None,
            wrapped: false,
        }),
        ..KvPage::default()
    }
}

/// Opens an exchange from a fresh loopback address and reads the agent's
/// Delta: from then on the exchange holds one of the agent's slots, and the
/// agent waits for our next frame. `None`: the agent closed the connection
/// instead of answering.
fn open_exchange(target: SocketAddr) -> Option<TcpStream> {
    let envelope = plaintext_envelope();
    let mut stream = connect_from(loopback_v4(), target).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    if write_sync_frame(&mut stream, &envelope, &empty_digest()).is_err() {
        return None;
    }
    match read_sync_frame(&mut stream, &envelope).expect("a frame or a close") {
        Some(message) => {
            assert_eq!(message.step(), SyncStep::Delta, "the answer to a digest");
            Some(stream)
        }
        None => None,
    }
}

/// Waits until the agent closes `stream` (EOF or reset) within `within`;
/// returns how long that took, or `None` if it stayed open.
fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buffer = [0u8; 64];
    while started.elapsed() < within {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return Some(started.elapsed()),
            Ok(n) => panic!("the agent sent {n} bytes where it should wait"),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed());
            }
            Err(_) => {}
        }
    }
    None
}

#[test]
fn a_ninth_exchange_is_closed_at_once_and_held_ones_end_at_the_frame_timeout() {
    let cluster = one_agent();
    let target = cluster.agents[0].gossip_addr();

    // Eight exchanges from eight addresses (each address may hold two),
    // each past its first frame: the agent serves them all.
    let mut held: Vec<TcpStream> = (0..8)
        .map(|i| open_exchange(target).unwrap_or_else(|| panic!("exchange {i} was refused")))
        .collect();
    let opened = Instant::now();

    // A ninth, from a ninth address, is closed without an answer, although
    // it sent a valid digest.
    assert!(
        open_exchange(target).is_none(),
        "a ninth exchange was served while eight were held"
    );

    // One held exchange starts a frame just under the 16 MiB limit and
    // sends a few bytes of it: a slow frame, ended at the 10 s frame
    // timeout like the silent ones, not at once and not never.
    held[0]
        .write_all(&(16u32 * 1024 * 1024 - 1).to_be_bytes())
        .unwrap();
    held[0].write_all(&[0u8; 100]).unwrap();
    for (i, stream) in held.iter_mut().enumerate() {
        let closed = closed_after(stream, Duration::from_secs(40));
        let since = opened.elapsed();
        assert!(closed.is_some(), "held exchange {i} open after {since:?}");
        assert!(
            since >= Duration::from_secs(7),
            "held exchange {i} closed after {since:?}, before the 10 s frame timeout"
        );
    }
    eprintln!(
        "the held exchanges were closed {:?} after their Delta",
        opened.elapsed()
    );

    // Their slots are free again: a new exchange is served.
    assert!(
        open_exchange(target).is_some(),
        "no exchange is served after the held ones ended"
    );
}

#[test]
fn a_later_frame_past_16_mib_ends_the_exchange_at_once() {
    let cluster = one_agent();
    let target = cluster.agents[0].gossip_addr();
    let mut stream = open_exchange(target).expect("the exchange is served");
    // The length prefix of a frame one byte over the 16 MiB limit: refused
    // from the prefix, before the agent allocates or waits for it.
    stream
        .write_all(&(16u32 * 1024 * 1024 + 1).to_be_bytes())
        .unwrap();
    let closed = closed_after(&mut stream, Duration::from_secs(8));
    assert!(
        closed.is_some_and(|after| after < Duration::from_secs(5)),
        "an oversized later frame was held ({closed:?}; the frame timeout is 10 s)"
    );
    // One at the limit is not refused from its prefix: the agent waits
    // for its bytes.
    let mut stream = open_exchange(target).expect("the exchange is served");
    stream
        .write_all(&(16u32 * 1024 * 1024).to_be_bytes())
        .unwrap();
    assert_eq!(
        closed_after(&mut stream, Duration::from_secs(3)),
        None,
        "a frame of exactly 16 MiB was refused from its prefix"
    );
}

#[test]
fn an_exchange_ends_after_4096_messages() {
    let cluster = one_agent();
    let target = cluster.agents[0].gossip_addr();
    let envelope = plaintext_envelope();
    let mut stream = open_exchange(target).expect("the exchange is served");
    stream.set_nodelay(true).unwrap();

    // The agent sent its Delta (message 1); every page we send says we
    // have more, so each of its answers does too, until its limit.
    let started = Instant::now();
    let mut answers = 1u32;
    let mut next = SyncMessage::Records(Records {
        records: Vec::new(),
        kv: page_with_more(),
    });
    loop {
        if write_sync_frame(&mut stream, &envelope, &next).is_err() {
            break;
        }
        match read_sync_frame(&mut stream, &envelope) {
            Ok(Some(message)) => {
                assert_eq!(message.step(), SyncStep::Kv, "answer {}", answers + 1);
                answers += 1;
            }
            Ok(None) => break,
            Err(error) => panic!("after {answers} answers: {error}"),
        }
        assert!(
            answers <= 5000,
            "the exchange did not end at 4,096 messages"
        );
        next = SyncMessage::Kv(page_with_more());
    }
    eprintln!(
        "the agent answered {answers} messages in {:?}",
        started.elapsed()
    );
    assert_eq!(
        answers, 4096,
        "messages the agent sent before ending the exchange"
    );
}
