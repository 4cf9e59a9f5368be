//! The functions a template can call, over one published [`Snapshot`],
//! and [`render`], which compiles and renders a template against it while
//! recording what it read (the cluster, the KV store) so that the runner
//! renders again only when that part changes.
//!
//! Catalog answers come from [`crate::catalog`] (the same filters and
//! health as `/v1/health/service/:name?passing`), flag decisions from
//! [`crate::flags`] (as `/v1/flags/:key` gives them).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use minijinja::value::{Kwargs, Value};
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior};
use shoal_protocol::record::worst_status;

use crate::catalog::{self, ServiceFilter};
use crate::flags;
use crate::reads::Reads;
use crate::snapshot::Snapshot;

/// Every part a template can read (the cluster and the KV store; never
/// the events): what a failed render waits on, as the missing key may
/// appear.
pub const ALL_A_TEMPLATE_READS: Reads = Reads::CLUSTER.and(Reads::KV);

/// How a render may behave.
#[derive(Clone, Copy, Debug)]
pub struct RenderOptions {
    /// `env()` reads the agent's environment. Off for API renders without
    /// the token: the environment often holds secrets.
    pub allow_env: bool,
    /// Bounds the work of one render (minijinja's fuel); `None`: unbounded.
    pub fuel: Option<u64>,
    /// Largest output accepted, in bytes.
    pub max_output: usize,
}

/// A successful render.
#[derive(Debug)]
pub struct Rendered {
    pub output: String,
    pub reads: Reads,
}

/// A failed render: what went wrong, and what it had read until then.
#[derive(Debug)]
pub struct RenderError {
    pub message: String,
    pub reads: Reads,
}

#[derive(Default)]
struct ReadFlags {
    cluster: AtomicBool,
    kv: AtomicBool,
}

impl ReadFlags {
    fn get(&self) -> Reads {
        Reads {
            cluster: self.cluster.load(Ordering::Relaxed),
            kv: self.kv.load(Ordering::Relaxed),
            events: false,
        }
    }
}

fn failed(message: String) -> Error {
    Error::new(ErrorKind::InvalidOperation, message)
}

/// Compiles `source` and renders it against `snapshot`. CPU work: run it
/// off the async runtime (`spawn_blocking`).
pub fn render(
    source: &str,
    snapshot: Arc<Snapshot>,
    options: RenderOptions,
) -> Result<Rendered, RenderError> {
    let reads = Arc::new(ReadFlags::default());
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::SemiStrict);
    env.set_fuel(options.fuel);
    add_functions(&mut env, &snapshot, &reads, options.allow_env);
    let mut output = CappedOutput {
        bytes: Vec::new(),
        max: options.max_output,
        overflowed: false,
    };
    let result = env
        .template_from_str(source)
        .and_then(|template| template.render_captured_to((), &mut output).map(drop));
    let reads = reads.get();
    match result {
        Err(_) if output.overflowed => Err(RenderError {
            message: format!(
                "the output is more than {} bytes, the most accepted (the render was stopped)",
                options.max_output
            ),
            reads,
        }),
        Ok(()) => Ok(Rendered {
            // Written in whole `str` pieces: valid UTF-8, kept without a copy.
            output: String::from_utf8(output.bytes)
                .unwrap_or_else(|error| String::from_utf8_lossy(error.as_bytes()).into_owned()),
            reads,
        }),
        Err(error) => Err(RenderError {
            message: describe(&error),
            reads,
        }),
    }
}

