//! `catalogctl`: scripted apply, refresh and rollback against a catalog-bff server.

fn main() -> std::process::ExitCode {
    catalogctl::main()
}
