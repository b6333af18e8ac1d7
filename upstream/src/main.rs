//! `echo-upstream [ADDR]` (default `127.0.0.1:8090`). Stops on Ctrl-C or SIGTERM (as PID 1 of a
//! container, which gets SIGTERM from `docker compose stop`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_owned());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("echo upstream listening on {}", listener.local_addr()?);
    #[cfg(unix)]
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    echo_upstream::serve(listener, async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
