//! Every integration test in one binary (one link instead of one per file: most of CI's time
//! was compiling and linking 30 test binaries that each carry the server, sqlx, kube and axum).
//! Each file of `tests/it/` is a module; `support` (`tests/it/support/`) is compiled once: the
//! `TestServer` builder, `eventually`, the HTTP/WebSocket/node clients, the fake Kubernetes API
//! server. Run one file's tests with `cargo test --test it <file>::`, e.g.
//! `cargo test --test it kube_store::` (or `cargo nextest run --test it -E 'test(/^kube_store::/)'`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a test fails loudly: an unwrap that panics is a failed test with its reason"
)]

mod support;

mod architecture;
mod cancel;
mod catalogctl;
mod chaos;
mod consistency;
mod console;
mod contract;
mod db_outage;
mod deploy;
mod edge;
mod fake_kube;
mod fanout;
mod history_paging;
mod hooks;
mod hostile_peers;
mod hot_path;
mod http;
mod kube_auth;
mod kube_store;
mod live;
mod malformed_corpus;
mod old_snapshot_cache;
mod one_truth;
mod pages;
mod perf_paths;
mod properties;
mod replicas;
mod sample_formats;
mod save_loop;
mod schedule;
mod schema_docs;
mod secrets_and_partial;
mod trust_core;
mod trust_errors;
mod trust_http;
mod trust_ws;
mod upstream_fixtures;
mod webhooks;
