//! Deadlines, restarts, crash loops, limits, draining and pools, through real workers.

use std::time::{Duration, Instant};

use tfsandbox::{
    Config, Error, Limits, Pool, Predict, RestartPolicy, RuntimeKind, Sandbox, Tensor,
};
use tfsandbox_checks::{config, each_runtime, fixture, kill_worker};

/// A run of the busy loop that takes about a second (about 7 us per iteration).
const ABOUT_A_SECOND: i64 = 150_000;

/// Short waits, so a stuck or dead worker is replaced quickly.
fn quick(runtime: RuntimeKind) -> Config {
    Config {
        stuck_grace: Duration::from_secs(1),
        restart: RestartPolicy {
            initial_backoff: Duration::from_millis(20),
            ..RestartPolicy::default()
        },
        ..config(runtime)
    }
}

fn busy(n: i64) -> Predict {
    Predict::new([("n", Tensor::scalar(n))])
}

fn x(values: &[f32]) -> [(&'static str, Tensor); 1] {
    [("x", Tensor::new(&[values.len(), 1], values).unwrap())]
}

/// Waits until the sandbox runs a worker of `generation`, or panics after a minute.
async fn wait_for_generation(sandbox: &Sandbox, generation: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandbox.generation() < generation {
        assert!(
            Instant::now() < deadline,
            "no worker {generation} within a minute"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Ready once it answers.
    sandbox.info().await.unwrap();
}

async fn a_run_tensorflow_can_stop_ends_at_its_deadline_on_the_same_worker(runtime: RuntimeKind) {
    // TensorFlow checks the deadline between ops; on a loaded machine it may notice a second or
    // more late. The grace only has to tell that from a run that never stops.
    let sandbox = Sandbox::start(Config {
        stuck_grace: Duration::from_secs(5),
        ..quick(runtime)
    })
    .await
    .unwrap();
    let model = sandbox.load_model(fixture("busy_loop")).await.unwrap();
    let error = model
        .predict_with(busy(1 << 60).deadline(Duration::from_millis(500)))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error}");
    assert!(error.to_string().contains("model 'busy_loop'"), "{error}");
    // TensorFlow stops a While loop at the deadline: nothing is left running, so the worker stays.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(sandbox.info().await.unwrap().abandoned_runs, 0);
    assert_eq!(sandbox.generation(), 1);
    let out = model.predict_with(busy(1000)).await.unwrap();
    assert_eq!(out["count"].to_vec::<i64>().unwrap(), vec![1000]);
}

async fn a_run_tensorflow_cannot_stop_gets_its_worker_replaced(runtime: RuntimeKind) {
    let sandbox = Sandbox::start(quick(runtime).with_model(fixture("hostile/one_long_op")))
        .await
        .unwrap();
    let long = sandbox
        .load_model(fixture("hostile/one_long_op"))
        .await
        .unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let error = long
        .predict_with(
            Predict::new([("n", Tensor::scalar(12_000i64))]).deadline(Duration::from_millis(500)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error}");
    assert!(error.to_string().contains("model 'one_long_op'"), "{error}");
    // The MatMul runs on past the deadline; after the grace the worker is killed and replaced,
    // and the new one has both models loaded again.
    wait_for_generation(&sandbox, 2).await;
    let out = half.predict(x(&[2.0])).await.unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![3.0]);
    let out = long.predict([("n", Tensor::scalar(10i64))]).await.unwrap();
    assert_eq!(out["total"].to_vec::<f32>().unwrap(), vec![1000.0]);
}

async fn a_worker_that_dies_fails_its_calls_and_is_replaced_with_its_models(runtime: RuntimeKind) {
    let sandbox = Sandbox::start(quick(runtime)).await.unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let looping = sandbox.load_model(fixture("busy_loop")).await.unwrap();
    let call = tokio::spawn({
        let looping = looping.clone();
        async move { looping.predict_with(busy(1 << 60)).await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    kill_worker(&sandbox, runtime).await;
    let error = call.await.unwrap().unwrap_err();
    assert!(matches!(error, Error::WorkerExited { .. }), "{error}");
    assert!(error.to_string().contains("signal: 9"), "{error}");
    // The next calls go to a new worker holding the same models.
    let out = half.predict(x(&[4.0])).await.unwrap();
    assert_eq!(out["y"].to_vec::<f32>().unwrap(), vec![4.0]);
    assert_eq!(sandbox.generation(), 2);
    let info = sandbox.info().await.unwrap();
    assert_eq!(info.loaded_models, ["busy_loop", "half_plus_two"]);
}

async fn a_crash_loop_ends_in_an_error_that_says_so(runtime: RuntimeKind) {
    let sandbox = Sandbox::start(Config {
        restart: RestartPolicy {
            max_restarts: 1,
            initial_backoff: Duration::from_millis(10),
            ..RestartPolicy::default()
        },
        ..config(runtime)
    })
    .await
    .unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    kill_worker(&sandbox, runtime).await;
    wait_for_generation(&sandbox, 2).await;
    kill_worker(&sandbox, runtime).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let error = half.predict(x(&[1.0])).await.unwrap_err();
    assert!(matches!(error, Error::Failed { .. }), "{error}");
    assert!(error.to_string().contains("died 2 times"), "{error}");
    assert!(error.to_string().contains("signal: 9"), "{error}");
}

async fn each_limit_fails_with_an_error_naming_it(runtime: RuntimeKind) {
    let sandbox = Sandbox::start(Config {
        limits: Limits {
            max_tensor_bytes: 64,
            max_models: 2,
            max_concurrent_calls: 2,
            max_queued_calls: 0,
        },
        ..config(runtime)
    })
    .await
    .unwrap();
    let half = sandbox.load_model(fixture("half_plus_two")).await.unwrap();
    let looping = sandbox.load_model(fixture("busy_loop")).await.unwrap();

    let error = sandbox.load_model(fixture("identity")).await.err().unwrap();
    assert!(
        matches!(error, Error::TooManyModels { limit: 2, .. }),
        "{error}"
    );

    let error = half.predict(x(&[1.0; 17])).await.unwrap_err();
    assert!(
        matches!(error, Error::TensorTooLarge { bytes: 68, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("tensor 'x'"), "{error}");
    half.predict(x(&[1.0; 16])).await.unwrap();

    let in_flight: Vec<_> = (0..2)
        .map(|_| {
            let looping = looping.clone();
            tokio::spawn(async move {
                looping
                    .predict_with(busy(1 << 60).deadline(Duration::from_secs(3)))
                    .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let error = half.predict(x(&[1.0])).await.unwrap_err();
    assert!(
        matches!(error, Error::TooManyCalls { limit: 2, .. }),
        "{error}"
    );
    for call in in_flight {
        let error = call.await.unwrap().unwrap_err();
        assert!(matches!(error, Error::DeadlineExceeded { .. }), "{error}");
    }
    half.predict(x(&[1.0])).await.unwrap();

    // The message limit holds whatever the tensor limit allows.
    let small = Sandbox::start(Config {
        max_message_bytes: 16 << 10,
        ..config(runtime)
    })
    .await
    .unwrap();
    let half = small.load_model(fixture("half_plus_two")).await.unwrap();
    let error = half.predict(x(&[1.0; 8192])).await.unwrap_err();
    assert!(matches!(error, Error::MessageTooLarge { .. }), "{error}");
    assert!(
        error.to_string().contains("model 'half_plus_two'"),
        "{error}"
    );
    half.predict(x(&[1.0; 16])).await.unwrap();
}

async fn shutdown_lets_calls_in_flight_finish(runtime: RuntimeKind) {
    let sandbox = Sandbox::start(config(runtime)).await.unwrap();
    let looping = sandbox.load_model(fixture("busy_loop")).await.unwrap();
    let call = tokio::spawn({
        let looping = looping.clone();
        async move { looping.predict_with(busy(ABOUT_A_SECOND)).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !call.is_finished(),
        "the call was over before the shutdown began"
    );
    sandbox.shutdown().await;
    let out = call.await.unwrap().unwrap();
    assert_eq!(out["count"].to_vec::<i64>().unwrap(), vec![ABOUT_A_SECOND]);
    let error = looping.predict_with(busy(1)).await.unwrap_err();
    assert!(matches!(error, Error::Closed { .. }), "{error}");
}

async fn a_pool_spreads_calls_and_outlives_a_dead_member(runtime: RuntimeKind) {
    let pool = Pool::start(quick(runtime), fixture("busy_loop"), 2)
        .await
        .unwrap();
    let calls =
        || futures::future::join_all((0..4).map(|_| pool.predict_with(busy(ABOUT_A_SECOND))));
    let (results, load) = tokio::join!(calls(), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pool.load()
    });
    assert_eq!(load, [2, 2], "calls were not spread evenly");
    for result in results {
        assert_eq!(
            result.unwrap()["count"].to_vec::<i64>().unwrap(),
            vec![ABOUT_A_SECOND]
        );
    }

    let first = pool.sandboxes().next().unwrap();
    kill_worker(first, runtime).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for result in calls().await {
        assert_eq!(
            result.unwrap()["count"].to_vec::<i64>().unwrap(),
            vec![ABOUT_A_SECOND]
        );
    }
    assert_eq!(
        pool.sandboxes()
            .map(Sandbox::generation)
            .collect::<Vec<_>>(),
        [2, 1]
    );
}

each_runtime!(
    a_run_tensorflow_can_stop_ends_at_its_deadline_on_the_same_worker,
    a_run_tensorflow_cannot_stop_gets_its_worker_replaced,
    a_worker_that_dies_fails_its_calls_and_is_replaced_with_its_models,
    a_crash_loop_ends_in_an_error_that_says_so,
    each_limit_fails_with_an_error_naming_it,
    shutdown_lets_calls_in_flight_finish,
    a_pool_spreads_calls_and_outlives_a_dead_member,
);