/// A render's output, refusing to grow past `max` bytes: the render stops
/// at the first write past it instead of building the whole output.
struct CappedOutput {
    bytes: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl std::io::Write for CappedOutput {
    fn write(&mut self, piece: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + piece.len() > self.max {
            self.overflowed = true;
            return Err(std::io::Error::other("the output is too large"));
        }
        self.bytes.extend_from_slice(piece);
        Ok(piece.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The error with its line, and what caused it.
fn describe(error: &Error) -> String {
    let mut message = match (error.detail(), error.line()) {
        (Some(detail), Some(line)) => format!("{} at line {line}: {detail}", error.kind()),
        (Some(detail), None) => format!("{}: {detail}", error.kind()),
        (None, Some(line)) => format!("{} at line {line}", error.kind()),
        (None, None) => error.kind().to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn add_functions(
    env: &mut Environment<'_>,
    snapshot: &Arc<Snapshot>,
    reads: &Arc<ReadFlags>,
    allow_env: bool,
) {
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function(
        "service",
        move |name: String, tag: Option<String>, kwargs: Kwargs| -> Result<Value, Error> {
            read.cluster.store(true, Ordering::Relaxed);
            let tag: Option<String> = match kwargs.get::<Option<String>>("tag")? {
                Some(tag) => Some(tag),
                None => tag,
            };
            let passing = kwargs.get::<Option<bool>>("passing")?.unwrap_or(true);
            kwargs.assert_all_used()?;
            Ok(service(&snap, &name, tag, passing))
        },
    );
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function("services", move || -> Value {
        read.cluster.store(true, Ordering::Relaxed);
        catalog::service_tags(&snap.members, &[])
            .into_iter()
            .map(|(name, tags)| {
                let tags: Vec<Value> = tags.into_iter().map(Value::from).collect();
                object([("name", Value::from(name)), ("tags", Value::from(tags))])
            })
            .collect::<Vec<Value>>()
            .into()
    });
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function("nodes", move || -> Value {
        read.cluster.store(true, Ordering::Relaxed);
        catalog::nodes(&snap.members)
            .map(|node| {
                object([
                    ("name", Value::from(node.record.name.as_str())),
                    ("address", Value::from(node.address())),
                    ("status", Value::from(node.member.status.as_str())),
                    ("datacenter", Value::from(node.record.datacenter.as_str())),
                    ("meta", Value::from(&node.record.tags)),
                ])
            })
            .collect::<Vec<Value>>()
            .into()
    });
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function("key", move |path: String| -> Result<Value, Error> {
        read.kv.store(true, Ordering::Relaxed);
        kv_value(&snap, &path)
            .ok_or_else(|| failed(format!("key `{path}` not found (use key_or_default)")))
    });
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function(
        "key_or_default",
        move |path: String, default: Value| -> Value {
            read.kv.store(true, Ordering::Relaxed);
            kv_value(&snap, &path).unwrap_or(default)
        },
    );
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function("tree", move |prefix: String| -> Value {
        read.kv.store(true, Ordering::Relaxed);
        snap.kv
            .prefix(&prefix)
            .filter(|stored| !stored.entry.deleted && !crate::kv::is_reserved(&stored.entry.key))
            .map(|stored| {
                object([
                    ("key", Value::from(stored.entry.key.as_str())),
                    (
                        "value",
                        Value::from(String::from_utf8_lossy(&stored.entry.value).into_owned()),
                    ),
                ])
            })
            .collect::<Vec<Value>>()
            .into()
    });
    let (snap, read) = (snapshot.clone(), reads.clone());
    env.add_function(
        "flag",
        move |name: String, user: Option<String>, kwargs: Kwargs| -> Result<Value, Error> {
            // The decision depends on the definition (KV) and on this
            // agent's services and tags (its record, in the cluster).
            read.kv.store(true, Ordering::Relaxed);
            read.cluster.store(true, Ordering::Relaxed);
            let user = match kwargs.get::<Option<String>>("user")? {
                Some(user) => Some(user),
                None => user,
            };
            kwargs.assert_all_used()?;
            flag(&snap, &name, user.as_deref())
        },
    );
    env.add_function("env", move |name: String| -> Result<Value, Error> {
        if !allow_env {
            return Err(failed(format!(
                "env(\"{name}\") is not available here: it would show the agent's \
                 environment (render with the agent's token, `shoal template render --env`)"
            )));
        }
        Ok(Value::from(std::env::var(&name).unwrap_or_default()))
    });
}

fn object<const N: usize>(fields: [(&'static str, Value); N]) -> Value {
    Value::from(BTreeMap::from(fields))
}

fn kv_value(snapshot: &Snapshot, path: &str) -> Option<Value> {
    if crate::kv::is_reserved(path) {
        return None;
    }
    let stored = snapshot
        .kv
        .get(path)
        .filter(|stored| !stored.entry.deleted)?;
    Some(Value::from(
        String::from_utf8_lossy(&stored.entry.value).into_owned(),
    ))
}

/// The instances of `name`, as `/v1/health/service/:name` lists them.
fn service(snapshot: &Snapshot, name: &str, tag: Option<String>, passing: bool) -> Value {
    let filter = ServiceFilter {
        passing,
        tags: tag.into_iter().collect(),
        node_meta: Vec::new(),
    };
    catalog::matching_instances(&snapshot.members, name, &filter)
        .map(|(node, instance)| {
            let status = worst_status(&node.service_checks(instance));
            let tags: Vec<Value> = instance.tags.iter().map(Value::from).collect();
            object([
                ("id", Value::from(instance.id.as_str())),
                ("name", Value::from(instance.name.as_str())),
                ("node", Value::from(node.record.name.as_str())),
                ("address", Value::from(node.service_address(instance))),
                ("port", Value::from(instance.port)),
                ("tags", Value::from(tags)),
                ("meta", Value::from(&instance.meta)),
                ("status", Value::from(status.as_str())),
            ])
        })
        .collect::<Vec<Value>>()
        .into()
}

/// The decision for `user` on this agent, as `GET /v1/flags/:key` gives it.
fn flag(snapshot: &Snapshot, name: &str, user: Option<&str>) -> Result<Value, Error> {
    let stored = snapshot
        .kv
        .get(&flags::kv_key(name))
        .filter(|stored| !stored.entry.deleted)
        .ok_or_else(|| failed(format!("flag `{name}` not found")))?;
    let context = flags::Context {
        user,
        services: snapshot
            .local
            .services
            .iter()
            .map(|service| service.name.as_str())
            .collect(),
        node_tags: &snapshot.local.tags,
    };
    let (decision, _definition) = flags::decide_stored(name, &stored.entry.value, &context);
    Ok(object([
        ("key", Value::from(name)),
        ("enabled", Value::from(decision.enabled)),
        ("reason", Value::from(decision.reason)),
        ("user", Value::from(user)),
        ("bucket", Value::from(decision.bucket)),
    ]))
}

#[cfg(test)]
#[path = "functions_tests.rs"]
mod tests;
