//! `dadi-p2p-admission`: flags, tracing, start-up and shutdown around the library.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use dadi_p2p_admission::cli::Args;
use dadi_p2p_admission::config::Settings;
use dadi_p2p_admission::secrets::controller::SecretController;
use dadi_p2p_admission::secrets::requests::Requests;
use dadi_p2p_admission::{metrics::Metrics, namespaces::NamespaceCache, server, tls, webhook};
use tokio::sync::watch;

/// Settings could not be used.
const EXIT_CONFIG: u8 = 2;
/// Start-up or serving failed.
const EXIT_RUNTIME: u8 = 1;
/// Time the secret controller gets to finish queued requests after the server has drained.
const CONTROLLER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let settings = match args.settings() {
        Ok(s) => s,
        Err(error) => {
            eprintln!("dadi-p2p-admission: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build();
    match rt
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run(args, settings)))
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "stopped");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

async fn run(args: Args, settings: Settings) -> anyhow::Result<()> {
    for warning in settings.warnings() {
        tracing::warn!(registries = %args.registries, "{warning}");
    }
    let metrics = Metrics::new();
    let cert =
        tls::ReloadingCert::new(args.tls_cert.clone(), args.tls_key.clone(), metrics.clone())
            .context("serving certificate")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let client = kube::Client::try_default()
        .await
        .context("kubernetes client")?;
    let settings = Arc::new(settings);
    let (stop_tx, mut stop_rx) = watch::channel(false);

    let requests = Arc::new(Requests::new());
    let controller = SecretController::new(client.clone(), settings.clone(), metrics.clone());
    // The controller ends when the server has drained and the requests are closed, so copies
    // requested by the last reviews are still made.
    let controller = tokio::spawn(controller.run(requests.clone(), std::future::pending()));
    let namespaces = Arc::new(NamespaceCache::start(client));
    let hook = webhook::Webhook::new(
        settings.clone(),
        namespaces,
        Some(requests.clone()),
        metrics.clone(),
    );
    let app = Arc::new(server::App {
        webhook: hook,
        metrics,
    });
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let bound = listener.local_addr().context("listening address")?;
    tracing::info!(listen = %bound, registries = %args.registries, p2p_port = settings.endpoint.port, "listening");
    server::serve(
        listener,
        Arc::new(Arc::new(cert).server_config()),
        app,
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    )
    .await;
    requests.close();
    if tokio::time::timeout(CONTROLLER_GRACE, controller)
        .await
        .is_err()
    {
        tracing::warn!("secret controller still busy at exit");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler can be installed");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
