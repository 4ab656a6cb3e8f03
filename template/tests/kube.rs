//! The Kubernetes integration against a stand-in API server on 127.0.0.1: it speaks the
//! two calls the service makes (read its Pod, create events), records them, and
//! can be told to hang or fail. The service finds it through a kubeconfig, as `kubectl` would.

#![cfg(feature = "kube")]

mod support;

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use serde_json::{Value, json};

use support::{Service, get_in_background, loopback_listener};

const POD: &str = "web-7d9f8-x2k4q";
const NAMESPACE: &str = "shop";
const UID: &str = "0b5c1c4e-1d2a-4f43-9a7e-3c1f0e2d5b6a";

#[test]
fn a_clean_shutdown_tells_its_story_in_the_pods_events() {
    let api = FakeApi::start(Behaviour::Answer(pod(32, None)));
    let mut service = api.start_service(&[("SHUTDOWN_DRAIN_DELAY", "200ms")]);
    service.wait_until("the budget check ran", |service| {
        api.received_any(|call| call.method == "GET")
            && service.metric("shutdown_budget_mismatch") == 0.0
    });

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);

    let events = api.events();
    let reasons: Vec<&str> = events
        .iter()
        .map(|event| event["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["DrainStarted", "DrainCompleted"]);
    for event in &events {
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["regarding"]["kind"], "Pod");
        assert_eq!(event["regarding"]["name"], POD);
        assert_eq!(event["regarding"]["namespace"], NAMESPACE);
        assert_eq!(event["regarding"]["uid"], UID);
        assert_eq!(event["reportingController"], env!("CARGO_PKG_NAME"));
        assert_eq!(event["reportingInstance"], POD);
    }
    let started = events[0]["note"].as_str().unwrap();
    assert!(started.contains("draining for 200ms"), "{started}");
    let completed = events[1]["note"].as_str().unwrap();
    assert!(
        completed.contains("0 requests were in flight"),
        "{completed}"
    );
}

#[test]
fn a_grace_period_edited_by_hand_is_flagged() {
    let api = FakeApi::start(Behaviour::Answer(pod(10, None)));
    let service = api.start_service(&[]);
    service.wait_until("the mismatch is exposed", |service| {
        service.metric("shutdown_budget_mismatch") == 1.0
    });
    let warning = service.wait_for_log("the Pod's spec contradicts the shutdown budget");
    let problem = warning["problem"].as_str().unwrap();
    assert!(
        problem.contains("terminationGracePeriodSeconds (10s)"),
        "{problem}"
    );

    service.wait_until("the Warning event is published", |_| {
        !api.events().is_empty()
    });
    let event = &api.events()[0];
    assert_eq!(event["type"], "Warning");
    assert_eq!(event["reason"], "ShutdownBudgetMismatch");
    assert_eq!(event["note"], problem);
}

#[test]
fn requests_cut_at_the_deadline_make_a_warning_event() {
    let api = FakeApi::start(Behaviour::Answer(pod(32, None)));
    let mut service = api.start_service(&[
        ("SHUTDOWN_DRAIN_DELAY", "200ms"),
        ("SHUTDOWN_TIMEOUT", "1s"),
    ]);
    let slow = service.request_in_flight("/slow?ms=5000");

    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 3);
    assert!(slow.join().unwrap().is_err(), "the slow request was cut");

    let events = api.events();
    let last = events.last().expect("events were published");
    assert_eq!(last["type"], "Warning");
    assert_eq!(last["reason"], "ShutdownDeadlineExceeded");
    let note = last["note"].as_str().unwrap();
    assert!(note.contains("cut 1 requests"), "{note}");
}

#[test]
fn a_short_deletion_grace_period_shrinks_the_budget() {
    let api = FakeApi::start(Behaviour::Answer(pod(32, None)));
    // The usual budget: 5 s of drain, requests until 20 s, cleanup within 5 s.
    let mut service = api.start_service(&[]);
    // `kubectl delete --grace-period=4`: SIGKILL comes 4 s after the deletion.
    let deleted = SystemTime::now();
    api.behave(Behaviour::Answer(pod(32, Some(deleted))));
    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);

    assert!(
        signalled.elapsed() < Duration::from_secs(4),
        "the service outlived the deletion's grace period: {:?}",
        signalled.elapsed()
    );
    let shrunk = service.wait_for_log(
        "shutdown: the Pod's deletion allows less time than the budget; shrunk to fit",
    );
    assert!(
        shrunk["drain_delay_ms"].as_u64().unwrap() < 1000,
        "{shrunk}"
    );
}

