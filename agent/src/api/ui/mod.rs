//! The operator's web UI at `/ui/`: a few static files (HTML, CSS and
//! JavaScript modules, no build step) compiled into the binary.
//!
//! The files hold no data: their routes are `open`, and every datum the
//! pages show comes from the guarded API, with the token the operator types
//! in (kept in the tab's `sessionStorage`, sent as `X-Consul-Token`). The
//! bytes sit in the binary's read-only data and are touched only when
//! served, so an agent nobody browses keeps its memory.
//!
//! Responses carry a Content-Security-Policy that allows only the agent's
//! own origin (no inline scripts or styles, no frames), `no-cache` with an
//! `ETag` (a browser revalidates and gets a 304 while the binary is the
//! same), and `nosniff`. `/` sends a browser (a `GET` that accepts
//! `text/html`) to `/ui/`; any other client gets the API's 404 as before.
//!
//! - [`services`]: `/v1/internal/ui/services`, the services page's summary.

pub mod services;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            bytes: include_bytes!(concat!("assets/", $name)),
        }
    };
}

const JS_TYPE: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("app.js", JS_TYPE),
    asset!("dom.js", JS_TYPE),
    asset!("api.js", JS_TYPE),
    asset!("members.js", JS_TYPE),
    asset!("services.js", JS_TYPE),
    asset!("kv.js", JS_TYPE),
    asset!("flags.js", JS_TYPE),
    asset!("agent.js", JS_TYPE),
    asset!("favicon.svg", "image/svg+xml"),
];

/// Only the agent's own origin: scripts, styles, images and API calls.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /ui/`: the page.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui`: to `/ui/`, so that relative asset paths resolve.
pub async fn to_index() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/:file`
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

/// `GET /`: a browser goes to the UI; other clients get the API's 404.
pub async fn root(
    state: axum::extract::State<super::ApiState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if method == Method::GET && accepts_html(&headers) {
        return Redirect::to("/ui/").into_response();
    }
    super::not_found(state, method, uri).await.into_response()
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.split(';').next().unwrap_or("").trim() == "text/html")
}

fn serve(name: &str, headers: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|asset| asset.name == name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            format!("the UI has no file `{name}`"),
        )
        .into_response();
    };
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh3::xxh3_64(asset.bytes));
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| tag.trim() == etag || tag.trim() == "*");
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            )],
            asset.bytes,
        )
            .into_response()
    };
    let set = response.headers_mut();
    // `no-cache`: keep it, but ask (a 304 costs a few bytes) before use,
    // so a new binary's UI is never mixed with the old one's.
    set.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(&etag) {
        set.insert(header::ETAG, etag);
    }
    set.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    set.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    set.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(name: &str, if_none_match: Option<&str>) -> Response {
        let mut headers = HeaderMap::new();
        if let Some(tag) = if_none_match {
            headers.insert(header::IF_NONE_MATCH, HeaderValue::from_str(tag).unwrap());
        }
        serve(name, &headers)
    }

    #[test]
    fn every_asset_is_served_with_its_type_and_policy() {
        for asset in ASSETS {
            let response = get(asset.name, None);
            assert_eq!(response.status(), StatusCode::OK, "{}", asset.name);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], asset.content_type);
            assert_eq!(
                headers[header::CONTENT_SECURITY_POLICY],
                CONTENT_SECURITY_POLICY
            );
            assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
            assert!(!asset.bytes.is_empty());
        }
    }

    #[test]
    fn a_matching_etag_gets_304_and_unknown_files_404() {
        let etag = get("app.js", None).headers()[header::ETAG]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(
            get("app.js", Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(get("app.js", Some("\"other\"")).status(), StatusCode::OK);
        assert_eq!(get("../Cargo.toml", None).status(), StatusCode::NOT_FOUND);
        assert_eq!(get("nope.js", None).status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn only_a_browser_asking_for_html_is_redirected() {
        let with = |accept: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_str(accept).unwrap());
            accepts_html(&headers)
        };
        assert!(with("text/html,application/xhtml+xml,*/*;q=0.8"));
        assert!(with("application/json, text/html;q=0.5"));
        assert!(!with("*/*"));
        assert!(!with("application/json"));
        assert!(!accepts_html(&HeaderMap::new()));
    }

    #[test]
    fn no_asset_has_inline_script_or_style() {
        let html = std::str::from_utf8(get_bytes("index.html")).unwrap();
        assert!(!html.contains("<script>"), "inline script in index.html");
        assert!(!html.contains("style="), "inline style in index.html");
        assert!(!html.contains("<style"), "inline style in index.html");
        assert!(!html.contains("http://") && !html.contains("https://"));
    }

    fn get_bytes(name: &str) -> &'static [u8] {
        ASSETS.iter().find(|a| a.name == name).unwrap().bytes
    }
}
