//! A real consumer of the DNS interface: Debian's HAProxy, with a
//! `resolvers` section pointing at an agent and a `server-template` over
//! `_web._tcp.service.consul`, in front of two HTTP servers registered as
//! instances on another agent.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tests::dns::{register_ttl_service, set_ttl};
use shoal_tests::{Cluster, TinyHttp, unique_loopback, wait_for};

const SLOW: Duration = Duration::from_secs(30);

/// An HTTP server on `ip` that answers every request with its own name.
fn named_http(ip: IpAddr, name: &'static str) -> TinyHttp {
    TinyHttp::serve((ip, 0).into(), move |_| ("200 OK".into(), name.into()))
}

/// HAProxy in the foreground, killed on drop.
struct Haproxy {
    child: Child,
    frontend: SocketAddr,
    log: std::path::PathBuf,
}

impl Haproxy {
    fn start(dir: &std::path::Path, dns: SocketAddr) -> Haproxy {
        let ip = unique_loopback();
        let frontend = TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap();
        // Re-resolve every 200 ms and drop a server as soon as its record
        // is gone, so that the timings measure Shoal, not HAProxy's caches.
        let config = format!(
            "global\n    maxconn 256\n\
             defaults\n    mode http\n    timeout connect 2s\n    timeout client 10s\n    timeout server 10s\n\
             resolvers shoal\n    nameserver agent {dns}\n    accepted_payload_size 4096\n\
             \x20   resolve_retries 3\n    timeout resolve 200ms\n    timeout retry 200ms\n\
             \x20   hold valid 200ms\n    hold obsolete 0s\n    hold nx 200ms\n\
             frontend web\n    bind {frontend}\n    default_backend web\n\
             backend web\n    balance roundrobin\n\
             \x20   server-template web 4 _web._tcp.service.consul resolvers shoal resolve-prefer ipv4 init-addr none\n"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, &config).unwrap();
        let log = dir.join("haproxy.log");
        let output = std::fs::File::create(&log).unwrap();
        let child = Command::new("haproxy")
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(output.try_clone().unwrap())
            .stderr(output)
            .spawn()
            .expect("run haproxy (apt-get install haproxy)");
        Haproxy {
            child,
            frontend,
            log,
        }
    }

    /// One request through HAProxy: the body (the backend's name), or
    /// what went wrong.
    fn get(&self) -> Result<String, String> {
        let mut stream = TcpStream::connect_timeout(&self.frontend, Duration::from_secs(2))
            .map_err(|error| error.to_string())?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n")
            .map_err(|error| error.to_string())?;
        let mut reply = String::new();
        stream
            .read_to_string(&mut reply)
            .map_err(|error| error.to_string())?;
        match reply.split_once("\r\n\r\n") {
            Some((head, body)) if head.starts_with("HTTP/1.1 200") => Ok(body.to_string()),
            _ => Err(reply.lines().next().unwrap_or_default().to_string()),
        }
    }

    /// The backends that answered `count` requests in a row.
    fn spread(&self, count: usize) -> Result<Vec<String>, String> {
        let mut seen: Vec<String> = (0..count).map(|_| self.get()).collect::<Result<_, _>>()?;
        seen.sort();
        seen.dedup();
        Ok(seen)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- haproxy log -----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

#[test]
fn haproxy_follows_the_instances_health_through_srv_records() {
    let cluster = Cluster::start(2);
    cluster.wait_all_alive(SLOW);
    let (asked, owner) = (&cluster.agents[0], &cluster.agents[1]);
    let alpha = named_http(unique_loopback(), "alpha");
    let beta = named_http(unique_loopback(), "beta");
    for (id, server) in [("alpha", &alpha), ("beta", &beta)] {
        let ip = server.addr.ip().to_string();
        register_ttl_service(
            owner,
            "web",
            id,
            Some(&ip),
            server.addr.port(),
            &[],
            "passing",
        );
    }
    let started = Instant::now();
    let haproxy = Haproxy::start(cluster.root.path(), asked.dns_addr());
    wait_for(SLOW, "requests through HAProxy to reach both", || {
        let seen = haproxy.spread(6)?;
        if seen == ["alpha", "beta"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let both_after = started.elapsed();

    // Failing alpha's check takes it out of HAProxy's rotation.
    set_ttl(owner, "alpha", "fail");
    let failed = Instant::now();
    wait_for(SLOW, "alpha out of HAProxy's rotation", || {
        let seen = haproxy.spread(6)?;
        if seen == ["beta"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let out_after = failed.elapsed();
    // And it stays out.
    assert_eq!(haproxy.spread(10).unwrap(), ["beta"]);

    // Passing again brings it back.
    set_ttl(owner, "alpha", "pass");
    let passed = Instant::now();
    wait_for(SLOW, "alpha back in HAProxy's rotation", || {
        let seen = haproxy.spread(6)?;
        if seen == ["alpha", "beta"] {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    });
    let back_after = passed.elapsed();
    eprintln!(
        "HAProxy: both backends reached {both_after:?} after its start; \
         alpha out {out_after:?} after its check failed, back {back_after:?} after it passed"
    );
    // Gossip to the asked agent, then HAProxy's next resolution (200 ms):
    // generous bounds for a loaded machine.
    assert!(out_after < Duration::from_secs(10), "{out_after:?}");
    assert!(back_after < Duration::from_secs(10), "{back_after:?}");
}
