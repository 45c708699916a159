//! Controllers: idempotent reconcilers driven by watches, talking to the API only through skiff-client.

use skiff_client::Client;

/// Starts every built-in controller; the handles stop them when aborted.
pub fn start_all(_client: Client) -> Vec<tokio::task::JoinHandle<()>> {
    Vec::new()
}
