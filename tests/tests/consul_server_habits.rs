//! What Consul's server does that its clients rely on, checked on a real
//! agent: paths with repeated slashes or `.`/`..` segments are redirected
//! to their clean form (and the token guard only ever sees clean paths),
//! reverse DNS (`in-addr.arpa`, `ip6.arpa`) names nodes and services,
//! service names with `_` are served over HTTP and skipped by DNS, and
//! HTTPS checks verify (or skip verifying) the server's certificate.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::dns::dig;
use shoal_tests::raw::{RawReply, raw_request};
use shoal_tests::{Agent, AgentOptions, http_json, wait_for};

const TOKEN: &str = "habits-token";
const SLOW: Duration = Duration::from_secs(30);

fn send(
    agent: &Agent,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> RawReply {
    raw_request(
        agent.http_addr(),
        method,
        target,
        "localhost",
        headers,
        body,
    )
    .unwrap()
}

fn with_token(agent: &Agent, method: &str, target: &str, body: &[u8]) -> RawReply {
    send(agent, method, target, &[("X-Consul-Token", TOKEN)], body)
}

/// The value of `key` as the token holder reads it (`None`: absent).
fn value_of(agent: &Agent, key: &str) -> Option<String> {
    let reply = with_token(agent, "GET", &format!("/v1/kv/{key}?raw"), b"");
    match reply.status {
        200 => Some(reply.body),
        404 => None,
        status => panic!("GET {key}: {status} {}", reply.body),
    }
}

#[test]
fn unclean_paths_redirect_to_the_clean_path_and_the_guard_sees_only_clean_paths() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(
        root.path(),
        "habits-paths",
        &["--acl-token", TOKEN, "--acl-protect-reads"],
    );
    assert_eq!(
        with_token(&agent, "PUT", "/v1/kv/app/config", b"v1").status,
        200
    );

    // GET and HEAD: 301 to the cleaned path, the query kept, as Go's
    // ServeMux (and so Consul) answers; trailing slashes stay.
    for (target, clean) in [
        ("/v1/kv//app/config?raw", "/v1/kv/app/config?raw"),
        ("/v1/kv/app/./config", "/v1/kv/app/config"),
        ("/v1/kv/x/../app/config", "/v1/kv/app/config"),
        ("/v1/kv//app/", "/v1/kv/app/"),
        ("/v1//agent//self", "/v1/agent/self"),
        ("//health/ready", "/health/ready"),
        ("/v1/kv/../../../etc/passwd", "/etc/passwd"),
        ("/ui/./", "/ui/"),
    ] {
        for method in ["GET", "HEAD"] {
            let reply = send(&agent, method, target, &[], b"");
            assert_eq!(reply.status, 301, "{method} {target}: {}", reply.head);
            assert_eq!(
                reply.header("Location").as_deref(),
                Some(clean),
                "{method} {target}"
            );
        }
    }
    // A client that follows redirects (ureq, as Consul's clients do) reads
    // the value through the doubled slash.
    let (status, body) = http_json(
        "GET",
        agent.http_addr(),
        &format!("/v1/kv//app/config?raw&token={TOKEN}"),
        None,
    )
    .unwrap();
    assert_eq!((status, body), (200, json!("v1")));

    // The guard decides on the clean path: no spelling of the keyring's
    // path reaches it, or anything else, without the token.
    for target in [
        "/v1//operator/keyring",
        "/v1/operator//keyring",
        "/v1/kv/../operator/keyring",
        "/v1/./operator/keyring",
        "/v1/agent/../operator/keyring",
    ] {
        let reply = send(&agent, "GET", target, &[], b"");
        assert_eq!(reply.status, 301, "GET {target}: {}", reply.head);
        let location = reply.header("Location").unwrap();
        assert!(
            location.starts_with("/v1/operator/keyring"),
            "{target} -> {location}"
        );
        let followed = send(&agent, "GET", &location, &[], b"");
        assert_eq!(followed.status, 403, "{location}: {}", followed.body);
        assert!(
            followed.error().contains("ACL not found"),
            "{}",
            followed.body
        );
    }
    // Percent-encoded dots and slashes are data, not path syntax (as in
    // Go since 1.22): this is a KV key under the KV route, not the keyring.
    let reply = send(&agent, "GET", "/v1/kv/%2e%2e/operator/keyring", &[], b"");
    assert_eq!(reply.status, 403, "{}", reply.body);
    let reply = with_token(&agent, "GET", "/v1/kv/%2e%2e/operator/keyring", b"");
    assert_eq!(
        reply.status, 404,
        "a KV miss, not the keyring: {}",
        reply.body
    );

    // Writes: 308 (the method and body are to be sent again), and the
    // unclean request itself changes nothing, with or without the token
    // and whatever its origin.
    for headers in [
        vec![],
        vec![("X-Consul-Token", TOKEN)],
        vec![("Origin", "http://evil.example"), ("X-Consul-Token", TOKEN)],
    ] {
        for (method, target, clean) in [
            ("PUT", "/v1/kv//app/config", "/v1/kv/app/config"),
            ("DELETE", "/v1/kv/app/./config", "/v1/kv/app/config"),
            ("PUT", "/v1/agent/../kv/app/config", "/v1/kv/app/config"),
        ] {
            let reply = send(&agent, method, target, &headers, b"v2");
            assert_eq!(
                reply.status, 308,
                "{method} {target} {headers:?}: {}",
                reply.head
            );
            assert_eq!(reply.header("Location").as_deref(), Some(clean));
            assert_eq!(value_of(&agent, "app/config").as_deref(), Some("v1"));
        }
    }
    // Sent again where it was redirected to, the write goes through the
    // guard like any other.
    assert_eq!(
        send(&agent, "PUT", "/v1/kv/app/config", &[], b"v2").status,
        403
    );
    assert_eq!(
        with_token(&agent, "PUT", "/v1/kv/app/config", b"v2").status,
        200
    );
    assert_eq!(value_of(&agent, "app/config").as_deref(), Some("v2"));

    // A key that really holds `//` is reachable percent-encoded.
    assert_eq!(
        with_token(&agent, "PUT", "/v1/kv/odd%2F%2Fkey", b"x").status,
        200
    );
    let keys = with_token(&agent, "GET", "/v1/kv/?keys", b"");
    let keys: Value = serde_json::from_str(&keys.body).unwrap();
    assert!(
        keys.as_array().unwrap().contains(&json!("odd//key")),
        "{keys}"
    );
    assert_eq!(value_of(&agent, "odd%2F%2Fkey").as_deref(), Some("x"));
}

