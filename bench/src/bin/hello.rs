//! The ceiling for the lookup benchmark: axum on a current-thread tokio
//! runtime (as the agent runs), answering each route with a fixed body,
//! the same bytes Shoal answers, so the two differ only in the work done.
//! Usage: `shoal-bench-hello ADDR [ROUTE=BODY_FILE[=CONTENT_TYPE]]...`
//! (without routes: `GET /hello` answers `hello`). It stops on its own
//! after an hour, in case the benchmark that started it could not kill it.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::get;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let mut app = Router::new().route("/hello", get(|| async { "hello" }));
    for spec in args {
        let mut parts = spec.splitn(3, '=');
        let (Some(route), Some(file)) = (parts.next(), parts.next()) else {
            anyhow::bail!("`{spec}` is not ROUTE=BODY_FILE[=CONTENT_TYPE]");
        };
        let content_type = HeaderValue::from_str(parts.next().unwrap_or("application/json"))?;
        let body = Bytes::from(std::fs::read(file).with_context(|| format!("read {file}"))?);
        app = app.route(
            route,
            get(move || {
                let (body, content_type) = (body.clone(), content_type.clone());
                async move {
                    let mut response = Response::new(Body::from(body));
                    response
                        .headers_mut()
                        .insert(header::CONTENT_TYPE, content_type);
                    response
                }
            }),
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let serve = axum::serve(listener, app);
        tokio::select! {
            result = serve => result?,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        anyhow::Ok(())
    })
}
