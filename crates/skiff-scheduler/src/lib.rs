//! The scheduler (kube-scheduler's job): assigns pending pods to nodes with filter and score
//! plugins over an incrementally updated node cache, and binds them through `pods/binding`.

pub mod cache;
pub mod framework;
pub mod plugins;
pub mod resources;
pub mod scheduler;

pub use framework::{
    FilterPlugin, FitError, NodeInfo, NodeView, PodInfo, Profile, SchedulerConfig, ScorePlugin,
};
pub use scheduler::{DEFAULT_SCHEDULER, Handle, Metrics, Options, start, start_with};
