//! `catalog-bff`: parse arguments, then hand over to the library.

use clap::Parser;

use catalog_bff::config::{Cli, Command};

#[tokio::main]
async fn main() -> std::process::ExitCode {
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
            catalog_bff::server::init_logging(args.log_format);
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
