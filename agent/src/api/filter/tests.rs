use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn entry() -> Value {
    json!({
        "Node": {"Node": "a", "Meta": {"env": "prod", "rack": "r1"}},
        "Service": {"ID": "web-1", "Service": "web", "Tags": ["v1", "canary"], "Port": 8080,
                    "Meta": {"version": "1.2"}, "EnableTagOverride": false},
        "Checks": [
            {"CheckID": "serfHealth", "Status": "passing"},
            {"CheckID": "service:web-1", "Status": "critical"}
        ]
    })
}

fn run(text: &str) -> Result<bool, FilterError> {
    let filter = Filter::parse(text, &entry())?;
    Ok(filter.matches(&entry()))
}

#[test]
fn every_operator_as_go_bexpr() {
    let cases = [
        ("Service.Service == web", true),
        ("Service.Service == \"web\"", true),
        ("Service.Service != web", false),
        ("Service.Port == 8080", true),
        ("Service.Port != 80", true),
        ("Service.EnableTagOverride == false", true),
        ("Service.EnableTagOverride == F", true),
        ("v1 in Service.Tags", true),
        ("\"v2\" in Service.Tags", false),
        ("v2 not in Service.Tags", true),
        ("Service.Tags contains canary", true),
        ("Service.Tags not contains canary", false),
        ("Service.ID contains \"eb-\"", true),
        ("Service.ID == web-1", true),
        ("env in Node.Meta", true),
        ("Node.Meta.env == prod", true),
        ("Node.Meta[\"env\"] == prod", true),
        ("\"/Node/Meta/env\" == prod", true),
        ("Node.Meta.missing == prod", false),
        ("Node.Meta.missing != prod", true),
        ("Node.Meta.missing is empty", true),
        ("Node.Meta is not empty", true),
        ("Service.Tags is empty", false),
        ("Service.ID matches \"^web-[0-9]+$\"", true),
        ("Service.ID not matches `^db`", true),
        ("Checks.Status == critical", true),
        ("Checks.Status != critical", false),
        ("Checks.Status == warning", false),
        ("Service.Service == web and Service.Port == 80", false),
        ("Service.Service == web and not Service.Port == 80", true),
        ("Service.Service == db or Service.Port == 8080", true),
        ("not (Service.Service == db or Service.Port == 8080)", false),
        (
            "Service.Service == db or Service.Service == web and Service.Port == 1",
            false,
        ),
        (
            "(Service.Service == db or Service.Service == web) and Service.Port == 8080",
            true,
        ),
        ("not not Service.Service == web", true),
        ("Service.Meta.version == \"1.2\"", true),
        ("Service.Meta.version == 1.2", true),
    ];
    for (text, expected) in cases {
        assert_eq!(run(text), Ok(expected), "{text}");
    }
}

#[test]
fn errors_name_the_position_and_the_problem() {
    let cases = [
        ("", 1, "empty"),
        ("Service.Nope == x", 1, "unknown selector `Service.Nope`"),
        (
            "Service.Service == web and Nodes.Node == a",
            28,
            "unknown selector `Nodes.Node`",
        ),
        // Positions count characters, not bytes, after every selector.
        (
            "Service.Service == \"é\" and Service.ID == \"—\" and Nodes.Node == a",
            50,
            "unknown selector `Nodes.Node`",
        ),
        ("Service.Tags == v1", 1, "is a list: use `contains`"),
        ("Service.Port == eighty", 1, "is a number"),
        (
            "Service.Port contains 8",
            1,
            "need a list, a map or a string",
        ),
        (
            "Service.Service.Name == x",
            1,
            "is a string, it has no field `Name`",
        ),
        ("Service.Service = web", 17, "unexpected character `=`"),
        ("Service.Service == ", 20, "expected a value"),
        (
            "(Service.Service == web",
            24,
            "expected `)` to close the `(` at position 1",
        ),
        ("Service.Service == web)", 23, "unexpected `)`"),
        ("Service.Service == \"web", 20, "unterminated string"),
        ("Service.ID matches \"(\"", 20, "invalid regular expression"),
        ("Service.Tags is full", 17, "expected `empty`"),
        ("Service.Service web", 17, "expected an operator"),
        ("Service.Service == web xor", 24, "missing `and`/`or`"),
        ("Node.Meta[env] == x", 10, "quoted string"),
        ("Service.Port == 80x", 17, "invalid number"),
    ];
    for (text, position, message) in cases {
        let error = Filter::parse(text, &entry()).unwrap_err();
        assert!(
            error.position == position && error.message.contains(message),
            "{text}: {error}"
        );
    }
    let deep = format!("{}Service.Service == web", "not ".repeat(100));
    assert!(
        Filter::parse(&deep, &entry())
            .unwrap_err()
            .message
            .contains("nested")
    );
}

