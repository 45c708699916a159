//! Controllers: idempotent reconcilers driven by watches, talking to the API only through skiff-client.

use skiff_client::Client;

pub mod deployment;
pub mod replicaset;
mod workload;

/// Starts every built-in controller; the handles stop them when aborted.
pub fn start_all(client: Client) -> Vec<tokio::task::JoinHandle<()>> {
    vec![
        replicaset::start(client.clone()),
        deployment::start(client.clone()),
    ]
}
