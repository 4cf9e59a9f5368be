//! The command line as an operator meets it, on the real binary.

use std::process::Command;

use shoal_tests::shoal_bin;

/// `shoal version` and `shoal --version` print the same text: the release
/// from Cargo.toml, the commit it was built from, and the wire and data-dir
/// formats (what an operator compares during a rolling upgrade).
#[test]
fn version_names_the_release_the_commit_and_the_formats() {
    let run = |arg: &str| {
        let output = Command::new(shoal_bin()).arg(arg).output().unwrap();
        assert!(output.status.success(), "shoal {arg}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let text = run("version");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("shoal v{}", env!("CARGO_PKG_VERSION")).as_str()),
        "{text}"
    );
    let revision = lines
        .iter()
        .find_map(|line| line.strip_prefix("Revision "))
        .unwrap_or_else(|| panic!("no revision: {text}"));
    assert!(
        revision == "unknown" || revision.chars().take(7).all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
    assert!(
        text.contains("\nProtocol 2 spoken, understands 1 to 2\n"),
        "{text}"
    );
    assert!(text.contains("\nData dir format 1\n"), "{text}");
    assert_eq!(run("--version"), text);
}
