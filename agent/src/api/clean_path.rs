//! Paths with repeated slashes or `.`/`..` segments, answered as Consul's
//! server answers them: Consul routes with Go's `http.ServeMux`, which
//! cleans the path (`path.Clean`, keeping a trailing slash) and, when the
//! clean path differs, redirects there with `301 Moved Permanently`, the
//! query kept, for every method but `CONNECT`. Clients rely on it: a key
//! joined as `prefix + "/" + key` asks for `/v1/kv//app/config`.
//!
//! No handler ever sees an unclean path, so the route, and with it the
//! token and browser checks of [`super::guard`], are always decided on the
//! clean one: `/v1//operator/keyring` or `/v1/kv/../operator/keyring` is
//! sent to `/v1/operator/keyring`, where the keyring's rules apply.
//!
//! One difference from Consul, on purpose: a write (any method but `GET`
//! and `HEAD`) is redirected with `308 Permanent Redirect`, which tells
//! the client to send the same method and body again. On a `301`, Go's
//! client re-sends a `PUT` as a `GET` and python-requests re-sends it
//! without its body: a KV write would silently read, or store an empty
//! value. Either way the redirected request itself changes nothing.
//!
//! Cleaning works on the path as sent (percent-encoded), as Go's does
//! since 1.22: `%2F` and `%2E` are data, not path syntax, so a KV key that
//! really holds `//` or a `..` segment is written and read with those
//! characters percent-encoded (`/v1/kv/a%2F%2Fb`).

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;

/// The clean form of `path` (an origin-form path, starting with `/`), or
/// `None` when it is clean already (the common case: no allocation).
pub fn cleaned(path: &str) -> Option<String> {
    let rest = path.strip_prefix('/')?;
    if is_clean(rest) {
        return None;
    }
    let mut segments: Vec<&str> = Vec::new();
    for segment in rest.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            segment => segments.push(segment),
        }
    }
    let mut clean = String::with_capacity(path.len());
    for segment in &segments {
        clean.push('/');
        clean.push_str(segment);
    }
    // path.Clean drops a trailing slash; Go's ServeMux puts it back.
    if clean.is_empty() || path.ends_with('/') {
        clean.push('/');
    }
    Some(clean)
}

/// Whether the path after its leading `/` has no empty segment (but a
/// trailing slash) and no `.` or `..` segment.
fn is_clean(rest: &str) -> bool {
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == "." || segment == ".." {
            return false;
        }
    }
    true
}

/// The redirect for a request whose path is not clean, or `None`.
pub fn redirect<B>(request: &Request<B>) -> Option<Response> {
    let uri = request.uri();
    let clean = cleaned(uri.path())?;
    let location = match uri.query() {
        Some(query) => format!("{clean}?{query}"),
        None => clean,
    };
    let location = HeaderValue::from_str(&location).ok()?;
    let method = request.method();
    let status = if method == Method::GET || method == Method::HEAD {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::PERMANENT_REDIRECT
    };
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response.headers_mut().insert(header::LOCATION, location);
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Go's `cleanPath` on the same inputs (net/http, server.go).
    #[test]
    fn cleans_as_go_servemux_does() {
        for (path, clean) in [
            ("/v1/kv//app/config", "/v1/kv/app/config"),
            ("//v1/kv", "/v1/kv"),
            ("/v1/kv/app/", "/v1/kv/app/"),
            ("/v1/kv//app//", "/v1/kv/app/"),
            ("/a/./b", "/a/b"),
            ("/a/.", "/a"),
            ("/a/./", "/a/"),
            ("/a/b/..", "/a"),
            ("/a/b/../", "/a/"),
            ("/a/../", "/"),
            ("/..", "/"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("//", "/"),
            ("/a/.../b", "/a/.../b"),
            ("/a/..b/.c", "/a/..b/.c"),
            ("/v1/kv/a%2F%2Fb", "/v1/kv/a%2F%2Fb"),
            ("/v1/kv/%2e%2e/x", "/v1/kv/%2e%2e/x"),
        ] {
            let got = cleaned(path).unwrap_or_else(|| path.to_string());
            assert_eq!(got, clean, "{path}");
        }
        for clean in ["/", "/v1/kv", "/v1/kv/", "/v1/kv/a/b", "/ui/"] {
            assert_eq!(cleaned(clean), None, "{clean}");
        }
        // Not an origin-form path (`OPTIONS *`, CONNECT): left alone.
        assert_eq!(cleaned("*"), None);
        assert_eq!(cleaned(""), None);
    }

    #[test]
    fn reads_get_301_and_writes_308_with_the_query_kept() {
        let request = |method: Method, uri: &str| {
            Request::builder().method(method).uri(uri).body(()).unwrap()
        };
        let response = redirect(&request(Method::GET, "/v1/kv//a?raw&token=t")).unwrap();
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(response.headers()[header::LOCATION], "/v1/kv/a?raw&token=t");
        let response = redirect(&request(Method::HEAD, "/v1/./agent/self")).unwrap();
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        for method in [Method::PUT, Method::POST, Method::DELETE] {
            let response = redirect(&request(method, "/v1/kv/x/../a")).unwrap();
            assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
            assert_eq!(response.headers()[header::LOCATION], "/v1/kv/a");
        }
        assert!(redirect(&request(Method::GET, "/v1/kv/a?x=//")).is_none());
    }
}
