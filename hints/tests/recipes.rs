//! The recipes of docs/adopting.md, tested: a class for every thread of a
//! tokio runtime, of a rayon pool and of a plain std thread, and a class
//! that follows one async task whichever worker polls it.

use scx_hints::{latency_class, set_latency_class, HintExt, LatencyClass};
use std::sync::{Arc, Mutex};

/// tokio: `on_thread_start` runs on every worker (and blocking) thread
/// before it runs any task.
#[test]
fn tokio_runtime_threads_take_a_class() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| set_latency_class(LatencyClass::Batch))
        .build()
        .unwrap();
    let seen = rt.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|_| tokio::spawn(async { latency_class() }))
            .collect();
        let mut seen = Vec::new();
        for t in tasks {
            seen.push(t.await.unwrap());
        }
        seen.push(tokio::task::spawn_blocking(latency_class).await.unwrap());
        seen
    });
    assert_eq!(seen, [LatencyClass::Batch; 9]);
}

/// One task in its own class on a runtime of another: the class is set for
/// each poll, on whichever worker polls it, across awaits.
#[test]
fn tokio_task_class_follows_the_task_across_awaits() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .on_thread_start(|| set_latency_class(LatencyClass::Batch))
        .build()
        .unwrap();
    let (inside, outside) = rt.block_on(async {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let interactive = tokio::spawn(
            async move {
                for _ in 0..5 {
                    record.lock().unwrap().push(latency_class());
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                }
            }
            .with_latency_class(LatencyClass::Interactive),
        );
        interactive.await.unwrap();
        let outside = tokio::spawn(async { latency_class() }).await.unwrap();
        let inside = seen.lock().unwrap().clone();
        (inside, outside)
    });
    assert_eq!(inside, [LatencyClass::Interactive; 5]);
    assert_eq!(
        outside,
        LatencyClass::Batch,
        "workers get their own class back"
    );
}

/// rayon: `start_handler` runs on every pool thread when it starts.
#[test]
fn rayon_pool_threads_take_a_class() {
    use rayon::prelude::*;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .start_handler(|_| set_latency_class(LatencyClass::Background))
        .build()
        .unwrap();
    let seen: Vec<LatencyClass> =
        pool.install(|| (0..64).into_par_iter().map(|_| latency_class()).collect());
    assert!(
        seen.iter().all(|c| *c == LatencyClass::Background),
        "{seen:?}"
    );
}

/// std: a thread starts in the normal class; set the class first thing in
/// its closure.
#[test]
fn std_thread_sets_its_class_first() {
    let parent = std::thread::spawn(|| {
        set_latency_class(LatencyClass::Interactive);
        std::thread::spawn(|| {
            let inherited = latency_class();
            set_latency_class(LatencyClass::Batch);
            (inherited, latency_class())
        })
        .join()
        .unwrap()
    })
    .join()
    .unwrap();
    assert_eq!(parent, (LatencyClass::Normal, LatencyClass::Batch));
}
