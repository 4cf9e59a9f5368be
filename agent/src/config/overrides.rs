//! Settings from the command line and `SHOAL_*` variables, and how they
//! win over the file: [`Overrides::apply_to`] folds them into the parsed
//! file, so that validation sees one value per key.

use std::path::PathBuf;

use super::file::{FileAcl, FileConfig};
use super::{ConfigError, invalid};

/// Settings given on the command line or through `SHOAL_*` variables.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub dev: bool,
    pub node_name: Option<String>,
    pub datacenter: Option<String>,
    pub cluster: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub bind: Option<String>,
    pub advertise: Option<String>,
    pub http_addr: Option<String>,
    /// `--dns-addr` / `SHOAL_DNS_ADDR`.
    pub dns_addr: Option<String>,
    pub join: Vec<String>,
    pub tags: Vec<String>,
    pub log_level: Option<String>,
    pub log_format: Option<String>,
    pub config_dir: Option<PathBuf>,
    pub fault_injection: bool,
    /// `--acl-token` / `SHOAL_ACL_TOKEN`.
    pub acl_token: Option<String>,
    /// `--acl-protect-reads`.
    pub acl_protect_reads: bool,
    /// `--acl-allow-unauthenticated-keyring` /
    /// `SHOAL_ACL_ALLOW_UNAUTHENTICATED_KEYRING`.
    pub acl_allow_unauthenticated_keyring: bool,
    /// `--encrypt` / `SHOAL_ENCRYPT`.
    pub encrypt: Option<String>,
    /// `--enable-script-checks` / `SHOAL_ENABLE_SCRIPT_CHECKS`.
    pub enable_script_checks: bool,
    /// `--enable-local-script-checks BOOL` / `SHOAL_ENABLE_LOCAL_SCRIPT_CHECKS`.
    pub enable_local_script_checks: Option<bool>,
    /// `--wan` / `SHOAL_WAN`: `wan.enabled`.
    pub wan: bool,
    /// `--wan-bind` / `SHOAL_WAN_BIND`.
    pub wan_bind: Option<String>,
    /// `--wan-advertise` / `SHOAL_WAN_ADVERTISE`.
    pub wan_advertise: Option<String>,
    /// `--join-wan` / `SHOAL_JOIN_WAN`: replaces `wan.join`.
    pub join_wan: Vec<String>,
}

impl Overrides {
    /// Writes every setting given here over the file's: a flag replaces the
    /// key (`join` as a whole), except `tags`, which are added to the
    /// file's, and `acl.protect_reads` and `acl.allow_unauthenticated_keyring`,
    /// which a flag can only turn on.
    pub fn apply_to(&self, file: &mut FileConfig) -> Result<(), ConfigError> {
        let replace = |flag: &Option<String>, key: &mut Option<String>| {
            if flag.is_some() {
                key.clone_from(flag);
            }
        };
        replace(&self.node_name, &mut file.node_name);
        replace(&self.datacenter, &mut file.datacenter);
        replace(&self.cluster, &mut file.cluster);
        replace(&self.encrypt, &mut file.encrypt);
        replace(&self.bind, &mut file.bind);
        replace(&self.advertise, &mut file.advertise);
        replace(&self.http_addr, &mut file.http_addr);
        replace(&self.dns_addr, &mut file.dns_addr);
        replace(&self.log_level, &mut file.log_level);
        replace(&self.log_format, &mut file.log_format);
        if self.data_dir.is_some() {
            file.data_dir.clone_from(&self.data_dir);
        }
        if !self.join.is_empty() {
            file.join = Some(self.join.clone());
        }
        if self.wan
            || self.wan_bind.is_some()
            || self.wan_advertise.is_some()
            || !self.join_wan.is_empty()
        {
            let wan = file.wan.get_or_insert_default();
            if self.wan {
                wan.enabled = Some(true);
            }
            replace(&self.wan_bind, &mut wan.bind);
            replace(&self.wan_advertise, &mut wan.advertise);
            if !self.join_wan.is_empty() {
                wan.join = Some(self.join_wan.clone());
            }
        }
        let tags = file.tags.get_or_insert_default();
        for text in &self.tags {
            let (key, value) = text
                .split_once('=')
                .ok_or_else(|| invalid("tags", format!("`{text}` is not of the form key=value")))?;
            tags.insert(key.trim().to_string(), value.trim().to_string());
        }
        let acl = file.acl.get_or_insert_with(FileAcl::default);
        replace(&self.acl_token, &mut acl.token);
        if self.acl_protect_reads {
            acl.protect_reads = Some(true);
        }
        if self.acl_allow_unauthenticated_keyring {
            acl.allow_unauthenticated_keyring = Some(true);
        }
        Ok(())
    }
}