/// `dig -x ADDRESS` against `agent`: the PTR targets, sorted, and the status.
fn reverse(agent: &Agent, address: &str) -> (String, Vec<String>) {
    let reply = dig(agent.dns_addr(), "-x", address, &[]).unwrap();
    (reply.status.clone(), reply.answers("PTR"))
}

#[test]
fn reverse_lookups_name_nodes_and_services_and_underscore_names_are_http_only() {
    let root = tempfile::tempdir().unwrap();
    let config = root.path().join("agent.toml");
    let options = AgentOptions::with_config_file(
        &config,
        "[[services]]\nname = \"pay_ments\"\nid = \"pay-1\"\naddress = \"10.9.8.9\"\nport = 81\n",
        &[],
    );
    let agent = Agent::start(
        root.path(),
        AgentOptions {
            name: "habits-dns".into(),
            ..options
        },
    );
    agent.wait_serving();
    for registration in [
        json!({"Name": "web", "ID": "web-1", "Address": "10.9.8.7", "Port": 80}),
        json!({"Name": "db", "ID": "db-1", "Address": "fd00::7", "Port": 5432}),
        json!({"Name": "queue_worker", "ID": "qw-1", "Address": "10.9.8.10", "Port": 82}),
    ] {
        let (status, body) = agent.register_service(&registration).unwrap();
        assert_eq!(status, 200, "{registration}: {body}");
    }

    // Names with `_`: served over HTTP, with a warning that DNS can't.
    for name in ["pay_ments", "queue_worker"] {
        let instances = agent.get(&format!("/v1/catalog/service/{name}")).unwrap();
        assert_eq!(
            instances.as_array().unwrap().len(),
            1,
            "{name}: {instances}"
        );
        assert!(
            agent
                .log()
                .lines()
                .any(|line| line.contains("WARN") && line.contains(name) && line.contains("DNS")),
            "no warning for {name}:\n{}",
            agent.log()
        );
    }

    // PTR: the node's address names the node, a service's own address
    // names the service (v4 and v6), as Consul answers.
    let node = agent.ip.to_string();
    wait_for(SLOW, "PTR of the node", || match reverse(&agent, &node) {
        (status, names) if status == "NOERROR" && names == ["habits-dns.node.dc1.consul."] => {
            Ok(())
        }
        other => Err(format!("{other:?}")),
    });
    assert_eq!(
        reverse(&agent, "10.9.8.7"),
        (
            "NOERROR".to_string(),
            vec!["web.service.consul.".to_string()]
        )
    );
    assert_eq!(
        reverse(&agent, "fd00::7"),
        (
            "NOERROR".to_string(),
            vec!["db.service.consul.".to_string()]
        )
    );
    // Other types of a reverse name we know: no records, no error.
    let a = dig(agent.dns_addr(), "7.8.9.10.in-addr.arpa", "A", &[]).unwrap();
    assert_eq!(
        (a.status.as_str(), a.answer.len()),
        ("NOERROR", 0),
        "{}",
        a.text
    );
    // An address we don't know is not ours to answer (no recursors here).
    assert_eq!(reverse(&agent, "192.0.2.1").0, "REFUSED");
    assert_eq!(reverse(&agent, "2001:db8::1").0, "REFUSED");

    // `_` names are skipped by DNS, forward and reverse, with one log line
    // per name however often they are asked.
    for _ in 0..3 {
        let reply = dig(agent.dns_addr(), "queue_worker.service.consul", "A", &[]).unwrap();
        assert_eq!(reply.status, "NXDOMAIN", "{}", reply.text);
        let reply = dig(
            agent.dns_addr(),
            "_pay_ments._tcp.service.consul",
            "SRV",
            &[],
        )
        .unwrap();
        assert_eq!(reply.status, "NXDOMAIN", "{}", reply.text);
        assert_eq!(reverse(&agent, "10.9.8.10").0, "REFUSED");
    }
    let skipped = |name: &str| {
        agent
            .log()
            .lines()
            .filter(|line| line.contains("not served over DNS") && line.contains(name))
            .count()
    };
    assert_eq!(skipped("queue_worker"), 1, "{}", agent.log());
    assert_eq!(skipped("pay_ments"), 1, "{}", agent.log());
    // Names without `_` are answered as before.
    let reply = dig(agent.dns_addr(), "web.service.consul", "A", &[]).unwrap();
    assert_eq!(reply.answers("A"), ["10.9.8.7"], "{}", reply.text);
}

