//! `shoal version`: what an operator needs to tell builds apart during a
//! rolling upgrade, in the layout of `consul version`.

use shoal_protocol::envelope::{PROTOCOL_VERSION, WIRE_VERSION_MAX, WIRE_VERSION_MIN};

use crate::persist::DATA_DIR_FORMAT;

/// The release (from the workspace's `Cargo.toml`).
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");
/// The git commit the binary was built from (see `agent/build.rs`).
pub const COMMIT: &str = env!("SHOAL_BUILD_COMMIT");

/// The version text, ending in a newline:
///
/// ```text
/// shoal v0.2.0
/// Revision 74b67ec0a1
/// Protocol 2 spoken, understands 1 to 2
/// Data dir format 1
/// ```
pub fn text() -> String {
    format!(
        "shoal v{RELEASE}\nRevision {COMMIT}\n\
         Protocol {PROTOCOL_VERSION} spoken, understands {WIRE_VERSION_MIN} to {WIRE_VERSION_MAX}\n\
         Data dir format {DATA_DIR_FORMAT}\n"
    )
}

/// The same text for clap's `--version`, which prints the command's name
/// and a newline itself.
pub fn clap_text() -> String {
    let text = text();
    text.strip_prefix("shoal ")
        .unwrap_or(&text)
        .trim_end()
        .to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_release_commit_and_formats() {
        let text = super::text();
        assert!(text.starts_with(&format!("shoal v{}\n", super::RELEASE)));
        assert!(text.contains("\nRevision "), "{text}");
        assert!(
            text.contains("\nProtocol 2 spoken, understands 1 to 2\n"),
            "{text}"
        );
        assert!(text.contains("\nData dir format 1\n"), "{text}");
    }
}
