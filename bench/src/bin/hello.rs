//! The ceiling for the lookup benchmark: axum on a current-thread tokio
//! runtime (as the agent runs), answering `GET /hello` with 5 bytes.
//! Usage: `shoal-bench-hello 127.0.0.1:8080`. It stops on its own after an
//! hour, in case the benchmark that started it could not kill it.

use std::time::Duration;

use axum::Router;
use axum::routing::get;

fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".to_string());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        let app = Router::new().route("/hello", get(|| async { "hello" }));
        let serve = axum::serve(listener, app);
        tokio::select! {
            result = serve => result?,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
        anyhow::Ok(())
    })
}
