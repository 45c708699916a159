//! Inference threads with dynamic batching: requests are merged along dim 0, run once, and split back.

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::backend::{BackendError, Model};
use crate::metrics::{ModelLabels, ModelMetrics};
use crate::tensor::{Tensor, concat_rows, split_rows};

/// How requests of one model version are grouped.
#[derive(Debug, Clone, Copy)]
pub struct BatchPolicy {
    /// Most rows in one execution; 0 or 1 disables batching.
    pub max_batch_size: usize,
    /// How long the first request of a batch waits for company; zero means "take what is queued".
    pub max_delay: Duration,
}

/// What a request gets back.
pub type Reply = Result<Vec<Tensor>, BackendError>;

/// Input names, datatypes and trailing dimensions: requests with equal keys can be merged.
type GroupKey = Vec<(String, &'static str, Vec<i64>)>;

struct Job {
    inputs: Vec<Tensor>,
    outputs: Vec<String>,
    /// Rows along dim 0 when all inputs agree; `None` means the job cannot be merged.
    rows: Option<usize>,
    enqueued: Instant,
    reply: oneshot::Sender<Reply>,
}

/// Why a job could not be queued.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the inference queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
    #[error("the model is being unloaded")]
    Closed,
}

/// The sending side of a model version's inference threads; dropping it lets them finish the queue and exit.
pub struct Batcher {
    tx: SyncSender<Job>,
    capacity: usize,
}

impl Batcher {
    /// Starts one inference thread per model instance, all sharing one queue.
    pub fn start(
        instances: Vec<Box<dyn Model>>,
        policy: BatchPolicy,
        batchable: bool,
        queue_capacity: usize,
        metrics: ModelMetrics,
        labels: &ModelLabels,
    ) -> std::io::Result<Batcher> {
        let (tx, rx) = std::sync::mpsc::sync_channel(queue_capacity);
        let rx = Arc::new(Mutex::new(rx));
        let policy = if batchable {
            policy
        } else {
            BatchPolicy {
                max_batch_size: 1,
                max_delay: Duration::ZERO,
            }
        };
        for (i, model) in instances.into_iter().enumerate() {
            let worker = Worker {
                rx: rx.clone(),
                model,
                policy,
                metrics: metrics.clone(),
                carry: None,
            };
            std::thread::Builder::new()
                .name(format!("infer-{}-{}-{i}", labels.model, labels.version))
                .spawn(move || worker.run())?;
        }
        Ok(Batcher {
            tx,
            capacity: queue_capacity,
        })
    }

    /// Queues a request whose inputs were already checked against the signature.
    pub fn submit(
        &self,
        inputs: Vec<Tensor>,
        outputs: Vec<String>,
    ) -> Result<oneshot::Receiver<Reply>, SubmitError> {
        let (reply, rx) = oneshot::channel();
        let first = inputs.first().map(Tensor::rows);
        let rows = match first {
            Some(r) if inputs.iter().all(|t| !t.shape.is_empty() && t.rows() == r) => Some(r),
            _ => None,
        };
        let job = Job {
            inputs,
            outputs,
            rows,
            enqueued: Instant::now(),
            reply,
        };
        match self.tx.try_send(job) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull(self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Closed),
        }
    }
}

struct Worker {
    rx: Arc<Mutex<Receiver<Job>>>,
    model: Box<dyn Model>,
    policy: BatchPolicy,
    metrics: ModelMetrics,
    /// A job taken from the queue that did not fit the previous batch.
    carry: Option<Job>,
}

impl Worker {
    fn run(mut self) {
        crate::sched::compute_thread();
        while let Some(jobs) = self.gather() {
            self.execute(jobs);
        }
    }

