//! Unit tests of the `[dns]` table.
use super::*;

#[test]
fn defaults_are_consuls() {
    let config = DnsConfig::default();
    assert_eq!(config.addr, Some("127.0.0.1:8600".parse().unwrap()));
    assert!(!config.addr_configured);
    assert_eq!(config.domain, "consul");
    assert_eq!(config.alt_domain.as_deref(), Some("shoal"));
    assert_eq!(config.service_ttl, Duration::ZERO);
    assert!(config.recursors.is_empty());
}

#[test]
fn off_disables_and_bad_values_name_their_key() {
    let off = dns_config(Some("off"), None, false).unwrap();
    assert_eq!(off.addr, None);
    let file = FileDns {
        domain: Some("Example.COM.".into()),
        alt_domain: Some(String::new()),
        service_ttl: Some("30s".into()),
        recursors: Some(vec!["127.0.0.1".into()]),
        ..FileDns::default()
    };
    let config = dns_config(Some("127.0.0.2:53"), Some(&file), false).unwrap();
    assert_eq!(config.domain, "example.com");
    assert_eq!(config.alt_domain, None);
    assert_eq!(config.service_ttl, Duration::from_secs(30));
    assert_eq!(config.recursors, vec!["127.0.0.1:53".parse().unwrap()]);
    for (addr, file, key) in [
        (Some("nowhere:x"), FileDns::default(), "dns_addr"),
        (
            None,
            FileDns {
                domain: Some("bad domain".into()),
                ..FileDns::default()
            },
            "dns.domain",
        ),
        (
            None,
            FileDns {
                node_ttl: Some("soon".into()),
                ..FileDns::default()
            },
            "dns.node_ttl",
        ),
        (
            None,
            FileDns {
                alt_domain: Some("consul".into()),
                ..FileDns::default()
            },
            "dns.alt_domain",
        ),
    ] {
        let error = dns_config(addr, Some(&file), false).unwrap_err();
        assert!(error.to_string().contains(key), "{error}");
    }
}

fn with_recursor(dns_addr: &str, recursor: &str) -> Result<DnsConfig, ConfigError> {
    let file = FileDns {
        recursors: Some(vec![recursor.into()]),
        ..FileDns::default()
    };
    dns_config(Some(dns_addr), Some(&file), false)
}

#[test]
fn a_recursor_that_reaches_the_agent_itself_is_refused() {
    for (dns_addr, recursor) in [
        ("127.0.0.1:8600", "127.0.0.1:8600"),
        ("127.0.0.1:53", "127.0.0.1"),
        ("127.0.0.1:8600", "localhost:8600"),
        ("0.0.0.0:8600", "127.0.0.1:8600"),
        ("0.0.0.0:8600", "127.9.9.9:8600"),
        ("[::]:8600", "127.0.0.1:8600"),
        ("[::]:8600", "[::1]:8600"),
        ("127.0.0.1:8600", "0.0.0.0:8600"),
    ] {
        let error = with_recursor(dns_addr, recursor).unwrap_err().to_string();
        assert!(
            error.contains("dns.recursors") && error.contains("itself"),
            "{dns_addr} {recursor}: {error}"
        );
    }
    for (dns_addr, recursor) in [
        ("127.0.0.1:8600", "127.0.0.1:53"),
        ("127.0.0.1:8600", "127.0.0.2:8600"),
        ("127.0.0.1:0", "127.0.0.1:8600"),
    ] {
        assert!(
            with_recursor(dns_addr, recursor).is_ok(),
            "{dns_addr} {recursor}"
        );
    }
}

#[test]
fn client_networks_default_by_bind_and_parse_with_their_key() {
    let loopback = dns_config(Some("127.0.0.1:8600"), None, false).unwrap();
    assert!(loopback.allows("127.0.0.1".parse().unwrap()));
    assert!(loopback.allows("::ffff:127.0.0.1".parse().unwrap()));
    assert!(loopback.allows("::1".parse().unwrap()));
    assert!(!loopback.allows("10.0.0.1".parse().unwrap()));
    assert_eq!(loopback.rate_limit, 0);
    let wide = dns_config(Some("0.0.0.0:8600"), None, false).unwrap();
    for private in [
        "10.1.2.3",
        "172.17.0.2",
        "192.168.1.1",
        "fd00::1",
        "127.0.0.1",
    ] {
        assert!(wide.allows(private.parse().unwrap()), "{private}");
    }
    for public in ["8.8.8.8", "172.32.0.1", "2001:db8::1"] {
        assert!(!wide.allows(public.parse().unwrap()), "{public}");
    }
    assert_eq!(wide.rate_limit, DEFAULT_DNS_RATE_LIMIT);

    let file = FileDns {
        allow_clients: Some(vec!["192.0.2.0/24".into(), "2001:db8::7".into()]),
        ..FileDns::default()
    };
    let listed = dns_config(None, Some(&file), false).unwrap();
    assert!(listed.allows("192.0.2.200".parse().unwrap()));
    assert!(!listed.allows("192.0.3.1".parse().unwrap()));
    assert!(listed.allows("2001:db8::7".parse().unwrap()));
    assert!(!listed.allows("127.0.0.1".parse().unwrap()));
    for bad in [vec![], vec!["10.0.0.0/33".into()], vec!["nowhere".into()]] {
        let file = FileDns {
            allow_clients: Some(bad.clone()),
            ..FileDns::default()
        };
        let error = dns_config(None, Some(&file), false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("dns.allow_clients"), "{bad:?}: {error}");
    }
}

#[test]
fn protect_reads_refuses_the_catalog_unless_told_otherwise() {
    assert!(DnsConfig::default().serves_catalog());
    let guarded = dns_config(None, None, true).unwrap();
    assert!(!guarded.serves_catalog());
    let file = FileDns {
        serve_with_protect_reads: Some(true),
        ..FileDns::default()
    };
    assert!(
        dns_config(None, Some(&file), true)
            .unwrap()
            .serves_catalog()
    );
}
