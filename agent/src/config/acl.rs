//! The `[acl]` table: who may use the HTTP API (enforced by `api::guard`).

use super::file::FileAcl;
use super::{ConfigError, invalid};

/// Longest accepted API token.
pub const MAX_ACL_TOKEN: usize = 256;

/// Who may use the HTTP API (see `api::guard`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AclConfig {
    /// When set, every write (and every read with `protect_reads`) must
    /// present it (`X-Consul-Token`, `Authorization: Bearer` or `?token=`).
    pub token: Option<String>,
    /// Reads need the token too. Default false: the local service reads
    /// without one, as with Consul's default `anonymous` read policy.
    pub protect_reads: bool,
    /// On an agent without a token, callers may read and change the
    /// gossip keyring (list, install, use, remove). Default false: the keys
    /// admit their holder to the cluster, so reading or changing them needs
    /// the token, and an agent without one refuses both. Meaningless (and
    /// refused) beside a token.
    pub allow_unauthenticated_keyring: bool,
}

impl std::fmt::Debug for AclConfig {
    // The token is a secret: never in a log line or a debug dump.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AclConfig")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("protect_reads", &self.protect_reads)
            .field(
                "allow_unauthenticated_keyring",
                &self.allow_unauthenticated_keyring,
            )
            .finish()
    }
}

/// Validates the `[acl]` table (flags already applied).
pub(super) fn acl_config(file: Option<FileAcl>) -> Result<AclConfig, ConfigError> {
    let file = file.unwrap_or_default();
    let token = file.token;
    if let Some(token) = &token {
        let printable = token.bytes().all(|b| b.is_ascii_graphic());
        if token.is_empty() || token.len() > MAX_ACL_TOKEN || !printable {
            return Err(invalid(
                "acl.token",
                format!(
                    "must be 1 to {MAX_ACL_TOKEN} printable ASCII characters without spaces (try `openssl rand -hex 32`)"
                ),
            ));
        }
    }
    let protect_reads = file.protect_reads.unwrap_or(false);
    if protect_reads && token.is_none() {
        return Err(invalid(
            "acl.protect_reads",
            "needs a token (set acl.token, --acl-token or SHOAL_ACL_TOKEN)",
        ));
    }
    let allow_unauthenticated_keyring = file.allow_unauthenticated_keyring.unwrap_or(false);
    if allow_unauthenticated_keyring && token.is_some() {
        return Err(invalid(
            "acl.allow_unauthenticated_keyring",
            "has no effect with acl.token set (keyring reads and changes then need the token): remove one of them",
        ));
    }
    Ok(AclConfig {
        token,
        protect_reads,
        allow_unauthenticated_keyring,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(toml_text: &str) -> Result<AclConfig, ConfigError> {
        acl_config(Some(toml::from_str(toml_text).unwrap()))
    }

    #[test]
    fn the_keyring_opt_in_is_off_by_default_and_refused_beside_a_token() {
        assert!(!acl("").unwrap().allow_unauthenticated_keyring);
        assert!(
            acl("allow_unauthenticated_keyring = true")
                .unwrap()
                .allow_unauthenticated_keyring
        );
        let error = acl("token = \"t0ken\"\nallow_unauthenticated_keyring = true").unwrap_err();
        assert!(
            error
                .to_string()
                .contains("acl.allow_unauthenticated_keyring"),
            "{error}"
        );
    }
}
