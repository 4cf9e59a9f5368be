//! A web page open in a browser on the host can't drive the API (issue 20),
//! with real agents and requests written byte for byte as browsers send
//! them:
//!
//! - a request whose `Origin` is not the agent's own, or that carries
//!   `Sec-Fetch-Site: cross-site` or `same-site`, is refused with a 403
//!   that says why, on every route, reads included, and changes nothing;
//! - a `POST` whose body a page can send cross-site without a preflight
//!   (`text/plain`, forms) gets a 415;
//! - Consul's legacy `GET` forms of write routes answer 405 (use `PUT`);
//! - the keyring is read or changed only with the token, or with the
//!   operator's opt-in (`acl.allow_unauthenticated_keyring`);
//!
//! while same-origin requests (the embedded UI), requests without browser
//! headers (every stock client, curl) and the curl examples of the README
//! and the guides keep working.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::raw::{RawReply, raw_request};
use shoal_tests::{Agent, AgentOptions, wait_for};

const KEY_A: &str = "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=";
const KEY_B: &str = "QkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=";
const TOKEN: &str = "browser-test-token";
const EVIL: &str = "http://evil.example";
/// The opt-in as an environment variable: an agent that does not know it
/// (before the fix) still starts.
const KEYRING_OPT_IN: (&str, &str) = ("SHOAL_ACL_ALLOW_UNAUTHENTICATED_KEYRING", "true");

