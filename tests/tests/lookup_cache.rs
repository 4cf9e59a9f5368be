//! The cache of serialized answers (agent/src/api/cache.rs) with a real
//! agent: repeated reads are answered from it, a change is seen at once
//! (never a stale answer), and a cached answer still passes the `Host`
//! check and the token guard.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Agent, wait_for};

const TOKEN: &str = "cache-t0ken";

/// `GET path` with optional headers: status, `X-Consul-Index`, body.
fn get(agent: &Agent, path: &str, headers: &[(&str, &str)]) -> (u16, Option<u64>, String) {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let client: ureq::Agent = config.into();
    let mut request = client.get(&format!("http://{}{path}", agent.http_addr()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let mut response = request.call().expect("GET");
    let status = response.status().as_u16();
    let index = response
        .headers()
        .get("X-Consul-Index")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = response.body_mut().read_to_string().expect("body");
    (status, index, body)
}

fn put(agent: &Agent, path: &str, body: &str, token: Option<&str>) -> u16 {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build();
    let client: ureq::Agent = config.into();
    let mut request = client.put(&format!("http://{}{path}", agent.http_addr()));
    if let Some(token) = token {
        request = request.header("X-Consul-Token", token);
    }
    request.send(body).expect("PUT").status().as_u16()
}

fn cache_stats(agent: &Agent, token: Option<&str>) -> Value {
    let headers: Vec<(&str, &str)> = token.map(|t| ("X-Consul-Token", t)).into_iter().collect();
    let (status, _, body) = get(agent, "/v1/agent/self", &headers);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["Stats"]["lookup_cache"].clone()
}

/// Waits until `GET path` answers 200 with `expected`.
fn wait_body(agent: &Agent, path: &str, what: &str, expected: impl Fn(&str) -> bool) {
    wait_for(Duration::from_secs(10), what, || {
        let (status, _, body) = get(agent, path, &[]);
        if status == 200 && expected(&body) {
            Ok(())
        } else {
            Err(format!("{status} {body}"))
        }
    });
}

#[test]
fn repeated_reads_are_cached_and_a_change_is_seen_at_once() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(root.path(), "cached", &[]);
    let health = "/v1/health/service/web?passing";
    let raw = "/v1/kv/app/value?raw";
    let flag = "/v1/flags/beta?user=u-1";

    let register = |id: &str| {
        let (status, body) = agent
            .register_service(&json!({"Name": "web", "ID": id, "Port": 8080}))
            .unwrap();
        assert_eq!(status, 200, "{body}");
    };
    register("web-1");
    assert_eq!(put(&agent, "/v1/kv/app/value", "one", None), 200);
    let beta_on = json!({"enabled": true, "rollout_percentage": 100}).to_string();
    assert_eq!(put(&agent, "/v1/flags/beta", &beta_on, None), 200);
    wait_body(&agent, health, "web-1 in health", |b| b.contains("web-1"));
    wait_body(&agent, raw, "the first value", |b| b == "one");
    wait_body(&agent, flag, "the flag on", |b| {
        b.contains(r#""enabled":true"#)
    });

    // The same answer twice, the second from the cache.
    for path in [health, raw, flag] {
        let before = cache_stats(&agent, None)["hits"].as_u64().unwrap();
        let (status, index, first) = get(&agent, path, &[]);
        let (_, index_again, second) = get(&agent, path, &[]);
        assert_eq!(
            (status, &first, index),
            (200, &second, index_again),
            "{path}"
        );
        assert!(index.is_some_and(|i| i > 0), "{path}: {index:?}");
        let after = cache_stats(&agent, None)["hits"].as_u64().unwrap();
        assert!(after > before, "{path}: hits {before} -> {after}");
    }

    // Every change shows in the very next read (no stale entry).
    for round in 0..20 {
        let value = format!("value-{round}");
        assert_eq!(put(&agent, "/v1/kv/app/value", &value, None), 200);
        wait_body(&agent, raw, &format!("KV {value}"), |b| b == value);
        let (_, _, again) = get(&agent, raw, &[]);
        assert_eq!(again, value);
    }
    register("web-2");
    wait_body(&agent, health, "web-2 in health", |b| {
        b.contains("web-1") && b.contains("web-2")
    });
    let beta_off = json!({"enabled": false, "rollout_percentage": 100}).to_string();
    assert_eq!(put(&agent, "/v1/flags/beta", &beta_off, None), 200);
    wait_body(&agent, flag, "the flag off", |b| {
        b.contains(r#""enabled":false"#)
    });
    assert_eq!(
        put(&agent, "/v1/kv/app/value", "", None),
        200,
        "an empty value"
    );
    wait_body(&agent, raw, "the empty value", str::is_empty);

    // A deleted key is a 404 at once, not its cached value.
    let (status, body) =
        shoal_tests::http_json("DELETE", agent.http_addr(), "/v1/kv/app/value", None).unwrap();
    assert_eq!(status, 200, "{body}");
    wait_for(Duration::from_secs(10), "the key gone", || {
        match get(&agent, raw, &[]) {
            (404, _, _) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    // Blocking queries are never answered from the cache: with the
    // current index they wait.
    let (_, index, _) = get(&agent, health, &[]);
    let index = index.unwrap();
    let started = Instant::now();
    let (status, _, _) = get(&agent, &format!("{health}&index={index}&wait=1s"), &[]);
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "a blocking query returned after {:?}",
        started.elapsed()
    );
    let stats = cache_stats(&agent, None);
    assert!(stats["entries"].as_u64().unwrap() >= 3, "{stats}");
}

#[test]
fn cached_answers_still_pass_the_host_check_and_the_token() {
    let root = tempfile::tempdir().unwrap();
    let agent = Agent::start_serving(
        root.path(),
        "guarded-cache",
        &["--acl-token", TOKEN, "--acl-protect-reads"],
    );
    assert_eq!(put(&agent, "/v1/kv/secret", "s", Some(TOKEN)), 200);
    let raw = "/v1/kv/secret?raw";
    let with_token = [("X-Consul-Token", TOKEN)];
    wait_for(Duration::from_secs(10), "the value", || {
        match get(&agent, raw, &with_token) {
            (200, _, body) if body == "s" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // Now cached: each caller is still checked.
    assert_eq!(get(&agent, raw, &with_token).0, 200);
    assert_eq!(get(&agent, raw, &[]).0, 403);
    assert_eq!(get(&agent, raw, &[("X-Consul-Token", "wrong")]).0, 403);
    assert_eq!(
        get(
            &agent,
            raw,
            &[("Authorization", &format!("Bearer {TOKEN}"))]
        )
        .0,
        200
    );
    assert_eq!(get(&agent, &format!("{raw}&token={TOKEN}"), &[]).0, 200);
    let (status, _, body) = get(
        &agent,
        raw,
        &[("X-Consul-Token", TOKEN), ("Host", "evil.example")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("Host"), "{body}");
    // The token sent as ?token= is never a cache key.
    let stats = cache_stats(&agent, Some(TOKEN));
    assert!(stats["hits"].as_u64().unwrap() >= 2, "{stats}");
    let (_, _, self_body) = get(&agent, "/v1/agent/self", &with_token);
    assert!(
        !self_body.contains(TOKEN),
        "the token shows in /v1/agent/self"
    );
}