#[test]
fn a_hanging_api_server_cannot_hold_the_shutdown() {
    let api = FakeApi::start(Behaviour::Hang);
    let mut service = api.start_service(&[
        ("SHUTDOWN_DRAIN_DELAY", "200ms"),
        ("SHUTDOWN_TIMEOUT", "1s"),
        ("SHUTDOWN_CLEANUP_TIMEOUT", "1s"),
    ]);
    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    assert!(
        signalled.elapsed() < Duration::from_secs(2),
        "the shutdown waited {:?} on a hanging API server, beyond its 2 s budget",
        signalled.elapsed()
    );
    assert!(
        api.received_any(|call| call.method == "POST"),
        "an event was attempted"
    );
}

#[test]
fn a_failing_api_server_changes_nothing_but_a_warning() {
    let api = FakeApi::start(Behaviour::Fail);
    let mut service = api.start_service(&[("SHUTDOWN_DRAIN_DELAY", "200ms")]);
    assert_eq!(
        get_in_background(service.http, "/")
            .join()
            .unwrap()
            .unwrap()
            .status,
        200
    );
    let signalled = Instant::now();
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    assert!(signalled.elapsed() < Duration::from_secs(1));
    service.wait_for_log("could not publish an event");
    let errors: Vec<Value> = service
        .logs()
        .into_iter()
        .filter(|line| line["level"] == "ERROR")
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn without_pod_identity_the_integration_says_it_is_inactive() {
    let mut service = Service::start(&[("SHUTDOWN_DRAIN_DELAY", "100ms")]);
    let line = service.wait_for_log_where(|line| {
        line["message"]
            .as_str()
            .is_some_and(|message| message.starts_with("Kubernetes integration inactive"))
    });
    assert!(
        line["message"].as_str().unwrap().contains("POD_NAME"),
        "{line}"
    );
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
}

/// Against a real cluster, opt-in: `KUBECONFIG` and `KUBE_TEST_POD=<namespace>/<name>` of a
/// running Pod the kubeconfig's user may read and create events for.
#[test]
fn against_a_real_cluster_when_asked() {
    let (Some(kubeconfig), Some(target)) = (
        std::env::var_os("KUBECONFIG"),
        std::env::var("KUBE_TEST_POD").ok(),
    ) else {
        eprintln!("skipped: set KUBECONFIG and KUBE_TEST_POD=<namespace>/<pod> to run it");
        return;
    };
    let (namespace, name) = target
        .split_once('/')
        .expect("KUBE_TEST_POD=<namespace>/<pod>");
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    let mut service = Service::start(&[
        ("KUBECONFIG", &kubeconfig),
        ("POD_NAME", name),
        ("POD_NAMESPACE", namespace),
        ("SHUTDOWN_DRAIN_DELAY", "200ms"),
    ]);
    service.wait_for_log("Kubernetes integration active");
    service.signal(libc::SIGTERM);
    assert_eq!(service.wait_exit(), 0);
    let failures: Vec<_> = service
        .logs()
        .into_iter()
        .filter(|line| line["level"] == "WARN")
        .collect();
    assert!(
        failures.is_empty(),
        "calls to the cluster failed: {failures:#?}"
    );
}

/// The Pod as the chart renders it, with its grace period and, once deleted, the deletion
/// timestamp the API server sets (deletion time plus a 4 s grace period).
fn pod(grace_period: i64, deleted: Option<SystemTime>) -> Value {
    let mut metadata = json!({"name": POD, "namespace": NAMESPACE, "uid": UID});
    if let Some(at) = deleted {
        let deletion = humantime::format_rfc3339_seconds(at + Duration::from_secs(4));
        metadata["deletionGracePeriodSeconds"] = json!(4);
        metadata["deletionTimestamp"] = json!(deletion.to_string());
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": metadata,
        "spec": {
            "terminationGracePeriodSeconds": grace_period,
            "containers": [{
                "name": "service",
                "lifecycle": {"preStop": {"httpGet": {"path": "/prestop", "port": "admin"}}},
            }],
        },
    })
}

