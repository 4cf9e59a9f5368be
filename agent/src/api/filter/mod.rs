//! Consul's `?filter=` expressions (the go-bexpr language), evaluated
//! against the JSON of each result element, so selectors are Consul's JSON
//! field names (`Service.Tags`, `Node.Meta.env`, `Checks.Status`).
//!
//! - [`parse`]: the grammar (over the tokens of `lex`).
//! - [`shapes`]: one example element per endpoint, from the same
//!   `consul_json` functions the endpoints answer with; selectors are
//!   checked against it, so an unknown one is a 400 before anything runs.
//!
//! Budgets (docs/budgets.md): at most [`MAX_REGEX_TERMS`] `matches` terms,
//! whose regular expressions compile to at most [`MAX_FILTER_REGEX_BYTES`]
//! together; past either, a 400 names the limit. The catalog and health
//! endpoints compile and run filters on a small pool of their own
//! ([`pool`], at low CPU priority; driven by `api::blocking`), never on
//! the thread that serves the other requests,
//! and a waiting blocking query keeps only the filter's text ([`Source`]).
//!
//! Semantics, as go-bexpr's:
//! - `==`/`!=` compare a string, number or boolean (the value is read as
//!   the field's type); `contains`/`in` test a list's elements, a map's
//!   keys or a substring; `matches` is a regular expression (Rust's `regex`
//!   syntax, which agrees with Go's RE2 on everything but rare corners);
//!   `is empty` is true of an empty list, map or string.
//! - A selector that goes through a list (`Checks.Status` on a health
//!   entry) matches when any element does; `!=` and the other negations
//!   are true when no element matches.
//! - A map key that is absent (`Meta.env` without `env`) matches nothing:
//!   `==`, `contains`, `matches` and `is not empty` are false, the
//!   negations and `is empty` true.

mod lex;
pub mod parse;
pub mod pool;
pub mod shapes;

use axum::http::StatusCode;
use serde_json::Value;

use super::{ApiError, Query};
use parse::{Expr, Match, Op};
pub use parse::{FilterError, MAX_FILTER_REGEX_BYTES, MAX_REGEX_TERMS};
pub use shapes::Shape;

/// Object fields whose keys are the user's: any key is a valid selector.
const USER_MAPS: &[&str] = &[
    "Meta",
    "NodeMeta",
    "ServiceMeta",
    "TaggedAddresses",
    "ServiceTaggedAddresses",
];

/// A parsed, checked filter.
#[derive(Clone, Debug)]
pub struct Filter {
    expr: Expr,
}

/// The `?filter=` of a request for `shape` elements, if any; a 400 naming
/// the position and the problem when it is malformed.
/// Compiled where it is called: for the agent's own (small) lists; the
/// catalog's go through [`Source`] and the filter pool.
pub fn from_query(query: &Query, shape: Shape) -> Result<Option<Filter>, ApiError> {
    Source::from_query(query, shape)
        .map(|source| source.compile())
        .transpose()
}

/// The `?filter=` of a request, not compiled yet: what a blocking query
/// keeps while it waits (compiled, a filter may take up to
/// [`MAX_FILTER_REGEX_BYTES`] and more to search with).
#[derive(Clone, Debug)]
pub struct Source {
    text: String,
    shape: Shape,
}

impl Source {
    /// The `?filter=` of a request for `shape` elements, if any.
    pub fn from_query(query: &Query, shape: Shape) -> Option<Source> {
        match query.get("filter") {
            None | Some("") => None,
            Some(text) => Some(Source {
                text: text.to_string(),
                shape,
            }),
        }
    }

    /// Compiles it (CPU work: call it where it can't delay other
    /// requests); a 400 naming the position and the problem when it is
    /// malformed or over budget.
    pub fn compile(&self) -> Result<Filter, ApiError> {
        Filter::parse(&self.text, &self.shape.sample())
            .map_err(|error| ApiError::new(StatusCode::BAD_REQUEST, format!("filter: {error}")))
    }
}

/// Keeps the elements of `items` that `filter` lets through.
pub fn apply(filter: Option<&Filter>, items: Vec<Value>) -> Vec<Value> {
    match filter {
        None => items,
        Some(filter) => items.into_iter().filter(|v| filter.matches(v)).collect(),
    }
}

/// What a selector points at in the example element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    String,
    Number,
    Bool,
    List,
    Map,
}

impl Kind {
    fn of(value: &Value) -> Kind {
        match value {
            Value::Number(_) => Kind::Number,
            Value::Bool(_) => Kind::Bool,
            Value::Array(_) => Kind::List,
            Value::Object(_) => Kind::Map,
            Value::String(_) | Value::Null => Kind::String,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::String => "a string",
            Kind::Number => "a number",
            Kind::Bool => "a boolean",
            Kind::List => "a list",
            Kind::Map => "a map",
        }
    }
}

impl Filter {
    /// Parses `text` and checks every selector and operator against
    /// `sample`, an example of the elements it will filter.
    pub fn parse(text: &str, sample: &Value) -> Result<Filter, FilterError> {
        let expr = parse::parse(text)?;
        check(&expr, sample)?;
        Ok(Filter { expr })
    }

    /// Whether `value` passes.
    pub fn matches(&self, value: &Value) -> bool {
        evaluate(&self.expr, value)
    }
}

