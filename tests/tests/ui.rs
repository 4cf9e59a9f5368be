//! The web UI in a real browser: Debian's headless Chromium driven through
//! chromedriver, against real agents. Members, services, KV and flags
//! pages follow the cluster live; edits made in the UI go through the
//! guarded API and reach other agents; a conflicting KV edit is reported;
//! without the ACL token the UI says so and changes nothing. Every page
//! is screenshotted (to `$SHOAL_UI_SCREENSHOTS`, default
//! `target/ui-screenshots`; `SHOAL_UI_SCREENSHOTS=docs/ui` refreshes those
//! of docs/ui.md) and no page may log a console error.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::webdriver::{Browser, keys};
use shoal_tests::{Agent, Cluster, http_json, wait_for};

const TIMEOUT: Duration = Duration::from_secs(30);

fn screenshot_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = match std::env::var_os("SHOAL_UI_SCREENSHOTS") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target/ui-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

fn save_screenshot(browser: &Browser, name: &str) {
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, browser.screenshot()).expect("write screenshot");
}

/// Fails on any console error or warning the page logged, except network
/// entries for the statuses this test provokes on purpose (`allowed`,
/// e.g. "403").
fn assert_quiet_console(browser: &Browser, page: &str, allowed: &[&str]) {
    let bad: Vec<_> = browser
        .console_log()
        .into_iter()
        .filter(|(level, _)| level == "SEVERE" || level == "WARNING")
        .filter(|(_, message)| {
            !allowed
                .iter()
                .any(|status| message.contains(&format!("status of {status}")))
        })
        .collect();
    assert!(bad.is_empty(), "console errors on the {page} page: {bad:?}");
}

fn put(agent: &Agent, path: &str, body: &[u8]) -> (u16, Value) {
    http_json("PUT", agent.http_addr(), path, Some(body)).expect("PUT")
}

fn flag_for(agent: &Agent, user: &str) -> Value {
    agent
        .get(&format!("/v1/flags/new-checkout?user={user}"))
        .expect("flag decision")
}

