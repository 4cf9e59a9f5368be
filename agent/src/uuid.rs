//! UUIDs in their text form: node IDs (made once per data directory, see
//! `persist`) and user event IDs (see `events`).

/// A random (version 4) UUID from 16 random bytes, in its usual
/// lower-case text form.
pub fn new_uuid(bytes: [u8; 16]) -> String {
    uuid_text(&version_4(bytes))
}

/// 16 random bytes made a version 4 UUID (its version and variant bits set).
pub fn version_4(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// 16 bytes as a UUID string (`8-4-4-4-12` lowercase hex digits).
pub fn uuid_text(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// Whether `text` is a UUID in text form (8-4-4-4-12 hex digits).
pub fn is_uuid(text: &str) -> bool {
    let groups: Vec<&str> = text.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_and_version_bits() {
        let text = new_uuid([0xff; 16]);
        assert_eq!(text, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(is_uuid(&text));
        assert!(!is_uuid("0123456789abcdef0123456789abcdef"));
    }
}
