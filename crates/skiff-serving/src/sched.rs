//! Scheduling classes of the server's threads: request handling yields the CPU to inference.
//!
//! When inference saturates the CPUs, every readable socket wakes an async worker, and under the
//! kernel's default policy that wake-up preempts the inference thread at once: two context
//! switches and a cold cache for the engine per request, a quarter of the CPU on a 2-core
//! machine. The async workers therefore run as `SCHED_BATCH`, which the kernel does not let
//! preempt on wake-up; they get their full share at the next scheduling tick instead and then
//! handle every request that arrived meanwhile in one go. Idle CPUs still run them at once, so
//! latency under light load is unchanged. Threads that run models (inference threads and the
//! engine's own pools, which inherit the policy of the thread that creates them) stay in the
//! normal class.

/// A thread's scheduling class as far as the server cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// The kernel's default (`SCHED_OTHER`): preempts on wake-up.
    Normal,
    /// `SCHED_BATCH`: same CPU share, no wake-up preemption.
    Batch,
    /// Anything else (real-time or idle classes set by an operator): left alone.
    Other,
}

#[cfg(target_os = "linux")]
mod imp {
    use super::Class;

    pub fn current() -> Class {
        // SAFETY: sched_getscheduler only reads the calling thread's policy (pid 0).
        match unsafe { libc::sched_getscheduler(0) } {
            libc::SCHED_OTHER => Class::Normal,
            libc::SCHED_BATCH => Class::Batch,
            _ => Class::Other,
        }
    }

    pub fn set(class: Class) -> std::io::Result<()> {
        let policy = match class {
            Class::Normal => libc::SCHED_OTHER,
            Class::Batch => libc::SCHED_BATCH,
            Class::Other => return Ok(()),
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        if unsafe { libc::sched_setscheduler(0, policy, &param) } == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::Class;

    pub fn current() -> Class {
        Class::Other
    }

    pub fn set(_: Class) -> std::io::Result<()> {
        Ok(())
    }
}

/// The calling thread's class.
pub fn current() -> Class {
    imp::current()
}

/// Moves the calling thread to `class`; an operator's real-time or idle class is kept. Failure
/// (a seccomp filter, say) only costs throughput, so it is logged, not returned.
fn switch_to(class: Class) {
    if current() == Class::Other {
        return;
    }
    if let Err(e) = imp::set(class) {
        tracing::debug!(error = %e, ?class, "cannot change the thread's scheduling class");
    }
}

/// For threads that handle requests (the async runtime's threads).
pub fn request_thread() {
    switch_to(Class::Batch);
}

/// For threads that run models.
pub fn compute_thread() {
    switch_to(Class::Normal);
}

/// Runs `f` in the normal class and restores the caller's class afterwards: engines start their
/// thread pools while a model loads, and those threads inherit the class of the loading thread.
pub fn with_compute_class<T>(f: impl FnOnce() -> T) -> T {
    let before = current();
    compute_thread();
    let out = f();
    if before == Class::Batch {
        switch_to(Class::Batch);
    }
    out
}

/// The async runtime of `skiff serve`: one worker per CPU of the cgroup quota (a 2-CPU pod does
/// not start 64 threads), all of them request threads.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(crate::backend::cpu_quota())
        .on_thread_start(request_thread)
        .enable_all()
        .build()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn runtime_threads_are_batch_and_compute_scopes_are_normal() {
        let rt = runtime().unwrap();
        let (worker, blocking, inside, after) = rt.block_on(async {
            let worker = tokio::spawn(async { current() }).await.unwrap();
            let (blocking, inside, after) = tokio::task::spawn_blocking(|| {
                let blocking = current();
                let inside = with_compute_class(|| {
                    // What an engine's pool thread started during a load inherits.
                    std::thread::spawn(current).join().unwrap()
                });
                (blocking, inside, current())
            })
            .await
            .unwrap();
            (worker, blocking, inside, after)
        });
        assert_eq!(worker, Class::Batch);
        assert_eq!(blocking, Class::Batch);
        assert_eq!(inside, Class::Normal);
        assert_eq!(
            after,
            Class::Batch,
            "the loading thread gets its class back"
        );
    }

    #[test]
    fn compute_thread_leaves_batch() {
        std::thread::spawn(|| {
            request_thread();
            assert_eq!(current(), Class::Batch);
            compute_thread();
            assert_eq!(current(), Class::Normal);
        })
        .join()
        .unwrap();
    }
}