#[test]
fn every_shape_offers_its_consul_fields() {
    let accepted = [
        (
            Shape::AgentService,
            "Service == web and Tags contains v1 and Meta.x == y and Port == 80 and TaggedAddresses.lan.Address == a",
        ),
        (
            Shape::AgentCheck,
            "Status == passing and ServiceName == web and CheckID contains \"service:\" and Type == ttl",
        ),
        (
            Shape::CatalogService,
            "ServiceName == web and NodeMeta.env == prod and ServiceTags contains v1 and ID is not empty and ServiceTaggedAddresses.wan.Port == 1",
        ),
        (
            Shape::Node,
            "Node == a and Meta.env == prod and ID is not empty and TaggedAddresses.lan == x",
        ),
        (
            Shape::ServiceEntry,
            "Service.Tags contains v1 and Node.Meta.env == prod and Checks.Status == passing and Service.Meta.version == 1",
        ),
        (
            Shape::HealthCheck,
            "Status == critical and ServiceTags contains v1 and Node == a and ServiceID == x",
        ),
    ];
    for (shape, text) in accepted {
        Filter::parse(text, &shape.sample()).unwrap_or_else(|e| panic!("{shape:?}: {text}: {e}"));
    }
    assert!(Filter::parse("Service.Tags contains v1", &Shape::AgentService.sample()).is_err());
    assert!(Filter::parse("Node.Node == a", &Shape::Node.sample()).is_err());
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("Service.Tags".to_string()),
        Just("Node.Meta.env".to_string()),
        Just("Checks.Status".to_string()),
        Just("Service.Port".to_string()),
        Just("==".to_string()),
        Just("!=".to_string()),
        Just("and".to_string()),
        Just("or".to_string()),
        Just("not".to_string()),
        Just("in".to_string()),
        Just("contains".to_string()),
        Just("matches".to_string()),
        Just("is".to_string()),
        Just("empty".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just("\"v1\"".to_string()),
        Just("`^w`".to_string()),
        Just("80".to_string()),
        "[a-z]{1,4}",
        ".{0,3}",
    ]
}

proptest! {
    /// Arbitrary text never panics: it parses or is refused with a
    /// position inside (or just after) the text.
    #[test]
    fn arbitrary_text_never_panics(text in ".{0,200}") {
        match Filter::parse(&text, &entry()) {
            Ok(filter) => { filter.matches(&entry()); filter.matches(&json!({})); }
            Err(error) => prop_assert!(error.position <= text.chars().count() + 1),
        }
    }

    /// Near-valid expressions (made of the language's own words) never
    /// panic either, and whatever parses evaluates on any shape.
    #[test]
    fn token_soup_never_panics(words in proptest::collection::vec(word(), 0..24)) {
        let text = words.join(" ");
        for shape in [Shape::ServiceEntry, Shape::HealthCheck] {
            if let Ok(filter) = Filter::parse(&text, &entry()) {
                filter.matches(&shape.sample());
                filter.matches(&json!(null));
            }
        }
    }
}

/// The review's filter: 253 terms of `\w{20}`. Past the cap on terms, the
/// error names it before the rest is compiled; within the cap, the sum of
/// the compiled sizes is over the budget, and the error names that.
#[test]
fn matches_terms_and_their_compiled_size_have_budgets() {
    let terms = |count: usize, pattern: &str| {
        vec![format!("Service.Service matches \"{pattern}\""); count].join(" or ")
    };
    let started = std::time::Instant::now();
    let error = run(&terms(253, r"\\w{20}")).unwrap_err();
    assert!(
        error
            .message
            .contains(&format!("at most {MAX_REGEX_TERMS}")),
        "{error}"
    );
    let error = run(&terms(MAX_REGEX_TERMS, r"\\w{20}")).unwrap_err();
    assert!(
        error.message.contains("budget")
            && error
                .message
                .contains(&format!("{} KiB", MAX_FILTER_REGEX_BYTES / 1024)),
        "{error}"
    );
    eprintln!("both refused in {:?}", started.elapsed());
    // So is one alone; a smaller one fits, and as many small ones as
    // allowed.
    assert!(run(&terms(1, r"\\w{20}")).is_err());
    assert_eq!(run(&terms(1, r"\\w{5}")), Ok(false));
    assert_eq!(run(&terms(MAX_REGEX_TERMS, "^w[a-z]b$")), Ok(true));
    // `not matches` counts too.
    let text = vec!["Service.Service not matches x"; MAX_REGEX_TERMS + 1].join(" and ");
    assert!(run(&text).is_err());
}
