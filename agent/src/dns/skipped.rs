//! Services DNS does not serve (names with `_`, see
//! [`crate::registry::service::served_by_dns`]): each is logged once, the
//! first time a query would have answered it, never once per query.

use std::collections::HashSet;
use std::sync::Mutex;

/// At most this many names are remembered; past it, further names are
/// not logged (the set is bounded by the catalog, this is a backstop).
const MAX_REMEMBERED: usize = 4096;

/// The names already logged.
#[derive(Debug, Default)]
pub struct SkippedServices {
    logged: Mutex<HashSet<String>>,
}

impl SkippedServices {
    /// Logs that service `name` exists but is not served over DNS, unless
    /// it was logged before.
    pub fn note(&self, name: &str) {
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() >= MAX_REMEMBERED || logged.contains(name) {
            return;
        }
        logged.insert(name.to_string());
        drop(logged);
        tracing::info!(
            service = name,
            "service `{name}` is not served over DNS: its name has '_', which DNS names can't hold; it is answered over HTTP only (logged once per name)"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_name_is_remembered_once_and_the_set_is_bounded() {
        let skipped = SkippedServices::default();
        for _ in 0..3 {
            skipped.note("queue_worker");
        }
        assert_eq!(skipped.logged.lock().unwrap().len(), 1);
        for i in 0..MAX_REMEMBERED + 10 {
            skipped.note(&format!("name_{i}"));
        }
        assert_eq!(skipped.logged.lock().unwrap().len(), MAX_REMEMBERED);
    }
}
