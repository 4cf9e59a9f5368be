//! What a web page open in a browser on the host cannot do with the API.
//!
//! A page can make the browser send requests to any address, the agent's
//! included, and the browser adds nothing the agent could use to say no
//! unless the agent looks at the headers that tell where a request came
//! from. The `Host` check (`guard`) stops DNS rebinding, not this: a page
//! that addresses `http://127.0.0.1:8500` sends a loopback `Host`. So, on
//! every route ([`check_origin`], from `guard::authorize` and before the
//! response cache in `api::front`):
//!
//! - **`Origin`**. Browsers send it on every `POST`, `PUT` and `DELETE`
//!   and on every CORS request (`null` when the page hides its origin).
//!   One that is not the agent's own — `http://` or `https://` and the
//!   request's `Host`, as on the embedded UI's pages — is refused, reads
//!   included. Consul's UI (same origin) and every stock client (no
//!   browser) send none or their own.
//! - **`Sec-Fetch-Site`** (Fetch Metadata, which browsers send to
//!   loopback addresses and HTTPS sites): anything but `same-origin` or
//!   `none` (typed in the address bar) is refused, which also covers what
//!   carries no `Origin`: `<img>`, `<script>`, links and `GET` forms. One
//!   exception: a top-level navigation (`Sec-Fetch-Mode: navigate`,
//!   `Sec-Fetch-Dest: document`) to an open route, so that a link to the
//!   UI opens it; its files hold no data, and everything it then fetches
//!   is same-origin.
//!
//! And for browsers that send neither (old ones, or any browser talking to
//! an `http_addr` that is not loopback), [`check_body_type`]: a request
//! body a page can send cross-site without the browser asking the agent
//! first (a CORS "simple" request) is refused where it matters. Which
//! requests can be simple: only `GET`, `HEAD` and `POST`, with a body of
//! type `text/plain`, `application/x-www-form-urlencoded` or
//! `multipart/form-data` (or none). A `PUT` or `DELETE` from another
//! origin is always preflighted (an `OPTIONS` request first), which the
//! agent never approves (it sends no `Access-Control-Allow-*` header), so
//! the browser never sends it: those methods keep taking any content type,
//! which keeps `curl -X PUT -d '{...}'` (a form type) and raw KV values
//! working. `GET` writes do not exist (Consul's legacy `GET` forms answer
//! 405). That leaves `POST`: every `POST` route takes JSON (the keyring,
//! template dry runs), so a `POST` with one of the three simple types is
//! refused with a 415. A `POST` without a `Content-Type` is served (stock
//! clients such as python-consul send none): a browser always adds an
//! `Origin` to a `POST`, which the first rule judges.
//!
//! A refusal is a JSON error that says why, and the handler never runs.

use axum::http::{HeaderMap, Method, Request, StatusCode, header};

use super::ApiError;
use super::guard::Access;

/// Body types a page can send cross-site without a preflight.
pub const SIMPLE_BODY_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// Refuses a request a browser sent for a page of another origin (see the
/// module docs). `access` is what the matched route needs: only
/// [`Access::Open`] routes accept a top-level navigation from elsewhere.
pub fn check_origin<B>(access: Access, request: &Request<B>) -> Result<(), ApiError> {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        let host = request
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| headers.get(header::HOST)?.to_str().ok());
        if !host.is_some_and(|host| same_origin(origin, host)) {
            let own = host.map_or_else(
                || "none: the request has no Host".to_string(),
                |host| format!("`http://{host}`"),
            );
            return Err(forbidden(format!(
                "Origin `{origin}` is not this agent's own ({own}): a web page from another origin may not use the API; the agent's UI, the CLI and Consul clients send no foreign Origin"
            )));
        }
    }
    let site = fetch_metadata(headers, "sec-fetch-site");
    match site {
        None | Some("same-origin" | "none") => Ok(()),
        Some(_) if access == Access::Open && is_top_level_navigation(request) => Ok(()),
        Some(site) => Err(forbidden(format!(
            "Sec-Fetch-Site: {site}: the browser says a page of another origin sent this request; the API serves only its own UI (same-origin) and clients outside a browser"
        ))),
    }
}

/// Refuses a `POST` body of a type a page can send cross-site without a
/// preflight (see the module docs for why only `POST`).
pub fn check_body_type<B>(request: &Request<B>) -> Result<(), ApiError> {
    if request.method() != Method::POST {
        return Ok(());
    }
    let Some(value) = request.headers().get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if SIMPLE_BODY_TYPES.contains(&essence.as_str()) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "Content-Type {essence} is refused on POST: a web page can send it to any site without the browser asking first; send the JSON body as application/json (curl: -H 'Content-Type: application/json')"
            ),
        ));
    }
    Ok(())
}

