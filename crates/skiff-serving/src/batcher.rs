//! Inference threads with dynamic batching: requests are merged along dim 0, run once, and split back.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
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
    /// What it takes of a batch's room: its rows, or the whole batch when it cannot be merged.
    weight: usize,
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

/// The jobs of one model version waiting for an inference thread.
///
/// A thread filling a batch is woken when the batch can be completed or its delay is over, not
/// at every arrival: with one-row requests a wake-up per request would cost two context
/// switches each (the inference thread preempts the request thread that queued the job, takes
/// it, and sleeps again), a tenth of the CPU a request needs.
struct Queue {
    jobs: VecDeque<Job>,
    /// Rows of the queued jobs; a job that cannot be merged counts as a whole batch.
    rows: usize,
    /// Room left in the batch being filled, while a thread waits for it to fill.
    filling: Option<usize>,
    /// Threads waiting for a first job (a notification without a waiter is still a system call).
    idle: usize,
    closed: bool,
}

/// How often an inference thread that found the queue empty yields before it sleeps.
const IDLE_YIELDS: usize = 10;

/// Longest batch delay honoured; a configured delay beyond any sense must not overflow `Instant`.
const MAX_DELAY: Duration = Duration::from_secs(3600);

struct Shared {
    queue: Mutex<Queue>,
    /// Idle inference threads wait here for a first job.
    work: Condvar,
    /// The thread filling a batch waits here.
    filled: Condvar,
    capacity: usize,
    max_batch_size: usize,
    /// The policy in force (batching off when the model cannot take it).
    policy: BatchPolicy,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A thread never panics while holding the lock (no user code runs under it).
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Queue {
    fn pop(&mut self) -> Option<Job> {
        let job = self.jobs.pop_front()?;
        self.rows -= job.weight;
        Some(job)
    }
}

/// The sending side of a model version's inference threads; dropping it lets them finish the queue and exit.
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// The policy in force: the one asked for, or batching off for a model without a batch
    /// dimension on every input and output.
    pub fn policy(&self) -> BatchPolicy {
        self.shared.policy
    }

    /// Whether requests are merged.
    pub fn merges(&self) -> bool {
        self.shared.policy.max_batch_size > 1
    }
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
        let policy = if batchable {
            policy
        } else {
            BatchPolicy {
                max_batch_size: 1,
                max_delay: Duration::ZERO,
            }
        };
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                rows: 0,
                filling: None,
                idle: 0,
                closed: false,
            }),
            work: Condvar::new(),
            filled: Condvar::new(),
            capacity: queue_capacity,
            max_batch_size: policy.max_batch_size.max(1),
            policy,
        });
        let batcher = Batcher {
            shared: shared.clone(),
        };
        for (i, model) in instances.into_iter().enumerate() {
            let worker = Worker {
                shared: shared.clone(),
                model,
                policy,
                metrics: metrics.clone(),
            };
            // On failure the batcher is dropped, which stops the threads already started.
            std::thread::Builder::new()
                .name(format!("infer-{}-{}-{i}", labels.model.0, labels.version.0))
                .spawn(move || worker.run())?;
        }
        Ok(batcher)
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
            weight: rows.map_or(self.shared.max_batch_size, |r| {
                r.min(self.shared.max_batch_size)
            }),
            enqueued: Instant::now(),
            reply,
        };
        let shared = &self.shared;
        let mut q = shared.lock();
        if q.closed {
            return Err(SubmitError::Closed);
        }
        if q.jobs.len() >= shared.capacity {
            return Err(SubmitError::QueueFull(shared.capacity));
        }
        q.rows += job.weight;
        q.jobs.push_back(job);
        let wake = match q.filling {
            // The batch being filled is complete (or this job cannot join it): run it now.
            Some(room) if q.rows >= room => Some(&shared.filled),
            // It waits for more until its delay is over; this job is part of it.
            Some(_) => None,
            None => (q.idle > 0).then_some(&shared.work),
        };
        // Unlocked first: the inference thread preempts this one as soon as it is woken, and
        // would only block on the lock again.
        drop(q);
        if let Some(cv) = wake {
            cv.notify_one();
        }
        Ok(rx)
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
        self.shared.filled.notify_all();
    }
}

