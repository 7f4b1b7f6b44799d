//! The signals that stop a node gracefully.

/// Waits for the signal that asks a node to stop: SIGINT (Ctrl-C) or SIGTERM (what systemd, `podman
/// stop`, `docker stop` and Kubernetes send). Returns the signal's name for the log line.
pub async fn stop_requested() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}
