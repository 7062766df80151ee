//! The `spark-admission` binary: installs the crypto provider and hands over to the CLI.

use std::process::ExitCode;

fn main() -> ExitCode {
    // One process-wide rustls provider (ring), so TLS never depends on feature unification.
    let _ = rustls::crypto::ring::default_provider().install_default();
    spark_admission::cli::main()
}
