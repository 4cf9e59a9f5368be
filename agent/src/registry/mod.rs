//! The registry: the services and checks registered on this agent (from
//! the config file or the HTTP API), the state of every check, and
//! maintenance. The core loop owns it (through `daemon::registrar`);
//! everyone else reads it in snapshots.
//!
//! - [`keys`]: Consul's case-insensitive, snake_case-tolerant JSON keys.
//! - [`service`]: service definitions and Consul's validation limits.
//! - [`store`]: [`Registry`], the registered services and the state of
//!   every check.

pub mod keys;
pub mod service;
pub mod store;

pub use service::ServiceDefinition;
pub use store::{Change, RegisteredCheck, Registry, RegistryError, Source, Spawn};