/// A certificate authority and a leaf it signed, as PEM.
struct Pki {
    ca_pem: String,
    leaf_pem: String,
    leaf_key_pem: String,
}

/// A CA called `authority` and a leaf for `name` signed by it.
fn pki(authority: &str, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, authority);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        leaf_pem: leaf.pem(),
        leaf_key_pem: leaf_key.serialize_pem(),
    }
}

/// An HTTPS server on loopback that answers every request `200 ok` and
/// remembers the SNI name each connection asked for.
struct TlsServer {
    addr: SocketAddr,
    sni: Arc<Mutex<Vec<Option<String>>>>,
}

impl TlsServer {
    fn start(pki: &Pki) -> TlsServer {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs = vec![CertificateDer::from_pem_slice(pki.leaf_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(pki.leaf_key_pem.as_bytes()).unwrap();
        // Deprecated in rustls 0.23.48 (no post-quantum key exchange), which
        // a test server on loopback doesn't need.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let config = Arc::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sni = Arc::new(Mutex::new(Vec::new()));
        let seen = sni.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let config = config.clone();
                let seen = seen.clone();
                std::thread::spawn(move || {
                    stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
                    let mut connection = rustls::ServerConnection::new(config).unwrap();
                    let mut tls = rustls::Stream::new(&mut connection, &mut stream);
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let name = tls.conn.server_name().map(str::to_string);
                    seen.lock().unwrap().push(name);
                    let _ = tls.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nhealthy\n",
                    );
                    let _ = tls.flush();
                    tls.conn.send_close_notify();
                    let _ = tls.flush();
                });
            }
        });
        TlsServer { addr, sni }
    }
}

