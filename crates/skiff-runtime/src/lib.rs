//! Container runtimes (the `Runtime` trait and its implementations) and the local image store.

pub mod cli;
pub mod conformance;
pub mod images;
pub mod logs;
pub mod overlay;
pub mod process;
pub mod runtime;
pub mod testimages;

pub use runtime::{
    Capabilities, ContainerSpec, ContainerState, ContainerStatus, Runtime, RuntimeError,
};