struct Worker {
    shared: Arc<Shared>,
    model: Box<dyn Model>,
    policy: BatchPolicy,
    metrics: ModelMetrics,
}

impl Worker {
    fn run(mut self) {
        crate::sched::compute_thread();
        while let Some(jobs) = self.gather() {
            self.execute(jobs);
        }
    }

    /// Takes the next batch: the first job, then more until the row budget or the delay runs
    /// out, or a job that does not fit (it starts the next batch). `None` once the batcher is
    /// dropped and the queue is empty.
    fn gather(&mut self) -> Option<Vec<Job>> {
        let shared = &*self.shared;
        let mut q = shared.lock();
        let mut yields = 0;
        // While another thread fills a batch, what arrives is for that batch.
        while q.filling.is_some() || q.jobs.is_empty() {
            if q.closed && q.jobs.is_empty() {
                return None;
            }
            // On a busy server the next requests are being decoded right now: giving the CPU
            // to the request threads a few times before sleeping lets them queue together, where
            // a wake-up per job would have this thread preempt them and run each job alone.
            if yields < IDLE_YIELDS {
                yields += 1;
                drop(q);
                std::thread::yield_now();
                q = shared.lock();
                continue;
            }
            q.idle += 1;
            q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            q.idle -= 1;
        }
        let first = q.pop()?;
        let max = self.policy.max_batch_size;
        let mut rows = match first.rows {
            Some(r) if max > 1 && r < max => r,
            _ => {
                Self::hand_over(shared, q);
                return Some(vec![first]);
            }
        };
        let deadline = first.enqueued + self.policy.max_delay.min(MAX_DELAY);
        let mut jobs = vec![first];
        loop {
            while let Some(next) = q.jobs.front() {
                match next.rows {
                    Some(r) if rows + r <= max => {
                        rows += r;
                        jobs.extend(q.pop());
                    }
                    _ => break,
                }
            }
            let now = Instant::now();
            if rows >= max || !q.jobs.is_empty() || q.closed || now >= deadline {
                break;
            }
            q.filling = Some(max - rows);
            q = shared
                .filled
                .wait_timeout(q, deadline - now)
                .map_or_else(|e| e.into_inner().0, |(q, _)| q);
            q.filling = None;
        }
        Self::hand_over(shared, q);
        Some(jobs)
    }

    /// Unlocks the queue; jobs left behind start the next batch on an idle thread, if any.
    /// Once the batcher is dropped every idle thread is woken: those that went back to sleep
    /// while this one filled its batch would otherwise wait forever, holding their models.
    fn hand_over(shared: &Shared, q: MutexGuard<'_, Queue>) {
        let (closed, wake) = (q.closed, !q.jobs.is_empty() && q.idle > 0);
        drop(q);
        if closed {
            shared.work.notify_all();
        } else if wake {
            shared.work.notify_one();
        }
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
        let waited = started.saturating_duration_since(enqueued);
        self.metrics.queue_seconds.observe(waited.as_secs_f64());
        self.metrics.compute_seconds.observe(compute.as_secs_f64());
        self.metrics.totals.queue.add(waited);
        self.metrics.totals.compute.add(compute);
    }