#[test]
fn the_ui_follows_and_steers_a_three_agent_cluster() {
    let mut cluster = Cluster::start(3);
    cluster.wait_all_alive(Duration::from_secs(60));
    let [a, b, c] = [&cluster.agents[0], &cluster.agents[1], &cluster.agents[2]];
    for (agent, id, address) in [
        (a, "web-0", "10.0.0.10"),
        (b, "web-1", "10.0.0.11"),
        (c, "web-2", "10.0.0.12"),
    ] {
        let registration = json!({
            "Name": "web", "ID": id, "Address": address, "Port": 8080,
            "Tags": ["v2", "http"], "Meta": {"team": "storefront"},
            "Check": {"CheckID": format!("{id}-ttl"), "Name": "web heartbeat", "TTL": "10m", "Status": "passing"},
        });
        let (status, body) = agent.register_service(&registration).unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let (status, _) = put(
        c,
        "/v1/agent/service/maintenance/web-2?enable=true&reason=kernel%20upgrade",
        b"",
    );
    assert_eq!(status, 200);
    assert!(
        a.kv_put("config/db/url", "postgres://db-1:5432/shop")
            .unwrap()
    );
    assert!(
        a.kv_put(
            "config/app.json",
            r#"{"workers":8,"features":["search","cart"],"timeouts":{"read_ms":1500}}"#
        )
        .unwrap()
    );
    let definition = json!({"enabled": true, "rollout_percentage": 0, "description": "the new checkout flow", "deny_users": ["mallory"]});
    let (status, body) = put(
        a,
        "/v1/flags/new-checkout",
        definition.to_string().as_bytes(),
    );
    assert_eq!(status, 200, "{body}");
    c.wait_kv("config/db/url", Some("postgres://db-1:5432/shop"), TIMEOUT);

    let browser = Browser::start(1280, 1000);
    let base = format!("http://{}", a.http_addr());

    // `/` sends a browser to the UI; the members page lists all three.
    browser.goto(&format!("{base}/"));
    assert!(
        browser.current_url().ends_with("/ui/"),
        "{}",
        browser.current_url()
    );
    browser.wait_text("#member-summary", TIMEOUT, "three alive", |text| {
        text.starts_with("3 members: 3 alive")
    });
    for node in ["node-0", "node-1", "node-2"] {
        let row = browser.text(&format!("tr[data-name=\"{node}\"]"));
        assert!(row.contains("alive"), "{node}: {row}");
    }
    assert_quiet_console(&browser, "members", &[]);

    // Services: counts, then one instance going critical with its output.
    browser.goto(&format!("{base}/ui/#/services"));
    browser.wait_text(
        "tr[data-service=\"web\"]",
        TIMEOUT,
        "web's counts",
        |text| text.contains("2 passing") && text.contains("1 critical"),
    );
    save_screenshot(&browser, "services");
    browser.goto(&format!("{base}/ui/#/services/web"));
    browser.wait_text("#service-summary", TIMEOUT, "three instances", |text| {
        text.starts_with("3 instances: 2 passing")
    });
    let maintenance = browser.text("section[data-service-id=\"web-2\"] [data-maintenance]");
    assert!(
        maintenance.contains("In maintenance") && maintenance.contains("kernel upgrade"),
        "{maintenance}"
    );
    let (status, _) = put(
        b,
        "/v1/agent/check/fail/web-1-ttl?note=disk%20full%20on%20%2Fvar",
        b"",
    );
    assert_eq!(status, 200);
    let check = browser.wait_text(
        "section[data-service-id=\"web-1\"] tr[data-check=\"web-1-ttl\"]",
        TIMEOUT,
        "web-1's check critical with its output",
        |text| text.contains("critical") && text.contains("disk full on /var"),
    );
    assert!(check.contains("✗ critical"), "{check}");
    browser.script(
        "document.querySelector('section[data-service-id=\"web-1\"]').scrollIntoView()",
        json!([]),
    );
    save_screenshot(&browser, "service");
    assert_quiet_console(&browser, "services", &[]);

    // KV: a value shown as pretty JSON; an edit in the UI on node-0 read
    // back through node-2's API.
    browser.goto(&format!("{base}/ui/#/kv/config/app.json"));
    browser.wait_text("#kv-value", TIMEOUT, "pretty JSON", |text| {
        text.contains("\"workers\": 8,\n")
    });
    browser.wait_text("#kv-keys", TIMEOUT, "the keys under config/", |text| {
        text.contains("app.json") && text.contains("db/")
    });
    save_screenshot(&browser, "kv");
    browser.goto(&format!("{base}/ui/#/kv/config/db/url"));
    let edit = browser.wait_find("#kv-edit", TIMEOUT);
    wait_for(TIMEOUT, "the value in the editor", || {
        let value = browser.script("return document.getElementById('kv-edit').value", json!([]));
        (value == "postgres://db-1:5432/shop")
            .then_some(())
            .ok_or(value.to_string())
    });
    browser.clear(&edit);
    browser.send_keys(&edit, "postgres://db-2:5432/shop");
    browser.click(&browser.wait_find("#kv-save", TIMEOUT));
    browser.wait_text("#kv-result", TIMEOUT, "saved", |text| text == "Saved.");
    c.wait_kv("config/db/url", Some("postgres://db-2:5432/shop"), TIMEOUT);

    // A conflicting edit: another client writes while the operator types;
    // the UI's save is refused and reported, the other write stays.
    browser.wait_text("#kv-meta", TIMEOUT, "the saved value shown", |text| {
        !text.is_empty()
    });
    wait_for(TIMEOUT, "the editor to show the saved value", || {
        let value = browser.script("return document.getElementById('kv-edit').value", json!([]));
        (value == "postgres://db-2:5432/shop")
            .then_some(())
            .ok_or(value.to_string())
    });
    browser.clear(&edit);
    browser.send_keys(&edit, "postgres://db-3:5432/shop");
    assert!(
        a.kv_put("config/db/url", "postgres://db-9:5432/other")
            .unwrap()
    );
    browser.wait_text(
        "#kv-changed",
        TIMEOUT,
        "the live notice of a change",
        |text| text.contains("changed on the cluster"),
    );
    browser.click(&browser.wait_find("#kv-save", TIMEOUT));
    let result = browser.wait_text("#kv-result", TIMEOUT, "a conflict", |text| {
        text.starts_with("Conflict")
    });
    assert!(result.contains("not saved"), "{result}");
    assert_eq!(
        a.kv_get("config/db/url").unwrap().as_deref(),
        Some("postgres://db-9:5432/other")
    );
    c.wait_kv("config/db/url", Some("postgres://db-9:5432/other"), TIMEOUT);
    browser.script("window.scrollTo(0, 0)", json!([]));
    save_screenshot(&browser, "kv-conflict");

    // Create a key from the form, then delete it (after a confirmation);
    // node-2 sees both.
    let name = browser.wait_find("#kv-new-key", TIMEOUT);
    browser.clear(&name);
    browser.send_keys(&name, "config/feature/limit");
    browser.send_keys(&browser.wait_find("#kv-new-value", TIMEOUT), "250");
    browser.click(&browser.wait_find("#kv-create", TIMEOUT));
    c.wait_kv("config/feature/limit", Some("250"), TIMEOUT);
    browser.wait_text("#kv-value", TIMEOUT, "the new key opened", |text| {
        text == "250"
    });
    browser.click(&browser.wait_find("#kv-delete", TIMEOUT));
    browser.click(&browser.wait_find("#kv-delete-confirm", TIMEOUT));
    browser.wait_text("#kv-result", TIMEOUT, "deleted", |text| text == "Deleted.");
    c.wait_kv("config/feature/limit", None, TIMEOUT);
    assert_quiet_console(&browser, "KV", &[]);

    // Flags: the rollout slider moved by keyboard changes the answers.
    let users: Vec<String> = (0..40).map(|i| format!("user-{i}")).collect();
    for user in &users {
        assert_eq!(flag_for(b, user)["enabled"], false, "{user} at 0%");
    }
    browser.goto(&format!("{base}/ui/#/flags"));
    browser.wait_text(
        "tr[data-flag=\"new-checkout\"]",
        TIMEOUT,
        "the flag",
        |text| text.contains("0%") && text.contains("deny mallory"),
    );
    save_screenshot(&browser, "flags");
    browser.goto(&format!("{base}/ui/#/flags/new-checkout"));
    browser.wait_text("#flag-state", TIMEOUT, "the definition", |text| {
        text.contains("rollout 0%")
    });
    // Bad input is shown beside its field, and changes nothing.
    let percent = browser.wait_find("#flag-rollout", TIMEOUT);
    browser.clear(&percent);
    browser.send_keys(&percent, "150");
    browser.click(&browser.wait_find("#flag-save", TIMEOUT));
    let error = browser.wait_text(
        "#flag-error-rollout_percentage",
        TIMEOUT,
        "the inline error",
        |text| !text.is_empty(),
    );
    assert!(error.contains("between 0 and 100"), "{error}");
    assert_eq!(
        flag_for(a, "x")["definition"]["rollout_percentage"],
        json!(0)
    );
    browser.click(&browser.wait_find("#flag-discard", TIMEOUT));
    let slider = browser.wait_find("#flag-rollout-slider", TIMEOUT);
    browser.send_keys(
        &slider,
        &format!("{}{}", keys::HOME, keys::ARROW_RIGHT.repeat(30)),
    );
    let shown = browser.script(
        "return document.getElementById('flag-rollout').value",
        json!([]),
    );
    assert_eq!(shown, "30", "the number beside the slider");
    browser.click(&browser.wait_find("#flag-save", TIMEOUT));
    browser.wait_text("#flag-result", TIMEOUT, "saved", |text| text == "Saved.");
    wait_for(TIMEOUT, "node-1 to apply the 30% rollout", || {
        let answer = flag_for(b, "user-0");
        (answer["definition"]["rollout_percentage"] == json!(30))
            .then_some(())
            .ok_or(answer.to_string())
    });
    let mut on = 0;
    for user in &users {
        let answer = flag_for(b, user);
        let bucket = answer["bucket"].as_f64().expect("a bucket");
        assert_eq!(answer["enabled"], bucket < 30.0, "{user}: {answer}");
        on += usize::from(bucket < 30.0);
    }
    assert!(on > 0 && on < users.len(), "{on} of 40 users on at 30%");
    // "Evaluate for user" gives the agent's decision and reason.
    let expected = flag_for(a, "user-7");
    let user = browser.wait_find("#eval-user", TIMEOUT);
    browser.send_keys(&user, "user-7");
    browser.click(&browser.wait_find("#eval-run", TIMEOUT));
    let reason = browser.wait_text("#eval-reason", TIMEOUT, "a decision", |text| {
        !text.is_empty()
    });
    assert_eq!(reason, expected["reason"].as_str().unwrap());
    let decision = browser.text("#eval-result");
    let word = if expected["enabled"] == true {
        "on"
    } else {
        "off"
    };
    assert!(
        decision.contains(&format!("{word} for user user-7")),
        "{decision}"
    );
    // The page follows the change it made (a blocking query on /v1/flags).
    browser.wait_text("#flag-state", TIMEOUT, "the new rollout shown", |text| {
        text.contains("rollout 30%")
    });
    browser.script("window.scrollTo(0, 0)", json!([]));
    save_screenshot(&browser, "flag");
    assert_quiet_console(&browser, "flags", &[]);

    // This agent: config, counters, local checks.
    browser.goto(&format!("{base}/ui/#/agent"));
    browser.wait_text("#agent-config", TIMEOUT, "the config", |text| {
        text.contains("node-0")
    });
    browser.wait_text(
        "tr[data-check=\"web-0-ttl\"]",
        TIMEOUT,
        "the local check",
        |text| text.contains("passing"),
    );
    save_screenshot(&browser, "agent");
    assert_quiet_console(&browser, "agent", &[]);

    // A SIGKILLed agent shows as failed, live.
    browser.goto(&format!("{base}/ui/#/members"));
    browser.wait_text("#member-summary", TIMEOUT, "three alive", |text| {
        text.starts_with("3 members: 3 alive")
    });
    cluster.agents[2].kill();
    browser.wait_text(
        "tr[data-name=\"node-2\"]",
        Duration::from_secs(90),
        "node-2 failed",
        |text| text.contains("failed"),
    );
    browser.wait_text("#member-summary", TIMEOUT, "2 alive, 1 failed", |text| {
        text.contains("2 alive") && text.contains("1 failed")
    });
    // The status filter.
    browser.click(&browser.wait_find("#member-status option[value=\"failed\"]", TIMEOUT));
    browser.wait_text("#member-summary", TIMEOUT, "the filter", |text| {
        text.ends_with("Showing 1.")
    });
    browser.click(&browser.wait_find("#member-status option[value=\"\"]", TIMEOUT));
    let text = browser.wait_find("#member-filter", TIMEOUT);
    browser.send_keys(&text, "node-1");
    browser.wait_text("#member-summary", TIMEOUT, "the text filter", |text| {
        text.ends_with("Showing 1.")
    });
    assert!(browser.find("tr[data-name=\"node-1\"]").is_some());
    browser.clear(&text);
    browser.wait_text("#member-summary", TIMEOUT, "no filter", |text| {
        text.ends_with("Showing 3.")
    });
    save_screenshot(&browser, "members");
    assert_quiet_console(&browser, "members", &[]);
}

const TOKEN: &str = "ui-test-token-5ecret";

#[test]
fn without_the_token_the_ui_says_403_and_changes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let writes_guarded = Agent::start_serving(root.path(), "guarded", &["--acl-token", TOKEN]);
    let reads_guarded = Agent::start_serving(
        root.path(),
        "sealed",
        &["--acl-token", TOKEN, "--acl-protect-reads"],
    );
    let with_token = |agent: &Agent, key: &str, value: &str| {
        let url = format!("http://{}/v1/kv/{key}", agent.http_addr());
        ureq::put(&url)
            .header("X-Consul-Token", TOKEN)
            .send(value)
            .expect("PUT with the token");
    };
    with_token(&writes_guarded, "app/mode", "blue");
    let browser = Browser::start(1280, 700);

    // Reads open, writes guarded: the UI shows data; a write without the
    // token shows the 403 message and changes nothing.
    let base = format!("http://{}", writes_guarded.http_addr());
    browser.goto(&format!("{base}/ui/#/kv/app/mode"));
    browser.wait_text("#kv-value", TIMEOUT, "the value", |text| text == "blue");
    let edit = browser.wait_find("#kv-edit", TIMEOUT);
    browser.clear(&edit);
    browser.send_keys(&edit, "green");
    browser.click(&browser.wait_find("#kv-save", TIMEOUT));
    let refused = browser.wait_text("#kv-result", TIMEOUT, "the 403", |text| !text.is_empty());
    assert!(refused.starts_with("Access denied (403)"), "{refused}");
    assert!(refused.contains("ACL token"), "{refused}");
    assert_eq!(
        writes_guarded.kv_get("app/mode").unwrap().as_deref(),
        Some("blue")
    );
    assert_quiet_console(&browser, "KV without token", &["403"]);

    // protect_reads: nothing is shown without the token.
    let base = format!("http://{}", reads_guarded.http_addr());
    browser.goto(&format!("{base}/ui/#/members"));
    let notice = browser.wait_text("#notice", TIMEOUT, "the 403 notice", |text| {
        !text.is_empty()
    });
    assert!(notice.starts_with("Access denied (403)"), "{notice}");
    assert!(
        browser.find("tr[data-name]").is_none(),
        "members shown without the token"
    );
    save_screenshot(&browser, "token-required");
    for page in ["services", "kv/", "flags", "agent"] {
        browser.goto(&format!("{base}/ui/#/{page}"));
        browser.wait_text("#notice", TIMEOUT, "the 403 notice", |text| {
            text.starts_with("Access denied (403)")
        });
        let main = browser.text("#main");
        assert!(
            !main.contains("sealed") && !main.contains("node-"),
            "{page} shows data without the token: {main}"
        );
    }
    // With the token typed in, the pages fill; it never enters a URL.
    browser.goto(&format!("{base}/ui/#/members"));
    let input = browser.wait_find("#token-input", TIMEOUT);
    browser.send_keys(&input, TOKEN);
    browser.click(&browser.wait_find("#token-save", TIMEOUT));
    browser.wait_text("tr[data-name=\"sealed\"]", TIMEOUT, "the member", |text| {
        text.contains("alive")
    });
    assert!(!browser.current_url().contains(TOKEN));
    let stored = browser.script("return sessionStorage.getItem('shoal.token')", json!([]));
    assert_eq!(stored, TOKEN);
    let resources = browser.script(
        "return performance.getEntriesByType('resource').map(e => e.name).join(' ')",
        json!([]),
    );
    assert!(
        !resources.as_str().unwrap_or_default().contains(TOKEN),
        "the token appeared in a request URL"
    );
    assert_quiet_console(&browser, "members with protect_reads", &["403"]);
}
