//! Container runtimes (the `Runtime` trait and its implementations) and the local image store.
//!
//! - [`images`]: content-addressed image store (`docker save` / OCI archive import, ls, rm
//!   with blob GC, rootfs unpacking); [`overlay`]: overlayfs root filesystems over it.
//! - [`runtime`]: the `Runtime` trait and capabilities; [`process`]: the no-isolation
//!   development runtime; [`conformance`]: the suite every runtime passes.
//! - [`oci`]: the runc runtime (overlayfs rootfs, OCI spec, per-container shim, adoption).
//! - [`network`]: the `PodNetwork` trait (a namespace and IP per pod sandbox).
//! - [`logs`]: CRI-format container log files; [`testimages`]: archive builders for tests;
//!   [`cli`]: `skiff images import|ls|rm|build-serve`; [`binimage`]: self-contained images
//!   of a host binary and its shared libraries (the `skiff serve` image).

pub mod binimage;
pub mod cli;
pub mod conformance;
pub mod images;
pub mod logs;
pub mod network;
pub mod oci;
pub mod overlay;
pub mod process;
pub mod runtime;
pub mod testimages;

pub use oci::{OciConfig, OciRuntime, shim_main};
pub use runtime::{
    BoxedReader, BoxedWriter, Capabilities, ContainerSpec, ContainerState, ContainerStatus,
    ExecProcess, ExecSpec, Mount, Resources, Runtime, RuntimeError,
};