/// One request to `agent` as a browser would address it (`Host` is the
/// agent's address), with `headers` and `body`.
fn send(
    agent: &Agent,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<RawReply, String> {
    raw_request(
        agent.http_addr(),
        method,
        target,
        &agent.http_addr().to_string(),
        headers,
        body,
    )
}

fn ok(agent: &Agent, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Value {
    let reply = send(agent, method, target, headers, body).unwrap();
    assert_eq!(reply.status, 200, "{method} {target}: {}", reply.body);
    serde_json::from_str(&reply.body).unwrap_or(Value::String(reply.body))
}

/// The agent's own origin, as its UI's pages have it.
fn own_origin(agent: &Agent) -> String {
    format!("http://{}", agent.http_addr())
}

/// Every write route of `agent/src/api/mod.rs` with each method that
/// reaches it and a body that would succeed, in an order where no route
/// undoes another's evidence; `leave` last.
fn write_routes() -> Vec<(&'static str, String, String)> {
    let service = json!({"Name": "evil", "Port": 1}).to_string();
    let check = json!({"Name": "evil", "TTL": "10s"}).to_string();
    let update = json!({"Status": "passing", "Output": "pwned"}).to_string();
    let flag = json!({"enabled": true, "rollout_percentage": 100}).to_string();
    let key = json!({ "Key": KEY_B }).to_string();
    let template = json!({"template": "{{ 1 + 1 }}"}).to_string();
    let mut routes = vec![
        ("PUT", "/v1/agent/service/register", service),
        ("PUT", "/v1/agent/check/register", check),
        ("PUT", "/v1/agent/check/pass/ttl1?note=pwned", String::new()),
        ("PUT", "/v1/agent/check/warn/ttl1?note=pwned", String::new()),
        ("PUT", "/v1/agent/check/fail/ttl1?note=pwned", String::new()),
        ("PUT", "/v1/agent/check/update/ttl1", update),
        ("PUT", "/v1/agent/check/deregister/ttl1", String::new()),
        (
            "PUT",
            "/v1/agent/service/maintenance/web?enable=true&reason=pwned",
            String::new(),
        ),
        (
            "PUT",
            "/v1/agent/maintenance?enable=true&reason=pwned",
            String::new(),
        ),
        ("PUT", "/v1/agent/service/deregister/web", String::new()),
        ("PUT", "/v1/shoal/fault?block=127.0.0.9", String::new()),
        ("PUT", "/v1/kv/k", "pwned".into()),
        ("PUT", "/v1/kv/?recurse", "pwned".into()),
        ("PUT", "/v1/kv?recurse", "pwned".into()),
        ("PUT", "/v1/flags/f", flag),
        ("POST", "/v1/operator/keyring", key.clone()),
        ("PUT", "/v1/operator/keyring", key.clone()),
        (
            "DELETE",
            "/v1/operator/keyring",
            json!({ "Key": KEY_A }).to_string(),
        ),
        ("PUT", "/v1/event/fire/deploy", "pwned".into()),
        ("POST", "/v1/shoal/template/render", template.clone()),
        ("POST", "/v1/shoal/template/render-env", template),
        ("DELETE", "/v1/flags/f", String::new()),
        ("DELETE", "/v1/kv/k", String::new()),
        ("DELETE", "/v1/kv/?recurse", String::new()),
        ("DELETE", "/v1/kv?recurse", String::new()),
        ("PUT", "/v1/agent/join/127.0.0.9:7946", String::new()),
        ("PUT", "/v1/agent/force-leave/target?prune", String::new()),
        ("PUT", "/v1/agent/reload", String::new()),
        ("PUT", "/v1/agent/leave", String::new()),
    ];
    routes.sort_by_key(|(_, target, _)| target.ends_with("/leave"));
    routes
        .into_iter()
        .map(|(method, target, body)| (method, target.to_string(), body))
        .collect()
}

/// Headers that mark a request as coming from a page of another origin, as
/// browsers send them (Fetch Metadata on loopback, `Origin` on every
/// `POST`, `PUT`, `DELETE` and CORS request).
fn cross_site_variants(agent: &Agent) -> Vec<(String, Vec<(&'static str, String)>)> {
    let other_port = format!("http://{}:8080", agent.ip);
    vec![
        (
            "a foreign Origin".into(),
            vec![("Origin", EVIL.to_string())],
        ),
        ("Origin: null".into(), vec![("Origin", "null".to_string())]),
        (
            "the agent's address on another port".into(),
            vec![("Origin", other_port)],
        ),
        (
            "Sec-Fetch-Site: cross-site".into(),
            vec![
                ("Sec-Fetch-Site", "cross-site".to_string()),
                ("Sec-Fetch-Mode", "no-cors".to_string()),
                ("Sec-Fetch-Dest", "image".to_string()),
            ],
        ),
        (
            "Sec-Fetch-Site: same-site".into(),
            vec![
                ("Sec-Fetch-Site", "same-site".to_string()),
                ("Sec-Fetch-Mode", "cors".to_string()),
            ],
        ),
        (
            "a foreign Origin with Sec-Fetch-Site: cross-site".into(),
            vec![
                ("Origin", EVIL.to_string()),
                ("Sec-Fetch-Site", "cross-site".to_string()),
                ("Sec-Fetch-Mode", "no-cors".to_string()),
            ],
        ),
    ]
}

/// The bodies a page can send cross-site without a preflight.
const SIMPLE_CONTENT_TYPES: [&str; 4] = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=----x",
];

/// Everything a write could change, read by a local client.
fn observable_state(agent: &Agent) -> Value {
    let get = |target: &str| ok(agent, "GET", target, &[], b"");
    let self_ = get("/v1/agent/self");
    json!({
        "services": get("/v1/agent/services"),
        "checks": get("/v1/agent/checks"),
        "kv": get("/v1/kv/?recurse"),
        "flags": get("/v1/flags"),
        "fault": get("/v1/shoal/fault"),
        "keyring": get("/v1/operator/keyring"),
        "events": get("/v1/event/list"),
        "members": get("/v1/agent/members").as_array().map(Vec::len),
        "reloads": self_["Stats"]["reload"],
        "record_version": self_["Stats"]["agent"]["record_version"],
    })
}

/// An agent without a token (the default) that would let every write
/// through, the keyring included, with a service, a TTL check, a key and a
/// flag to change.
fn open_agent(root: &Path, name: &str) -> Agent {
    let agent = Agent::start(
        root,
        AgentOptions {
            args: vec!["--encrypt".into(), KEY_A.into(), "--fault-injection".into()],
            env: vec![(KEYRING_OPT_IN.0.into(), KEYRING_OPT_IN.1.into())],
            ..AgentOptions::named(name)
        },
    );
    agent.wait_serving();
    let registration = json!({
        "Name": "web", "ID": "web", "Port": 80,
        "Check": {"CheckID": "ttl1", "Name": "ttl1", "TTL": "10m"},
    });
    let flag = json!({"enabled": false, "rollout_percentage": 0});
    for (target, body) in [
        ("/v1/agent/service/register", registration.to_string()),
        ("/v1/kv/k", "orig".to_string()),
        ("/v1/flags/f", flag.to_string()),
    ] {
        ok(&agent, "PUT", target, &[], body.as_bytes());
    }
    agent
}

#[test]
fn cross_site_writes_are_refused_on_every_route_and_change_nothing() {
    let root = tempfile::tempdir().unwrap();
    let mut agent = open_agent(root.path(), "target");
    let before = observable_state(&agent);
    assert_eq!(before["checks"]["ttl1"]["Status"], "critical", "{before}");

    let mut tried = 0;
    let mut wrong = Vec::new();
    for (method, target, body) in write_routes() {
        // Each browser variant: 403, saying why.
        for (variant, headers) in cross_site_variants(&agent) {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            tried += 1;
            match send(&agent, method, &target, &headers, body.as_bytes()) {
                Ok(reply)
                    if reply.status == 403
                        && (reply.error().contains("Origin")
                            || reply.error().contains("Sec-Fetch-Site")) => {}
                Ok(reply) => wrong.push(format!(
                    "{method} {target} with {variant}: {} {}",
                    reply.status, reply.body
                )),
                Err(error) => wrong.push(format!("{method} {target} with {variant}: {error}")),
            }
        }
        // A POST body a page can send without a preflight, from a browser
        // that sends no Origin or Fetch Metadata (an old one, or a
        // non-loopback http_addr): 415, naming the type and the fix.
        if method == "POST" {
            for content_type in SIMPLE_CONTENT_TYPES {
                tried += 1;
                let headers = [("Content-Type", content_type)];
                match send(&agent, method, &target, &headers, body.as_bytes()) {
                    Ok(reply)
                        if reply.status == 415
                            && reply
                                .error()
                                .contains(content_type.split(';').next().unwrap())
                            && reply.error().contains("application/json") => {}
                    Ok(reply) => wrong.push(format!(
                        "{method} {target} as {content_type}: {} {}",
                        reply.status, reply.body
                    )),
                    Err(error) => {
                        wrong.push(format!("{method} {target} as {content_type}: {error}"))
                    }
                }
            }
        }
    }
    // Consul's legacy GET forms of write routes (and HEAD, which follows
    // GET): 405, with a JSON body that says to use PUT.
    for target in [
        "/v1/agent/service/deregister/web",
        "/v1/agent/check/deregister/ttl1",
        "/v1/agent/check/pass/ttl1?note=pwned",
        "/v1/agent/check/warn/ttl1?note=pwned",
        "/v1/agent/check/fail/ttl1?note=pwned",
        "/v1/agent/service/maintenance/web?enable=true",
        "/v1/agent/maintenance?enable=true",
        "/v1/agent/leave",
        "/v1/agent/reload",
        "/v1/event/fire/deploy",
    ] {
        for method in ["GET", "HEAD"] {
            tried += 1;
            match send(&agent, method, target, &[], b"") {
                Ok(reply)
                    if reply.status == 405
                        && (method == "HEAD" || reply.error().contains("PUT")) => {}
                Ok(reply) => wrong.push(format!(
                    "{method} {target}: {} {}",
                    reply.status, reply.body
                )),
                Err(error) => wrong.push(format!("{method} {target}: {error}")),
            }
        }
    }
    assert!(
        agent.is_running(),
        "a cross-site leave stopped the agent; not refused:\n{}",
        wrong.join("\n")
    );
    assert!(
        wrong.is_empty(),
        "{} of {tried} browser requests were not refused as they should be:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    let after = observable_state(&agent);
    assert_eq!(after, before, "a refused request changed state");

    // Every refusal is counted: 403 and 415 under their route, the
    // router's 405 as unmatched.
    let metrics = send(&agent, "GET", "/metrics", &[], b"").unwrap().body;
    for series in [
        r#"shoal_api_requests_total{route="/v1/kv/{*key}",method="PUT",code="403"}"#,
        r#"shoal_api_requests_total{route="/v1/operator/keyring",method="POST",code="4xx"}"#,
        r#"shoal_api_requests_total{route="unmatched",method="GET",code="405"}"#,
    ] {
        let count = metrics
            .lines()
            .find_map(|line| line.strip_prefix(series))
            .and_then(|value| value.trim().parse::<u64>().ok());
        assert!(
            count.is_some_and(|n| n > 0),
            "{series} not counted:\n{metrics}"
        );
    }
}

/// Read routes, with something in each that a page must not see.
const READS: [&str; 12] = [
    "/v1/agent/self",
    "/v1/agent/members",
    "/v1/agent/services",
    "/v1/catalog/services",
    "/v1/health/service/web",
    "/v1/kv/k?raw",
    "/v1/kv/?recurse",
    "/v1/flags/f",
    "/v1/operator/keyring",
    "/v1/event/list",
    "/metrics",
    "/ui/",
];

#[test]
fn cross_site_reads_are_refused_even_when_cached() {
    let root = tempfile::tempdir().unwrap();
    let agent = open_agent(root.path(), "reads");
    let mut wrong = Vec::new();
    for target in READS {
        // Twice from a local client: the second answer may come from the
        // response cache, which must not bypass the check either.
        for _ in 0..2 {
            let reply = send(&agent, "GET", target, &[], b"").unwrap();
            assert_eq!(reply.status, 200, "GET {target}: {}", reply.body);
        }
        for (variant, headers) in cross_site_variants(&agent) {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            let reply = send(&agent, "GET", target, &headers, b"").unwrap();
            let leaked = reply.body.trim() == "orig" || reply.body.contains(KEY_A);
            if reply.status != 403 || leaked {
                wrong.push(format!(
                    "GET {target} with {variant}: {} {}",
                    reply.status, reply.body
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "cross-site reads answered:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn same_origin_and_non_browser_requests_still_work() {
    let root = tempfile::tempdir().unwrap();
    let agent = open_agent(root.path(), "same-origin");
    let origin = own_origin(&agent);
    // The UI's own requests: Origin is the agent's, Fetch Metadata says
    // same-origin; its KV editor sends text/plain with PUT.
    let ui = [
        ("Origin", origin.as_str()),
        ("Sec-Fetch-Site", "same-origin"),
        ("Sec-Fetch-Mode", "cors"),
    ];
    let text = [
        ui.as_slice(),
        &[("Content-Type", "text/plain;charset=UTF-8")],
    ]
    .concat();
    assert_eq!(ok(&agent, "PUT", "/v1/kv/ui-key", &text, b"from-ui"), true);
    assert_eq!(ok(&agent, "GET", "/v1/kv/ui-key?raw", &ui, b""), "from-ui");
    let json_body = [ui.as_slice(), &[("Content-Type", "application/json")]].concat();
    let key = json!({ "Key": KEY_B }).to_string();
    ok(
        &agent,
        "POST",
        "/v1/operator/keyring",
        &json_body,
        key.as_bytes(),
    );
    // The address bar or a bookmark: Sec-Fetch-Site: none.
    let typed = [("Sec-Fetch-Site", "none"), ("Sec-Fetch-Mode", "navigate")];
    ok(&agent, "GET", "/v1/kv/ui-key?raw", &typed, b"");
    // `localhost` with its port is the same origin as itself.
    let port = agent.http_addr().port();
    let reply = raw_request(
        agent.http_addr(),
        "GET",
        "/v1/agent/self",
        &format!("localhost:{port}"),
        &[("Origin", &format!("http://localhost:{port}"))],
        b"",
    )
    .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    // Following a link to the UI from another site opens it (its files
    // hold no data); the same navigation to data is refused.
    let link = [
        ("Accept", "text/html,application/xhtml+xml,*/*;q=0.8"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "navigate"),
        ("Sec-Fetch-Dest", "document"),
    ];
    for target in ["/ui/", "/ui", "/"] {
        let reply = send(&agent, "GET", target, &link, b"").unwrap();
        assert!(
            [200, 301, 302, 303, 307, 308].contains(&reply.status),
            "a link to {target}: {} {}",
            reply.status,
            reply.body
        );
    }
    let reply = send(&agent, "GET", "/v1/kv/k?raw", &link, b"").unwrap();
    assert_eq!(reply.status, 403, "{}", reply.body);
    // curl -X PUT -d sends a form content type; a PUT can't come from
    // another site without a preflight, so it stays accepted.
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(ok(&agent, "PUT", "/v1/kv/curl", &form, b"20"), true);
    let registration = json!({"Name": "curl-svc", "Port": 7000}).to_string();
    ok(
        &agent,
        "PUT",
        "/v1/agent/service/register",
        &form,
        registration.as_bytes(),
    );
    // A POST without a Content-Type (python-consul's requests) and with
    // JSON (the CLI, Consul's Go client) is served.
    let template = json!({"template": "{{ 1 + 1 }}"}).to_string();
    ok(
        &agent,
        "POST",
        "/v1/shoal/template/render",
        &[],
        template.as_bytes(),
    );
    let json_only = [("Content-Type", "application/json; charset=utf-8")];
    ok(
        &agent,
        "POST",
        "/v1/shoal/template/render",
        &json_only,
        template.as_bytes(),
    );
    // Writes from local tools need no browser header at all.
    ok(&agent, "PUT", "/v1/agent/check/pass/ttl1", &[], b"");
}

fn keys_of(agent: &Agent) -> Result<Vec<String>, String> {
    let ring = agent.get("/v1/operator/keyring")?;
    let mut keys: Vec<String> = ring[0]["Keys"]
        .as_object()
        .ok_or_else(|| format!("no Keys in {ring}"))?
        .keys()
        .cloned()
        .collect();
    keys.sort();
    Ok(keys)
}

/// Where `agent`'s keys come from and how many it has (`Stats.keyring`):
/// what an agent without a token or the opt-in shows of its keyring.
fn keyring_stats(agent: &Agent) -> Result<(String, u64), String> {
    let stats = agent.get("/v1/agent/self")?["Stats"]["keyring"].clone();
    match (stats["source"].as_str(), stats["installed_keys"].as_u64()) {
        (Some(source), Some(count)) => Ok((source.to_string(), count)),
        _ => Err(format!("no Stats.keyring source and count in {stats}")),
    }
}

/// The reviewer's repro: a page posts its own gossip key as text/plain to
/// an agent with the default config; an agent holding only that key must
/// not become a member.
#[test]
fn a_web_page_cannot_install_its_gossip_key() {
    let root = tempfile::tempdir().unwrap();
    let with_key = |name: &str, key: &str, join: Vec<std::net::SocketAddr>| {
        Agent::start(
            root.path(),
            AgentOptions {
                join,
                args: vec!["--encrypt".into(), key.into()],
                ..AgentOptions::named(name)
            },
        )
    };
    let a = with_key("a", KEY_A, Vec::new());
    let b = with_key("b", KEY_A, vec![a.gossip_addr()]);
    for agent in [&a, &b] {
        wait_for(Duration::from_secs(20), "two members", || {
            let members = agent.members()?;
            (members.len() == 2 && members.iter().all(|(_, s)| *s == 1))
                .then_some(())
                .ok_or(format!("{members:?}"))
        });
    }
    let body = json!({ "Key": KEY_B }).to_string();
    // As today's browsers send it (fetch with mode no-cors, or a form).
    let browser = [
        ("Origin", EVIL),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Content-Type", "text/plain;charset=UTF-8"),
    ];
    let reply = send(
        &a,
        "POST",
        "/v1/operator/keyring",
        &browser,
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(reply.status, 403, "{}", reply.body);
    // As a browser without Origin or Fetch Metadata would.
    let plain = [("Content-Type", "text/plain")];
    let reply = send(&a, "POST", "/v1/operator/keyring", &plain, body.as_bytes()).unwrap();
    assert_eq!(reply.status, 415, "{}", reply.body);
    // Even a local process with JSON needs the token or the opt-in.
    let json_type = [("Content-Type", "application/json")];
    for method in ["POST", "PUT", "DELETE"] {
        let reply = send(
            &a,
            method,
            "/v1/operator/keyring",
            &json_type,
            body.as_bytes(),
        )
        .unwrap();
        assert_eq!(reply.status, 403, "{method}: {}", reply.body);
        let error = reply.error();
        assert!(
            error.contains("allow_unauthenticated_keyring") && error.contains("acl.token"),
            "the 403 names the keys to set: {error}"
        );
    }

    // An agent with only the attacker's key stays out.
    let stranger = with_key("stranger", KEY_B, vec![a.gossip_addr()]);
    stranger.wait_serving();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(stranger.members().unwrap().len(), 1, "the stranger joined");
    // Nobody but the operator reads these agents' keys: what they show is
    // that nothing was stored or added.
    for agent in [&a, &b] {
        assert_eq!(
            keyring_stats(agent),
            Ok(("config".to_string(), 1)),
            "{}",
            agent.name
        );
        assert_eq!(agent.members().unwrap().len(), 2, "{}", agent.name);
    }
}

/// The reviewer's other repro: an `<img>` pointed at a check's fail URL or
/// a service's deregister URL changes nothing anywhere.
#[test]
fn an_image_tag_cannot_fail_a_check_or_deregister_a_service() {
    let root = tempfile::tempdir().unwrap();
    let a = Agent::start_serving(root.path(), "a", &[]);
    let b = Agent::start(root.path(), AgentOptions::joining("b", &a));
    b.wait_serving();
    let registration = json!({
        "Name": "web", "ID": "web", "Port": 80,
        "Check": {"CheckID": "ttl1", "Name": "ttl1", "TTL": "10m"},
    });
    ok(
        &a,
        "PUT",
        "/v1/agent/service/register",
        &[],
        registration.to_string().as_bytes(),
    );
    ok(&a, "PUT", "/v1/agent/check/pass/ttl1", &[], b"");
    let passing = |agent: &Agent| -> Result<usize, String> {
        Ok(agent
            .get("/v1/health/service/web?passing")?
            .as_array()
            .map_or(0, Vec::len))
    };
    wait_for(Duration::from_secs(20), "b to see web passing", || {
        (passing(&b)? == 1).then_some(()).ok_or("not yet".into())
    });
    let image = [
        ("Accept", "image/avif,image/webp,*/*"),
        ("Sec-Fetch-Site", "cross-site"),
        ("Sec-Fetch-Mode", "no-cors"),
        ("Sec-Fetch-Dest", "image"),
        ("Referer", "http://evil.example/"),
    ];
    let old_browser = [("Accept", "image/avif,image/webp,*/*")];
    for target in [
        "/v1/agent/check/fail/ttl1",
        "/v1/agent/service/deregister/web",
    ] {
        // Refused before or after routing: the GET form does not exist.
        let reply = send(&a, "GET", target, &image, b"").unwrap();
        assert!(
            [403, 405].contains(&reply.status),
            "GET {target}: {}",
            reply.body
        );
        let reply = send(&a, "GET", target, &old_browser, b"").unwrap();
        assert_eq!(reply.status, 405, "GET {target}: {}", reply.body);
        assert!(reply.error().contains("PUT"), "{}", reply.body);
    }
    std::thread::sleep(Duration::from_secs(2));
    for agent in [&a, &b] {
        assert_eq!(passing(agent), Ok(1), "{} lost web", agent.name);
    }
}

#[test]
fn keyring_changes_need_the_token_or_the_opt_in() {
    let root = tempfile::tempdir().unwrap();
    let body = json!({ "Key": KEY_B }).to_string();
    let install = |agent: &Agent, headers: &[(&str, &str)]| {
        send(
            agent,
            "POST",
            "/v1/operator/keyring",
            headers,
            body.as_bytes(),
        )
        .unwrap()
    };
    // Default: refused, and reading the keys is refused too
    // (`trust_api.rs::keyring_reads_without_a_token_need_the_opt_in`).
    let closed = Agent::start_serving(root.path(), "closed", &["--encrypt", KEY_A]);
    let reply = install(&closed, &[]);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(
        reply.error().contains("allow_unauthenticated_keyring"),
        "{}",
        reply.body
    );
    assert!(keys_of(&closed).is_err(), "the keys were readable");
    assert_eq!(keyring_stats(&closed), Ok(("config".to_string(), 1)));
    // The CLI says the same.
    let output = closed.cli(&["keyring", "install", KEY_B]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("allow_unauthenticated_keyring"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // With a token: only with it.
    let guarded = Agent::start_serving(
        root.path(),
        "guarded",
        &["--encrypt", KEY_A, "--acl-token", TOKEN],
    );
    assert_eq!(install(&guarded, &[]).status, 403);
    assert_eq!(
        install(&guarded, &[("X-Consul-Token", "wrong")]).status,
        403
    );
    let reply = install(&guarded, &[("X-Consul-Token", TOKEN)]);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // With the opt-in, from the flag or the config file.
    let flag = Agent::start_serving(
        root.path(),
        "flag",
        &["--encrypt", KEY_A, "--acl-allow-unauthenticated-keyring"],
    );
    let reply = install(&flag, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let file = root.path().join("opt-in.toml");
    let options = AgentOptions::with_config_file(
        &file,
        "[acl]\nallow_unauthenticated_keyring = true\n",
        &["--encrypt", KEY_A],
    );
    let from_file = Agent::start(
        root.path(),
        AgentOptions {
            name: "file".into(),
            ..options
        },
    );
    from_file.wait_serving();
    let reply = install(&from_file, &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);

    // The opt-in beside a token says nothing and is refused at start.
    let both = root.path().join("both.toml");
    let options = AgentOptions::with_config_file(
        &both,
        &format!("[acl]\ntoken = \"{TOKEN}\"\nallow_unauthenticated_keyring = true\n"),
        &[],
    );
    let mut refused = Agent::start(
        root.path(),
        AgentOptions {
            name: "both".into(),
            ..options
        },
    );
    let code = refused.wait_exit(Duration::from_secs(15));
    assert!(
        matches!(code, Some(c) if c != 0),
        "started anyway: {code:?}"
    );
    assert!(
        refused.log().contains("acl.allow_unauthenticated_keyring"),
        "{}",
        refused.log()
    );
}

/// The curl commands that write in the README and in the guides that hold
/// its former examples (the KV store, user events), run by curl itself
/// against a real agent (with the address replaced), then checked.
#[test]
fn the_readme_curl_writes_work() {
    let readme: String = ["README.md", "docs/kv.md", "docs/events.md"]
        .iter()
        .map(|file| {
            let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
            std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("read {file}: {error}"))
        })
        .collect::<Vec<_>>()
        .join("\n");
    let root = tempfile::tempdir().unwrap();
    // The event example targets nodes matching `^web-`.
    let agent = Agent::start_serving(root.path(), "web-1", &[]);
    let commands = curl_commands(&readme);
    let writes: Vec<&String> = commands
        .iter()
        .filter(|c| c.contains("-X PUT") || c.contains("-X POST") || c.contains("-X DELETE"))
        .collect();
    assert!(writes.len() >= 3, "found only {writes:?}");
    for command in &writes {
        let command = command
            .replace("127.0.0.1:8500", &agent.http_addr().to_string())
            .replacen("curl ", "curl -sS --fail-with-body ", 1);
        let output = Command::new("sh")
            .args(["-c", &command])
            .output()
            .expect("run sh");
        assert!(
            output.status.success(),
            "{command}\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let services = agent.get("/v1/agent/services").unwrap();
    assert_eq!(services["payments-1"]["Port"], 7000, "{services}");
    assert_eq!(agent.kv_get("db/pool_size"), Ok(Some("20".into())));
    let events = agent.get("/v1/event/list?name=deploy").unwrap();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
}

/// The `curl` commands in the README's `sh` blocks (and in their `# or:`
/// comments), a command that opens a quote running on until it closes.
fn curl_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_sh = false;
    let mut open: Option<String> = None;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line.trim() == "```sh" && !in_sh;
            open = None;
            continue;
        }
        if !in_sh {
            continue;
        }
        if let Some(command) = &mut open {
            command.push('\n');
            command.push_str(line);
        } else if line.starts_with("curl ") {
            open = Some(line.to_string());
        } else if let Some((_, rest)) = line.split_once("# or: curl ") {
            // `shoal kv put ...   # or: curl -X PUT ...`
            open = Some(format!("curl {rest}"));
        }
        if let Some(command) = &open
            && command.matches('\'').count() % 2 == 0
        {
            commands.push(open.take().unwrap());
        }
    }
    commands
}