fn check(expr: &Expr, sample: &Value) -> Result<(), FilterError> {
    match expr {
        Expr::Or(terms) | Expr::And(terms) => terms.iter().try_for_each(|term| check(term, sample)),
        Expr::Not(inner) => check(inner, sample),
        Expr::Match(matching) => check_match(matching, sample),
    }
}

fn check_match(matching: &Match, sample: &Value) -> Result<(), FilterError> {
    let selector = &matching.selector;
    let error = |message: String| FilterError {
        position: selector.position,
        message,
    };
    let kind = kind_at(sample, &selector.path)
        .map_err(|problem| error(format!("unknown selector `{}`: {problem}", selector.text)))?;
    let fits = match &matching.op {
        Op::Equal(value) => match kind {
            Kind::String => Ok(()),
            Kind::Number if value.parse::<f64>().is_ok() => Ok(()),
            Kind::Bool if super::parse_bool(value).is_some() => Ok(()),
            Kind::Number | Kind::Bool => Err(format!(
                "`{}` is {}, and `{value}` is not one",
                selector.text,
                kind.name()
            )),
            Kind::List | Kind::Map => Err(format!(
                "`{}` is {}: use `contains` or `in`, not `==` or `!=`",
                selector.text,
                kind.name()
            )),
        },
        Op::Contains(_) | Op::IsEmpty if matches!(kind, Kind::Number | Kind::Bool) => Err(format!(
            "`{}` is {}: `contains`, `in` and `is empty` need a list, a map or a string",
            selector.text,
            kind.name()
        )),
        Op::Matches(_) if kind != Kind::String => Err(format!(
            "`{}` is {}: `matches` needs a string",
            selector.text,
            kind.name()
        )),
        _ => Ok(()),
    };
    fits.map_err(error)
}

/// The kind of what `path` selects in `sample`, or why it selects nothing.
fn kind_at(sample: &Value, path: &[String]) -> Result<Kind, String> {
    let mut current = sample;
    let mut user_map = false;
    let mut walked: Vec<&str> = Vec::new();
    for segment in path {
        // A selector goes through lists to their elements.
        while let Value::Array(items) = current {
            match items.first() {
                Some(first) if first.is_object() => current = first,
                _ => break,
            }
        }
        let here = if walked.is_empty() {
            "an element".to_string()
        } else {
            format!("`{}`", walked.join("."))
        };
        current = match current {
            Value::Object(map) => match map.get(segment) {
                Some(next) => next,
                // Any key of a user map; its values look like the sample's.
                None if user_map => map.values().next().unwrap_or(&Value::Null),
                None => {
                    let fields: Vec<&str> = map.keys().map(String::as_str).collect();
                    return Err(format!(
                        "{here} has no field `{segment}` (it has {})",
                        fields.join(", ")
                    ));
                }
            },
            other => {
                return Err(format!(
                    "{here} is {}, it has no field `{segment}`",
                    Kind::of(other).name()
                ));
            }
        };
        user_map = !user_map && USER_MAPS.contains(&segment.as_str());
        walked.push(segment);
    }
    Ok(Kind::of(current))
}

fn evaluate(expr: &Expr, value: &Value) -> bool {
    match expr {
        Expr::Or(terms) => terms.iter().any(|term| evaluate(term, value)),
        Expr::And(terms) => terms.iter().all(|term| evaluate(term, value)),
        Expr::Not(inner) => !evaluate(inner, value),
        Expr::Match(matching) => {
            let mut found = Vec::new();
            select(value, &matching.selector.path, &mut found);
            let any = found.iter().any(|v| matches_one(&matching.op, *v));
            any != matching.negate
        }
    }
}

/// Every value `path` selects in `value` (several through lists); `None`
/// for a key that is absent.
fn select<'a>(value: &'a Value, path: &[String], found: &mut Vec<Option<&'a Value>>) {
    match (path.split_first(), value) {
        (None, _) => found.push(Some(value)),
        (Some(_), Value::Array(items)) => {
            for item in items {
                select(item, path, found);
            }
        }
        (Some((segment, rest)), Value::Object(map)) => match map.get(segment) {
            Some(next) => select(next, rest, found),
            None => found.push(None),
        },
        (Some(_), _) => found.push(None),
    }
}

fn matches_one(op: &Op, value: Option<&Value>) -> bool {
    let Some(value) = value else {
        return matches!(op, Op::IsEmpty);
    };
    match op {
        Op::Equal(wanted) => equals(value, wanted),
        Op::Contains(wanted) => match value {
            Value::Array(items) => items.iter().any(|item| equals(item, wanted)),
            Value::Object(map) => map.contains_key(wanted),
            Value::String(text) => text.contains(wanted.as_str()),
            _ => false,
        },
        Op::Matches(regex) => value.as_str().is_some_and(|text| regex.is_match(text)),
        Op::IsEmpty => match value {
            Value::Array(items) => items.is_empty(),
            Value::Object(map) => map.is_empty(),
            Value::String(text) => text.is_empty(),
            Value::Null => true,
            _ => false,
        },
    }
}

/// `value == wanted`, `wanted` read as `value`'s type.
fn equals(value: &Value, wanted: &str) -> bool {
    match value {
        Value::String(text) => text == wanted,
        Value::Number(number) => wanted
            .parse::<f64>()
            .is_ok_and(|wanted| number.as_f64() == Some(wanted)),
        Value::Bool(flag) => super::parse_bool(wanted) == Some(*flag),
        Value::Null => wanted.is_empty(),
        _ => false,
    }
}

#[cfg(test)]
mod tests;
