//! The shutdown sequence in-process, on Tokio's paused clock: every duration below is the
//! service's own time, exact whatever the machine's load.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use kube_service_runtime::{Cut, EXIT_DEADLINE_EXCEEDED, Error, Exit, Report, Settings, Signal};
use tokio::{sync::Notify, time::Instant};

use support::{Connection, Running, hanging, settings};

const DRAIN: Duration = Duration::from_secs(5);
const TIMEOUT: Duration = Duration::from_secs(20);

fn hello() -> Router {
    Router::new().route("/", get(|| async { "hello\n" }))
}

fn report(exit: Exit) -> Report {
    match exit {
        Exit::Shutdown(report) => report,
        other => panic!("expected a shutdown report, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn the_drain_delay_serves_asking_clients_to_close_then_the_listener_closes() {
    let service = Running::ready(settings(5, 20), hello()).await;
    let mut kept_alive = Connection::open(service.http).await.unwrap();
    assert!(!kept_alive.get("/").await.unwrap().asks_to_close());

    let signalled = service.signal(Signal::TERM);
    let answer = kept_alive.get("/").await.unwrap();
    assert_eq!(answer.status, 200, "still serving while draining");
    assert!(
        answer.asks_to_close(),
        "draining answers carry Connection: close"
    );
    let readyz = support::get(service.admin, "/readyz").await.unwrap();
    assert_eq!(readyz.status, 503);
    assert!(readyz.body.contains("draining"), "{}", readyz.body);

    tokio::time::sleep_until(signalled + DRAIN - Duration::from_millis(10)).await;
    let late = support::get(service.http, "/").await.unwrap();
    assert_eq!(
        late.status, 200,
        "new connections are served until the drain delay ends"
    );

    tokio::time::sleep_until(signalled + DRAIN).await;
    let mut refused = false;
    for _ in 0..1000 {
        if Connection::open(service.http).await.is_err() {
            refused = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(refused, "the listener closes once the drain delay is over");
    assert_eq!(Instant::now(), signalled + DRAIN, "at that very instant");

    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.took, DRAIN, "nothing else held the shutdown");
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_finish_within_the_deadline() {
    let entered = Arc::new(Notify::new());
    let router = {
        let entered = entered.clone();
        Router::new().route(
            "/slow",
            get(move || async move {
                entered.notify_one();
                tokio::time::sleep(Duration::from_secs(8)).await;
                "done\n"
            }),
        )
    };
    let service = Running::ready(settings(1, 20), router).await;
    let mut slow = Connection::open(service.http).await.unwrap();
    slow.send("/slow").await.unwrap();
    entered.notified().await;

    let signalled = service.signal(Signal::TERM);
    let report = report(service.exit().await);

    assert!(report.is_clean(), "{report:?}");
    let finished = signalled.elapsed();
    assert!(
        finished < Duration::from_secs(9),
        "ended when the request did, not at the deadline: {finished:?}"
    );
    let answer = slow.read().await.unwrap();
    assert_eq!((answer.status, answer.body.as_str()), (200, "done\n"));
    assert!(answer.asks_to_close());
}

#[tokio::test(start_paused = true)]
async fn the_deadline_cuts_what_still_runs_and_counts_it() {
    let entered = Arc::new(Notify::new());
    let router = Router::new().route("/hang", hanging(entered.clone()));
    // A request timeout past the deadline: the guard would answer 503 before it otherwise.
    let settings = kube_service_runtime::Settings {
        request_timeout: Duration::from_secs(60),
        ..settings(5, 20)
    };
    let service = Running::ready(settings, router).await;
    let mut idle = Connection::open(service.http).await.unwrap();
    idle.get("/readyz-is-not-here").await.unwrap();
    let mut hung = Connection::open(service.http).await.unwrap();
    hung.send("/hang").await.unwrap();
    entered.notified().await;

    let signalled = service.signal(Signal::TERM);
    let exit = service.exit().await;

    assert_eq!(exit.code(), EXIT_DEADLINE_EXCEEDED, "{exit:?}");
    let report = report(exit);
    assert_eq!(
        report.cut,
        Cut {
            requests: 1,
            connections: 1
        },
        "the idle connection closed gracefully; only the hung one was cut"
    );
    assert_eq!(signalled + report.took, signalled + TIMEOUT);
    assert!(hung.read().await.is_err(), "the cut request gets no answer");
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_ends_the_shutdown_at_once() {
    let entered = Arc::new(Notify::new());
    let router = Router::new().route("/hang", hanging(entered.clone()));
    let service = Running::ready(settings(5, 20), router).await;
    let mut hung = Connection::open(service.http).await.unwrap();
    hung.send("/hang").await.unwrap();
    entered.notified().await;

    let signalled = service.signal(Signal::TERM);
    tokio::time::sleep(Duration::from_secs(1)).await;
    service.signal(Signal::INT);
    let exit = service.exit().await;

    assert!(matches!(exit, Exit::Forced(Signal::INT)), "{exit:?}");
    assert_eq!(exit.code(), 130);
    assert_eq!(signalled.elapsed(), Duration::from_secs(1), "at once");
}

#[tokio::test(start_paused = true)]
async fn a_signal_during_startup_closes_what_startup_opened_and_never_serves() {
    let started = Arc::new(Notify::new());
    let closed = Arc::new(AtomicBool::new(false));
    let service = {
        let (started, closed) = (started.clone(), closed.clone());
        Running::start(settings(5, 20), move |startup| async move {
            startup.resources.register("pool", move || async move {
                closed.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            });
            started.notify_one();
            std::future::pending::<Result<Router, Error>>().await
        })
        .await
    };
    started.notified().await;
    let (http, admin) = (service.http, service.admin);
    let readyz = support::get(admin, "/readyz").await.unwrap();
    assert_eq!(readyz.status, 503, "not ready while starting");

    service.signal(Signal::TERM);
    let exit = service.exit().await;

    assert!(
        matches!(exit, Exit::DuringStartup(Signal::TERM)),
        "{exit:?}"
    );
    assert_eq!(exit.code(), 0);
    assert!(closed.load(Ordering::SeqCst), "the resource was closed");
    assert!(Connection::open(http).await.is_err(), "never served");
}

#[tokio::test(start_paused = true)]
async fn failed_startup_work_closes_what_it_opened_and_says_why() {
    let closed = Arc::new(AtomicBool::new(false));
    let service = {
        let closed = closed.clone();
        Running::start(settings(5, 20), move |startup| async move {
            startup.resources.register("pool", move || async move {
                closed.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            });
            Err::<Router, Error>("the broker refused the connection".into())
        })
        .await
    };
    let exit = service.exit().await;
    assert_eq!(exit.code(), 1);
    assert!(
        matches!(&exit, Exit::StartupFailed(why) if why.contains("broker refused")),
        "{exit:?}"
    );
    assert!(closed.load(Ordering::SeqCst), "the resource was closed");
}

#[tokio::test(start_paused = true)]
async fn the_pre_stop_hook_turns_readiness_off_and_answers_after_its_delay() {
    let service = Running::ready(settings(5, 20), hello()).await;
    let admin = service.admin;
    let called = Instant::now();
    let hook = tokio::spawn(async move { support::get(admin, "/prestop").await });
    // The hook's request runs in a blocking task, which stops the clock: move it by hand.
    loop {
        let readyz = support::get(admin, "/readyz").await.unwrap();
        if readyz.status == 503 {
            assert!(readyz.body.contains("pre-stop"), "{}", readyz.body);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(!hook.is_finished(), "the hook waits for its delay");
    tokio::time::advance(Duration::from_secs(3)).await;
    let answer = hook.await.unwrap().unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(called.elapsed(), Duration::from_secs(3));

    // SIGTERM follows the hook; the service still drains for its full delay.
    let signalled = service.signal(Signal::TERM);
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.took, DRAIN, "drained from the signal: {signalled:?}");
}

#[tokio::test(start_paused = true)]
async fn a_pre_stop_call_no_signal_follows_takes_the_service_out_only_for_a_while() {
    let service = Running::ready(settings(5, 20), hello()).await;
    let admin = service.admin;
    // A caller that hangs up at once: the drain it began still ends.
    let mut caller = Connection::open(admin).await.unwrap();
    caller.send("/prestop").await.unwrap();
    let called = Instant::now();
    loop {
        if support::get(admin, "/readyz").await.unwrap().status == 503 {
            break;
        }
        tokio::task::yield_now().await;
    }
    drop(caller);

    // The pre-stop delay (3 s) and the 10 s a signal may take to follow it.
    tokio::time::sleep_until(called + Duration::from_millis(12_900)).await;
    assert_eq!(support::get(admin, "/readyz").await.unwrap().status, 503);
    tokio::time::sleep_until(called + Duration::from_millis(13_100)).await;
    let readyz = support::get(admin, "/readyz").await.unwrap();
    assert_eq!(readyz.status, 200, "{}", readyz.body);
    let metrics = support::get(admin, "/metrics").await.unwrap().body;
    assert!(
        metrics.contains("prestop_hooks_unfollowed_total 1"),
        "{metrics}"
    );
    let answer = support::get(service.http, "/").await.unwrap();
    assert!(!answer.asks_to_close(), "serving as before");

    // A real shutdown later still drains in full.
    service.signal(Signal::TERM);
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.took, DRAIN);
}

const LINGER: Duration = Duration::from_secs(17);

fn lingering() -> Settings {
    Settings {
        shutdown_metrics_linger: LINGER,
        ..settings(5, 20)
    }
}

#[tokio::test(start_paused = true)]
async fn a_recent_scraper_reads_the_final_counters_before_the_process_ends() {
    let service = Running::ready(lingering(), hello()).await;
    let admin = service.admin;
    let before = support::get(admin, "/metrics").await.unwrap();
    assert!(before.body.contains("shutdowns_total{outcome=\"clean\"} 0"));

    let signalled = service.signal(Signal::TERM);
    let exit = tokio::spawn(service.exit());
    // Well past the end of the sequence (the drain delay), well within the linger.
    tokio::time::sleep_until(signalled + DRAIN + Duration::from_secs(6)).await;
    assert!(!exit.is_finished(), "waiting for the scraper to come back");
    let last = support::get(admin, "/metrics").await.unwrap();
    assert!(
        last.body.contains("shutdowns_total{outcome=\"clean\"} 1"),
        "{}",
        last.body
    );
    assert!(last.body.contains("lifecycle_state{state=\"stopped\"} 1"));
    let scraped_at = Instant::now();

    let report = report(exit.await.unwrap());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.took, DRAIN, "the linger comes after the report");
    assert_eq!(Instant::now(), scraped_at, "and ends with that scrape");
}

#[tokio::test(start_paused = true)]
async fn without_a_scraper_there_is_no_linger() {
    let service = Running::ready(lingering(), hello()).await;
    let signalled = service.signal(Signal::TERM);
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(signalled.elapsed(), DRAIN, "nobody to wait for");
}

#[tokio::test(start_paused = true)]
async fn a_scraper_that_does_not_come_back_costs_the_linger_and_no_more() {
    let service = Running::ready(lingering(), hello()).await;
    support::get(service.admin, "/metrics").await.unwrap();
    let signalled = service.signal(Signal::TERM);
    let report = report(service.exit().await);
    assert_eq!(report.metrics_linger, LINGER);
    assert_eq!(signalled.elapsed(), DRAIN + LINGER);
}

#[tokio::test(start_paused = true)]
async fn a_second_signal_ends_the_linger_with_the_shutdowns_own_exit_code() {
    let service = Running::ready(lingering(), hello()).await;
    support::get(service.admin, "/metrics").await.unwrap();
    let signalled = service.signal(Signal::TERM);
    tokio::time::sleep_until(signalled + DRAIN + Duration::from_secs(1)).await;
    service.signal(Signal::INT);
    let exit = service.exit().await;
    assert_eq!(exit.code(), 0, "{exit:?}");
    assert_eq!(signalled.elapsed(), DRAIN + Duration::from_secs(1));
}

/// A client that connected just before the listener closed is about to send its request:
/// closing its connection at once would reset that request.
#[tokio::test(start_paused = true)]
async fn a_connection_accepted_just_before_the_close_still_gets_its_answer() {
    let service = Running::ready(settings(5, 20), hello()).await;
    let signalled = service.signal(Signal::TERM);
    tokio::time::sleep_until(signalled + DRAIN - Duration::from_millis(10)).await;
    let mut just_in = Connection::open(service.http).await.unwrap();
    tokio::time::sleep_until(signalled + DRAIN + Duration::from_millis(100)).await;
    let answer = just_in.get("/").await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.asks_to_close());
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_sends_holds_the_shutdown_one_second_at_most() {
    let service = Running::ready(settings(5, 20), hello()).await;
    let signalled = service.signal(Signal::TERM);
    tokio::time::sleep_until(signalled + DRAIN - Duration::from_millis(10)).await;
    let _silent = Connection::open(service.http).await.unwrap();
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.took, DRAIN + Duration::from_secs(1));
}

/// The header read timeout holds while the service shuts down: a client trickling its
/// headers is dropped, and the shutdown ends clean, long before its deadline.
#[tokio::test(start_paused = true)]
async fn a_slow_header_client_cannot_hold_the_shutdown_to_its_deadline() {
    let settings = Settings {
        header_read_timeout: Duration::from_secs(2),
        ..settings(5, 20)
    };
    let service = Running::ready(settings, hello()).await;
    let signalled = service.signal(Signal::TERM);
    tokio::time::sleep_until(signalled + DRAIN - Duration::from_secs(1)).await;
    let mut slow = Connection::open(service.http).await.unwrap();
    slow.send_raw(b"GET / HTTP/1.1\r\nHost: slow\r\n")
        .await
        .unwrap();
    let report = report(service.exit().await);
    assert!(report.is_clean(), "{report:?}");
    assert!(report.took < DRAIN + Duration::from_secs(2), "{report:?}");
}

/// A request cut by the deadline is not lost from the metrics: it is counted under
/// `status="cancelled"`, as the final scrape shows.
#[tokio::test(start_paused = true)]
async fn a_request_cut_by_the_deadline_is_counted_as_cancelled() {
    let entered = Arc::new(Notify::new());
    let router = Router::new().route("/hang", hanging(entered.clone()));
    let settings = Settings {
        request_timeout: TIMEOUT * 2,
        ..lingering()
    };
    let service = Running::ready(settings, router).await;
    support::get(service.admin, "/metrics").await.unwrap();
    let mut hung = Connection::open(service.http).await.unwrap();
    hung.send("/hang").await.unwrap();
    entered.notified().await;

    let signalled = service.signal(Signal::TERM);
    let admin = service.admin;
    let exit = tokio::spawn(service.exit());
    // A scraper seen shortly before the end is waited for.
    tokio::time::sleep_until(signalled + TIMEOUT - Duration::from_secs(1)).await;
    support::get(admin, "/metrics").await.unwrap();
    tokio::time::sleep_until(signalled + TIMEOUT + Duration::from_secs(1)).await;
    let last = support::get(admin, "/metrics").await.unwrap();
    let cancelled = r#"http_requests_total{method="GET",route="/hang",status="cancelled"} 1"#;
    assert!(last.body.contains(cancelled), "{}", last.body);
    let report = report(exit.await.unwrap());
    assert_eq!(report.cut.requests, 1);
}
