//! Which faults a campaign may inject, from the environment. Everything is
//! on by default; each kind can be switched off, to study the others while
//! a defect one of them finds is open:
//!
//! - `SHOAL_CAMPAIGN_FAULTS=kill,pause,...`: only these kinds;
//! - `SHOAL_CAMPAIGN_SKIP=long_partition,hostile`: all but these
//!   (`hostile` names the three hostile-load kinds at once);
//! - `SHOAL_CAMPAIGN_DEFAULT_TIMINGS=0`: no phase with the default timings
//!   (the whole campaign on the quick ones).

use std::collections::BTreeSet;

/// Every fault kind, by the name the switches and the report use.
pub const FAULT_KINDS: [&str; 8] = [
    "kill",
    "pause",
    "partition",
    "long_partition",
    "lossy_link",
    "hostile_filter",
    "hostile_events",
    "hostile_template",
];

/// The fault kinds a campaign may inject.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultMenu {
    enabled: BTreeSet<&'static str>,
    /// Whether part of the campaign runs with the default timings.
    pub default_timings: bool,
}

impl Default for FaultMenu {
    fn default() -> FaultMenu {
        FaultMenu {
            enabled: FAULT_KINDS.into_iter().collect(),
            default_timings: true,
        }
    }
}

impl FaultMenu {
    pub fn allows(&self, kind: &str) -> bool {
        self.enabled.contains(kind)
    }

    /// The enabled kinds, comma-separated.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = FAULT_KINDS
            .into_iter()
            .filter(|kind| self.allows(kind))
            .collect();
        format!(
            "faults {}; default-timings phase {}",
            if kinds.is_empty() {
                "none".to_string()
            } else {
                kinds.join(",")
            },
            if self.default_timings { "on" } else { "off" }
        )
    }

    /// From `SHOAL_CAMPAIGN_FAULTS`, `SHOAL_CAMPAIGN_SKIP` and
    /// `SHOAL_CAMPAIGN_DEFAULT_TIMINGS`.
    pub fn from_env() -> Result<FaultMenu, String> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        FaultMenu::parse(
            var("SHOAL_CAMPAIGN_FAULTS").as_deref(),
            var("SHOAL_CAMPAIGN_SKIP").as_deref(),
            var("SHOAL_CAMPAIGN_DEFAULT_TIMINGS").as_deref(),
        )
    }

    pub fn parse(
        only: Option<&str>,
        skip: Option<&str>,
        default_timings: Option<&str>,
    ) -> Result<FaultMenu, String> {
        let mut menu = FaultMenu::default();
        if let Some(only) = only {
            menu.enabled = kinds("SHOAL_CAMPAIGN_FAULTS", only)?;
        }
        if let Some(skip) = skip {
            for kind in kinds("SHOAL_CAMPAIGN_SKIP", skip)? {
                menu.enabled.remove(kind);
            }
        }
        menu.default_timings = match default_timings.map(str::trim) {
            None | Some("1") => true,
            Some("0") => false,
            Some(other) => {
                return Err(format!(
                    "SHOAL_CAMPAIGN_DEFAULT_TIMINGS=`{other}`: must be 0 (off) or 1 (on)"
                ));
            }
        };
        Ok(menu)
    }
}

/// A comma-separated list of kinds (`all` and `hostile` stand for several).
fn kinds(var: &str, list: &str) -> Result<BTreeSet<&'static str>, String> {
    let mut set = BTreeSet::new();
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "all" => set.extend(FAULT_KINDS),
            "hostile" => set.extend(FAULT_KINDS.into_iter().filter(|k| k.starts_with("hostile"))),
            _ => match FAULT_KINDS.into_iter().find(|kind| *kind == word) {
                Some(kind) => {
                    set.insert(kind);
                }
                None => {
                    return Err(format!(
                        "{var}: unknown fault kind `{word}`; known: {}, all, hostile",
                        FAULT_KINDS.join(", ")
                    ));
                }
            },
        }
    }
    Ok(set)
}

#[cfg(test)]
mod tests {
    use super::FaultMenu;

    #[test]
    fn switches_turn_kinds_off_and_bad_names_are_named() {
        let all = FaultMenu::parse(None, None, None).unwrap();
        assert!(all.allows("long_partition") && all.allows("hostile_events"));
        assert!(all.default_timings);
        let menu = FaultMenu::parse(None, Some("long_partition, hostile"), Some("0")).unwrap();
        assert!(!menu.allows("long_partition") && !menu.allows("hostile_filter"));
        assert!(menu.allows("kill") && !menu.default_timings);
        let only = FaultMenu::parse(Some("kill,pause"), None, None).unwrap();
        assert!(only.allows("pause") && !only.allows("partition"));
        let error = FaultMenu::parse(None, Some("kil"), None).unwrap_err();
        assert!(
            error.contains("SHOAL_CAMPAIGN_SKIP") && error.contains("`kil`"),
            "{error}"
        );
        let error = FaultMenu::parse(None, None, Some("yes")).unwrap_err();
        assert!(error.contains("SHOAL_CAMPAIGN_DEFAULT_TIMINGS"), "{error}");
    }
}