/// Registers a node check `id` probing `url` with the given TLS fields.
fn https_check(agent: &Agent, id: &str, url: &str, tls: Value) {
    let mut check = json!({"ID": id, "Name": id, "HTTP": url, "Interval": "1s", "Timeout": "5s"});
    for (key, value) in tls.as_object().unwrap() {
        check[key] = value.clone();
    }
    let (status, body) = http_json(
        "PUT",
        agent.http_addr(),
        "/v1/agent/check/register",
        Some(check.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(status, 200, "{check}: {body}");
}

/// Waits until check `id` has `status`; returns its output.
/// Waits until check `id` has run and come out `status`: a check starts
/// critical with no output (as Consul's do), so a critical status alone
/// may be from before its first run.
fn wait_check(agent: &Agent, id: &str, status: &str) -> String {
    wait_for(SLOW, &format!("check {id} {status}"), || {
        let checks = agent.get("/v1/agent/checks")?;
        let check = &checks[id];
        let output = check["Output"].as_str().unwrap_or_default();
        if check["Status"] == status && !output.is_empty() {
            Ok(output.to_string())
        } else {
            Err(check.to_string())
        }
    })
}

#[test]
fn https_checks_verify_the_certificate_or_skip_it_and_send_the_server_name() {
    let root = tempfile::tempdir().unwrap();
    let trusted = pki("Shoal Test CA", "shoal-test.local");
    let untrusted = pki("Stranger CA", "shoal-test.local");
    let good = TlsServer::start(&trusted);
    let stranger = TlsServer::start(&untrusted);
    // The agent trusts the test CA through the system trust store's
    // standard override (SSL_CERT_FILE), as an operator would add a CA.
    let ca_file = root.path().join("ca.pem");
    std::fs::write(&ca_file, &trusted.ca_pem).unwrap();
    let config = root.path().join("agent.toml");
    let mut options = AgentOptions::with_config_file(
        &config,
        &format!(
            "[[services]]\nname = \"secure\"\nport = 443\n\n[[services.checks]]\nid = \"from-config\"\nhttp = \"https://{}/health\"\ntls_skip_verify = true\ninterval = \"1s\"\n",
            stranger.addr
        ),
        &[],
    );
    options.name = "habits-tls".into();
    options
        .env
        .push(("SSL_CERT_FILE".into(), ca_file.display().to_string()));
    let agent = Agent::start(root.path(), options);
    agent.wait_serving();

    let good_url = format!("https://{}/health", good.addr);
    let stranger_url = format!("https://{}/health", stranger.addr);
    https_check(
        &agent,
        "trusted-by-name",
        &good_url,
        json!({"TLSServerName": "shoal-test.local"}),
    );
    https_check(
        &agent,
        "wrong-name",
        &good_url,
        json!({"TLSServerName": "other.example"}),
    );
    https_check(&agent, "ip-not-in-cert", &good_url, json!({}));
    https_check(
        &agent,
        "untrusted",
        &stranger_url,
        json!({"TLSServerName": "shoal-test.local"}),
    );
    https_check(
        &agent,
        "skip-verify",
        &stranger_url,
        json!({"TLSSkipVerify": true}),
    );

    let output = wait_check(&agent, "trusted-by-name", "passing");
    assert!(
        output.contains("200 OK") && output.contains("healthy"),
        "{output}"
    );
    assert!(
        good.sni
            .lock()
            .unwrap()
            .iter()
            .any(|name| name.as_deref() == Some("shoal-test.local")),
        "SNI seen: {:?}",
        good.sni.lock().unwrap()
    );
    let output = wait_check(&agent, "skip-verify", "passing");
    assert!(output.contains("200 OK"), "{output}");
    wait_check(&agent, "from-config", "passing");

    let output = wait_check(&agent, "untrusted", "critical");
    assert!(output.contains(&stranger_url), "{output}");
    assert!(
        output.contains("not signed by an authority the system trusts")
            && output.contains("TLSSkipVerify"),
        "the output should say the certificate is not trusted and how to skip: {output}"
    );
    for (id, name) in [
        ("wrong-name", "other.example"),
        ("ip-not-in-cert", "127.0.0.1"),
    ] {
        let output = wait_check(&agent, id, "critical");
        assert!(
            output.contains(&format!("not valid for the name `{name}`")),
            "{id}: {output}"
        );
    }
}