    /// Takes the next batch: the first job, then more until the row budget or the delay runs out.
    fn gather(&mut self) -> Option<Vec<Job>> {
        let Ok(rx) = self.rx.lock() else {
            return None;
        };
        let first = match self.carry.take() {
            Some(j) => j,
            None => rx.recv().ok()?,
        };
        let max = self.policy.max_batch_size;
        let mut rows = match first.rows {
            Some(r) if max > 1 && r < max => r,
            _ => return Some(vec![first]),
        };
        let deadline = first.enqueued + self.policy.max_delay;
        let mut jobs = vec![first];
        while rows < max {
            let now = Instant::now();
            let next = if now >= deadline {
                rx.try_recv().ok()
            } else {
                rx.recv_timeout(deadline - now).ok()
            };
            let Some(next) = next else { break };
            match next.rows {
                Some(r) if rows + r <= max => {
                    rows += r;
                    jobs.push(next);
                }
                _ => {
                    self.carry = Some(next);
                    break;
                }
            }
        }
        Some(jobs)
    }

    fn execute(&mut self, jobs: Vec<Job>) {
        // Jobs merge only when their inputs agree on names, datatypes and trailing dimensions.
        let mut groups: BTreeMap<GroupKey, Vec<Job>> = BTreeMap::new();
        for job in jobs {
            let mut key: Vec<_> = job
                .inputs
                .iter()
                .map(|t| {
                    (
                        t.name.clone(),
                        t.datatype().as_str(),
                        t.shape.get(1..).unwrap_or(&[]).to_vec(),
                    )
                })
                .collect();
            key.sort();
            groups.entry(key).or_default().push(job);
        }
        for (_, group) in groups {
            if group.len() == 1 {
                for job in group {
                    self.run_single(job);
                }
            } else {
                self.run_merged(group);
            }
        }
    }

    fn observe(&self, enqueued: Instant, started: Instant, compute: Duration) {
        self.metrics
            .queue_seconds
            .observe(started.saturating_duration_since(enqueued).as_secs_f64());
        self.metrics.compute_seconds.observe(compute.as_secs_f64());
    }

    fn run_single(&mut self, job: Job) {
        let Job {
            inputs,
            outputs,
            rows,
            enqueued,
            reply,
        } = job;
        let started = Instant::now();
        let result = self.model.infer(inputs, &outputs);
        let compute = started.elapsed();
        self.metrics.batch_size.observe(rows.unwrap_or(1) as f64);
        self.observe(enqueued, started, compute);
        let _ = reply.send(result);
    }

