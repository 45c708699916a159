//! The node agent: registers a Node, runs the pods bound to it through a `Runtime`, and
//! serves their logs, exec and port-forward to the API server.
//!
//! - [`streams`]: the seam between the agent's pod bookkeeping and its streaming server.
//! - [`server`]: the streaming HTTPS server (logs, exec, port-forward) the API server calls.

pub mod server;
pub mod streams;
