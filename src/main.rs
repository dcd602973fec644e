//! `catalog-bff`: parse arguments, then hand over to the library.

use clap::Parser;

use catalog_bff::config::{Cli, Command};

/// mimalloc returns freed memory to the OS promptly; with glibc malloc and a runtime of a few
/// threads, the memory of a replaced 100k-entity snapshot stayed resident (see
/// `benches/refresh.rs` for both figures).
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match tokio::runtime::Builder::new_multi_thread().enable_all().on_thread_park(catalog_core::on_park).build() {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[expect(
    clippy::print_stdout,
    reason = "the subcommands' output (schema, trusted-documents, import, describe) is stdout; the server logs through tracing"
)]
async fn run() -> std::process::ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Schema => {
            print!("{}", catalog_bff::graphql::sdl());
            std::process::ExitCode::SUCCESS
        }
        Command::TrustedDocuments { dir } => match catalog_bff::graphql::extensions::TrustedDocuments::load(&dir) {
            Ok(t) => {
                println!("{}", t.manifest_json());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("catalog-bff: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Import(args) => match catalog_bff::server::import(args).await {
            Ok(written) => {
                for name in written {
                    println!("wrote ConfigMap {name}");
                }
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("catalog-bff: {e:#}");
                std::process::ExitCode::FAILURE
            }
        },
        Command::Healthcheck { listen, path, timeout } => {
            let timeout =
                std::time::Duration::try_from_secs_f64(if timeout.is_nan() { 3.0 } else { timeout.clamp(0.1, 60.0) })
                    .unwrap_or(std::time::Duration::from_secs(3));
            match tokio::time::timeout(timeout, healthcheck(listen, &path)).await {
                Ok(Ok(())) => std::process::ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("catalog-bff healthcheck: {e:#}");
                    std::process::ExitCode::FAILURE
                }
                Err(_) => {
                    eprintln!("catalog-bff healthcheck: no answer from {listen}{path} within {timeout:?}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) if args.check_config => match args.check() {
            Ok(()) => {
                println!("{:#}", args.summary());
                std::process::ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("catalog-bff: {e:#}");
                std::process::ExitCode::from(2)
            }
        },
        Command::Serve(args) => {
            let _log = catalog_bff::logging::init(args.log_format);
            match catalog_bff::server::serve(*args).await {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("catalog-bff: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

/// `GET path` over plain HTTP/1.1 on this machine; Ok only for a 200. Hand-rolled on a TCP
/// stream because it is all a container HEALTHCHECK needs (no TLS, no redirects, no client
/// set-up), and the slim image has no curl.
async fn healthcheck(mut listen: std::net::SocketAddr, path: &str) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if listen.ip().is_unspecified() {
        listen.set_ip(match listen {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    anyhow::ensure!(
        path.starts_with('/') && !path.contains(char::is_whitespace),
        "--path must be an absolute path such as /healthz"
    );
    let mut stream =
        tokio::net::TcpStream::connect(listen).await.map_err(|e| anyhow::anyhow!("cannot connect to {listen}: {e}"))?;
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: {listen}\r\nConnection: close\r\n\r\n").as_bytes()).await?;
    // The status line is all that matters; read at most a little of the answer.
    let mut head = Vec::new();
    stream.take(4096).read_to_end(&mut head).await?;
    let text = String::from_utf8_lossy(&head);
    let status = text.lines().next().unwrap_or_default();
    anyhow::ensure!(status.split_whitespace().nth(1) == Some("200"), "{listen}{path} answered {status:?}, not 200");
    Ok(())
}