    fn run_merged(&mut self, jobs: Vec<Job>) {
        let started = Instant::now();
        let rows: Vec<usize> = jobs.iter().map(|j| j.rows.unwrap_or(1)).collect();
        let total: usize = rows.iter().sum();
        let mut merged = Vec::new();
        for t in &jobs[0].inputs {
            let parts: Vec<&Tensor> = jobs
                .iter()
                .filter_map(|j| j.inputs.iter().find(|x| x.name == t.name))
                .collect();
            match concat_rows(&parts) {
                Ok(m) => merged.push(m),
                Err(_) => return jobs.into_iter().for_each(|j| self.run_single(j)),
            }
        }
        let result = self.model.infer(merged, &[]);
        let compute = started.elapsed();
        let outputs = match result {
            Ok(o) => o,
            // A failed batch is retried one request at a time so a bad request fails alone.
            Err(_) => return jobs.into_iter().for_each(|j| self.run_single(j)),
        };
        let mut split: Vec<Vec<Tensor>> = vec![Vec::new(); jobs.len()];
        for out in &outputs {
            match split_rows(out, &rows) {
                Ok(pieces) => pieces
                    .into_iter()
                    .zip(split.iter_mut())
                    .for_each(|(p, s)| s.push(p)),
                // The model does not keep the batch dimension for this output: run requests alone.
                Err(_) => return jobs.into_iter().for_each(|j| self.run_single(j)),
            }
        }
        self.metrics.batch_size.observe(total as f64);
        for (job, mut produced) in jobs.into_iter().zip(split) {
            self.observe(job.enqueued, started, compute);
            let reply = if job.outputs.is_empty() {
                produced
            } else {
                job.outputs
                    .iter()
                    .filter_map(|name| {
                        let i = produced.iter().position(|t| &t.name == name)?;
                        Some(produced.swap_remove(i))
                    })
                    .collect()
            };
            let _ = job.reply.send(Ok(reply));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Signature, TensorSpec};
    use crate::metrics::Metrics;
    use crate::tensor::{DataType, TensorData};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Doubles `x` and records the batch sizes it saw.
    struct Doubler {
        sig: Signature,
        seen: Arc<Mutex<Vec<usize>>>,
    }

    impl Model for Doubler {
        fn signature(&self) -> &Signature {
            &self.sig
        }
        fn infer(&mut self, inputs: Vec<Tensor>, _outputs: &[String]) -> Reply {
            let x = &inputs[0];
            self.seen.lock().unwrap().push(x.rows());
            let TensorData::Fp32(v) = &x.data else {
                return Err(BackendError::Run("fp32 only".into()));
            };
            Ok(vec![Tensor {
                name: "y".into(),
                shape: x.shape.clone(),
                data: TensorData::Fp32(v.iter().map(|a| a * 2.0).collect()),
            }])
        }
    }

    fn doubler(seen: Arc<Mutex<Vec<usize>>>) -> Box<dyn Model> {
        let spec = |n: &str| TensorSpec {
            name: n.into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        };
        Box::new(Doubler {
            sig: Signature {
                inputs: vec![spec("x")],
                outputs: vec![spec("y")],
            },
            seen,
        })
    }

    fn batcher(policy: BatchPolicy, seen: Arc<Mutex<Vec<usize>>>) -> Batcher {
        let labels = ModelLabels {
            model: "m".into(),
            version: "1".into(),
        };
        Batcher::start(
            vec![doubler(seen)],
            policy,
            true,
            1024,
            Metrics::new().for_model(&labels),
            &labels,
        )
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_mixed_batches_get_their_own_rows() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = Arc::new(batcher(
            BatchPolicy {
                max_batch_size: 8,
                max_delay: Duration::from_millis(20),
            },
            seen.clone(),
        ));
        let counter = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..200usize {
            let b = b.clone();
            let counter = counter.clone();
            tasks.push(tokio::spawn(async move {
                let rows = 1 + i % 5;
                let x: Vec<f32> = (0..rows * 2).map(|k| (i * 100 + k) as f32).collect();
                let t =
                    Tensor::new("x", vec![rows as i64, 2], TensorData::Fp32(x.clone())).unwrap();
                let out = b.submit(vec![t], vec![]).unwrap().await.unwrap().unwrap();
                assert_eq!(out[0].shape, vec![rows as i64, 2]);
                let want: Vec<f32> = x.iter().map(|a| a * 2.0).collect();
                assert_eq!(out[0].data, TensorData::Fp32(want));
                counter.fetch_add(1, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 200);
        let seen = seen.lock().unwrap();
        assert!(
            seen.iter().all(|&r| r <= 8),
            "a batch exceeded the limit: {seen:?}"
        );
        assert!(
            seen.iter().any(|&r| r > 5),
            "no request was ever merged: {seen:?}"
        );
        assert_eq!(
            seen.iter().sum::<usize>(),
            (0..200).map(|i| 1 + i % 5).sum::<usize>()
        );
    }

    #[tokio::test]
    async fn oversized_request_runs_alone() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = batcher(
            BatchPolicy {
                max_batch_size: 4,
                max_delay: Duration::ZERO,
            },
            seen.clone(),
        );
        let t = Tensor::new("x", vec![10, 2], TensorData::Fp32(vec![1.0; 20])).unwrap();
        let out = b.submit(vec![t], vec![]).unwrap().await.unwrap().unwrap();
        assert_eq!(out[0].shape, vec![10, 2]);
        assert_eq!(*seen.lock().unwrap(), vec![10]);
    }

    #[tokio::test]
    async fn full_queue_is_refused_not_blocked() {
        let (tx, _rx) = std::sync::mpsc::sync_channel(1);
        let b = Batcher { tx, capacity: 1 };
        let t = || Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0; 2])).unwrap();
        assert!(b.submit(vec![t()], vec![]).is_ok());
        assert!(matches!(
            b.submit(vec![t()], vec![]),
            Err(SubmitError::QueueFull(1))
        ));
    }
}