    fn run_single(&mut self, job: Job) {
        let Job {
            inputs,
            outputs,
            rows,
            enqueued,
            reply,
            ..
        } = job;
        let started = Instant::now();
        let result = self.model.infer(inputs, &outputs);
        let compute = started.elapsed();
        self.metrics.batch_size.observe(rows.unwrap_or(1) as f64);
        self.metrics.totals.executed(rows.unwrap_or(1));
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
        self.metrics.totals.executed(total);
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

    /// A batcher over `instances` with room for `capacity` queued jobs.
    fn start(instances: Vec<Box<dyn Model>>, policy: BatchPolicy, capacity: usize) -> Batcher {
        let labels = ModelLabels::new("m", "1");
        Batcher::start(
            instances,
            policy,
            true,
            capacity,
            Metrics::new().for_model(&labels),
            &labels,
        )
        .unwrap()
    }

    fn batcher(policy: BatchPolicy, seen: Arc<Mutex<Vec<usize>>>) -> Batcher {
        start(vec![doubler(seen)], policy, 1024)
    }

    /// The reply to a submitted job, failing the test if none comes within 10 s.
    async fn answer(rx: oneshot::Receiver<Reply>, why: &str) -> Vec<Tensor> {
        tokio::time::timeout(Duration::from_secs(10), rx)
            .await
            .expect(why)
            .unwrap()
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

    fn row(v: f32) -> Vec<Tensor> {
        vec![Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![v, v])).unwrap()]
    }

    #[tokio::test]
    async fn a_full_batch_runs_without_waiting_out_the_delay() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = batcher(
            BatchPolicy {
                max_batch_size: 4,
                max_delay: Duration::from_secs(30),
            },
            seen.clone(),
        );
        let mut replies = vec![b.submit(row(0.0), vec![]).unwrap()];
        // The inference thread takes the first row and waits for the batch to fill.
        tokio::time::sleep(Duration::from_millis(100)).await;
        replies.extend((1..4).map(|i| b.submit(row(i as f32), vec![]).unwrap()));
        for (i, rx) in replies.into_iter().enumerate() {
            let out = answer(rx, "the batch waited for its delay although it was full").await;
            assert_eq!(out[0].data, TensorData::Fp32(vec![2.0 * i as f32; 2]));
        }
        assert_eq!(*seen.lock().unwrap(), vec![4]);
    }

    #[tokio::test]
    async fn dropping_the_batcher_finishes_what_is_queued() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = batcher(
            BatchPolicy {
                max_batch_size: 8,
                max_delay: Duration::from_secs(30),
            },
            seen.clone(),
        );
        let replies: Vec<_> = (0..3)
            .map(|i| b.submit(row(i as f32), vec![]).unwrap())
            .collect();
        drop(b);
        for rx in replies {
            answer(rx, "a queued job was left waiting").await;
        }
        assert_eq!(seen.lock().unwrap().iter().sum::<usize>(), 3);
    }

    #[tokio::test]
    async fn every_instance_exits_after_the_batcher_is_dropped() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let b = start(
            vec![doubler(seen.clone()), doubler(seen.clone())],
            BatchPolicy {
                max_batch_size: 8,
                max_delay: Duration::from_secs(30),
            },
            64,
        );
        // One thread fills a batch and waits out its delay; the other sleeps meanwhile.
        let first = b.submit(row(1.0), vec![]).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let second = b.submit(row(2.0), vec![]).unwrap();
        drop(b);
        for rx in [first, second] {
            answer(rx, "a queued job was left waiting").await;
        }
        // Each instance holds a clone of `seen` until its thread ends.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Arc::strong_count(&seen) > 1 {
            assert!(
                Instant::now() < deadline,
                "{} inference threads still hold their model",
                Arc::strong_count(&seen) - 1
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn full_queue_is_refused_not_blocked() {
        // No inference thread: nothing leaves the queue.
        let b = start(
            vec![],
            BatchPolicy {
                max_batch_size: 4,
                max_delay: Duration::ZERO,
            },
            1,
        );
        assert!(b.submit(row(1.0), vec![]).is_ok());
        assert!(matches!(
            b.submit(row(1.0), vec![]),
            Err(SubmitError::QueueFull(1))
        ));
    }
}