/// Whether `origin` (`scheme://host[:port]`) names `host` (a `Host`
/// header), the default port of its scheme written or not.
fn same_origin(origin: &str, host: &str) -> bool {
    let (authority, default_port) = if let Some(rest) = origin.strip_prefix("http://") {
        (rest, ":80")
    } else if let Some(rest) = origin.strip_prefix("https://") {
        (rest, ":443")
    } else {
        return false;
    };
    let trim = |text: &str| -> String {
        let text = text.to_ascii_lowercase();
        match text.strip_suffix(default_port) {
            Some(bare) => bare.to_string(),
            None => text,
        }
    };
    !authority.is_empty() && trim(authority) == trim(host)
}

fn fetch_metadata<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap_or("(not text)").trim())
}

/// A link followed or a URL opened in a tab: the page that started it
/// can't read the answer.
fn is_top_level_navigation<B>(request: &Request<B>) -> bool {
    let headers = request.headers();
    matches!(*request.method(), Method::GET | Method::HEAD)
        && fetch_metadata(headers, "sec-fetch-mode") == Some("navigate")
        && fetch_metadata(headers, "sec-fetch-dest") == Some("document")
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn request(method: Method, host: &str, headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::builder()
            .method(method)
            .uri("/v1/kv/a")
            .header("Host", host);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_the_agents_own_origin_passes() {
        let check = |host: &str, origin: &str| {
            check_origin(
                Access::Read,
                &request(Method::GET, host, &[("Origin", origin)]),
            )
        };
        assert!(check("127.0.0.1:8500", "http://127.0.0.1:8500").is_ok());
        assert!(check("LocalHost:8500", "http://localhost:8500").is_ok());
        assert!(check("localhost", "http://localhost:80").is_ok());
        assert!(check("localhost:80", "http://localhost").is_ok());
        assert!(check("localhost", "https://localhost").is_ok());
        for origin in [
            "http://evil.example",
            "null",
            "http://127.0.0.1:8080",
            "http://127.0.0.1",
            "http://127.0.0.1:8500.evil.example",
            "ftp://127.0.0.1:8500",
            "http://",
            "",
        ] {
            let error = check("127.0.0.1:8500", origin).unwrap_err();
            assert_eq!(error.status, StatusCode::FORBIDDEN, "{origin}");
            assert!(error.message.contains("Origin"), "{}", error.message);
        }
        // Without Host, no Origin can be ours.
        let bare = Request::builder()
            .uri("/v1/kv/a")
            .header("Origin", "http://localhost")
            .body(Body::empty())
            .unwrap();
        assert!(check_origin(Access::Read, &bare).is_err());
    }

    #[test]
    fn fetch_metadata_from_elsewhere_is_refused_but_links_to_open_routes() {
        let host = "127.0.0.1:8500";
        let check = |access, method, headers: &[(&str, &str)]| {
            check_origin(access, &request(method, host, headers)).is_ok()
        };
        for site in ["same-origin", "none"] {
            assert!(check(
                Access::Write,
                Method::PUT,
                &[("Sec-Fetch-Site", site)]
            ));
        }
        for site in ["cross-site", "same-site", "bogus"] {
            assert!(!check(
                Access::Read,
                Method::GET,
                &[("Sec-Fetch-Site", site)]
            ));
        }
        let link = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "document"),
        ];
        assert!(check(Access::Open, Method::GET, &link));
        assert!(!check(Access::Read, Method::GET, &link));
        assert!(!check(Access::Open, Method::POST, &link));
        let framed = [
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "navigate"),
            ("Sec-Fetch-Dest", "iframe"),
        ];
        assert!(!check(Access::Open, Method::GET, &framed));
        // No browser header at all: a local tool.
        assert!(check(Access::Write, Method::PUT, &[]));
    }

    #[test]
    fn simple_post_bodies_are_refused_other_methods_and_types_pass() {
        let check = |method, content_type: Option<&str>| {
            let headers: Vec<(&str, &str)> = content_type
                .map(|t| ("Content-Type", t))
                .into_iter()
                .collect();
            check_body_type(&request(method, "localhost", &headers))
        };
        for simple in [
            "text/plain",
            "Text/Plain; charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
        ] {
            let error = check(Method::POST, Some(simple)).unwrap_err();
            assert_eq!(error.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
            assert!(
                error.message.contains("application/json"),
                "{}",
                error.message
            );
            assert!(check(Method::PUT, Some(simple)).is_ok(), "{simple}");
            assert!(check(Method::DELETE, Some(simple)).is_ok(), "{simple}");
        }
        assert!(check(Method::POST, Some("application/json")).is_ok());
        assert!(check(Method::POST, None).is_ok());
    }
}
