//! The node agent: registers a Node, runs the pods bound to it through a `Runtime`, and
//! serves their logs, exec and port-forward to the API server.
//!
//! - [`agent`]: [`run`] starts the agent ([`NodeAgent`], [`AgentHandle`]); it adopts what
//!   the runtime already runs and drives one [`worker`] per pod.
//! - [`worker`]: the pod lifecycle state machine; [`probe`], [`backoff`], [`env`],
//!   [`volumes`], [`resources`] are its parts; [`events`] reports, [`node`] heartbeats.
//! - [`streams`]: the seam between the agent's pod bookkeeping and its streaming server.
//! - [`server`]: the streaming HTTPS server (logs, exec, port-forward) the API server calls.

pub mod agent;
pub mod backoff;
pub mod cgroups;
pub mod config;
pub mod env;
pub mod events;
pub mod ids;
pub mod node;
pub mod probe;
pub mod resources;
pub mod server;
pub mod streams;
pub mod volumes;
pub mod worker;

pub use agent::{AgentError, AgentHandle, NodeAgent, run};
pub use config::{AgentConfig, ClusterDns};