#[derive(Clone)]
enum Behaviour {
    /// Serves this Pod and accepts events.
    Answer(Value),
    /// Accepts connections and never answers.
    Hang,
    /// Answers every call with 500.
    Fail,
}

#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    body: Value,
}

struct FakeApi {
    behaviour: Arc<Mutex<Behaviour>>,
    calls: Arc<Mutex<Vec<Call>>>,
    kubeconfig: PathBuf,
}

impl FakeApi {
    fn start(behaviour: Behaviour) -> FakeApi {
        let listener = loopback_listener();
        let addr = listener.local_addr().unwrap();
        let behaviour = Arc::new(Mutex::new(behaviour));
        let calls = Arc::new(Mutex::new(Vec::new()));
        {
            let (behaviour, calls) = (behaviour.clone(), calls.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { break };
                    let (behaviour, calls) = (behaviour.clone(), calls.clone());
                    std::thread::spawn(move || serve(stream, &behaviour, &calls));
                }
            });
        }
        let kubeconfig = std::env::temp_dir().join(format!(
            "{}-kubeconfig-{}-{}",
            env!("CARGO_PKG_NAME"),
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
                 clusters:\n- name: fake\n  cluster:\n    server: http://{addr}\n\
                 contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
                 users:\n- name: fake\n  user:\n    token: not-a-secret\n"
            ),
        )
        .unwrap();
        FakeApi {
            behaviour,
            calls,
            kubeconfig,
        }
    }

    /// The service as the chart runs it: its Pod's identity from the downward API.
    fn start_service(&self, env: &[(&str, &str)]) -> Service {
        let kubeconfig = self.kubeconfig.to_string_lossy().into_owned();
        let mut all = vec![
            ("KUBECONFIG", kubeconfig.as_str()),
            ("POD_NAME", POD),
            ("POD_NAMESPACE", NAMESPACE),
            ("POD_UID", UID),
            ("CONTAINER_NAME", "service"),
        ];
        all.extend_from_slice(env);
        Service::start(&all)
    }

    fn behave(&self, behaviour: Behaviour) {
        *self.behaviour.lock().unwrap() = behaviour;
    }

    fn received_any(&self, matches: impl Fn(&Call) -> bool) -> bool {
        self.calls.lock().unwrap().iter().any(matches)
    }

    /// The events created, in order.
    fn events(&self) -> Vec<Value> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|call| call.method == "POST" && call.path.ends_with("/events"))
            .map(|call| call.body.clone())
            .collect()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}

fn serve(stream: TcpStream, behaviour: &Mutex<Behaviour>, calls: &Mutex<Vec<Call>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut stream = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = request_line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        let path = target.split('?').next().unwrap_or_default().to_owned();
        let mut length = 0;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        calls.lock().unwrap().push(Call {
            method: method.to_owned(),
            path: path.clone(),
            body: body.clone(),
        });

        let behaviour = behaviour.lock().unwrap().clone();
        let (status, answer) = match behaviour {
            Behaviour::Hang => {
                std::thread::sleep(Duration::from_secs(60));
                return;
            }
            Behaviour::Fail => (500, status_object(500, "the stand-in API server fails")),
            Behaviour::Answer(pod) => match method {
                "GET" if path == format!("/api/v1/namespaces/{NAMESPACE}/pods/{POD}") => (200, pod),
                "POST"
                    if path == format!("/apis/events.k8s.io/v1/namespaces/{NAMESPACE}/events") =>
                {
                    (201, body)
                }
                _ => (
                    404,
                    status_object(404, "not served by the stand-in API server"),
                ),
            },
        };
        let answer = answer.to_string();
        let response = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if stream.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

fn status_object(code: u16, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "code": code})
}
