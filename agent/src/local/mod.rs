//! What is registered on this agent: services, their checks, maintenance.
//!
//! - [`keys`]: Consul's case-insensitive, snake_case-tolerant JSON keys.
//! - [`service`]: service definitions and Consul's validation limits.
//! - [`registry`]: the registered services and the state of every check.

pub mod keys;
pub mod registry;
pub mod service;
