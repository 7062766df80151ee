//! Answers one real review N times, as the server's handler does after the body has arrived
//! (parse, policy, patch, response encoding), for `benches/instructions.sh`, which counts the
//! instructions under valgrind: a count is the same from run to run whatever else the machine
//! does, where the load benchmark's CPU figures move by 20%.
//!
//!   review_instructions WHAT BODY N
//!
//! WHAT: `policy` (spark-admission with examples/policies/platform.yaml), `kube-rs` (parse the
//! whole AdmissionReview<Pod> and answer allowed: true, as a do-nothing kube-rs webhook) or
//! `lean` (spark-admission's parse, allowed: true). BODY: `executor` or `driver`.

use std::hint::black_box;
use std::process::ExitCode;

use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionResponse;
use spark_admission::Policy;
use spark_admission::admission;

// The server's allocator, so allocations cost here what they cost in the server.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const EXECUTOR_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/driver-review.json");
const PLATFORM: &str = include_str!("policies/platform.yaml");

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [what, body, times] = args.as_slice() else {
        eprintln!("usage: review_instructions policy|kube-rs|lean executor|driver N");
        return ExitCode::from(2);
    };
    let body = match body.as_str() {
        "executor" => EXECUTOR_REVIEW,
        "driver" => DRIVER_REVIEW,
        other => {
            eprintln!("unknown body {other:?}: executor or driver");
            return ExitCode::from(2);
        }
    };
    let Ok(times) = times.parse::<usize>() else {
        eprintln!("N must be a number, not {times:?}");
        return ExitCode::from(2);
    };
    let policy = match Policy::parse(PLATFORM) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("examples/policies/platform.yaml: {error}");
            return ExitCode::FAILURE;
        }
    };
    let cluster = Default::default();
    let mut bytes = 0;
    for _ in 0..times {
        let answer = match what.as_str() {
            "policy" => admission::parse_review(black_box(body)).map(|request| {
                let (review, _) = admission::review(request, &policy, &cluster);
                review.to_json()
            }),
            "kube-rs" => admission::parse_review_of::<Pod>(black_box(body)).map(|request| {
                serde_json::to_vec(&AdmissionResponse::from(&request).into_review())
            }),
            "lean" => admission::parse_review(black_box(body)).map(|request| {
                serde_json::to_vec(&AdmissionResponse::from(&request).into_review())
            }),
            other => {
                eprintln!("unknown server {other:?}: policy, kube-rs or lean");
                return ExitCode::from(2);
            }
        };
        match answer {
            Ok(Ok(encoded)) => bytes += black_box(encoded).len(),
            Ok(Err(error)) => {
                eprintln!("encoding the answer failed: {error}");
                return ExitCode::FAILURE;
            }
            Err(error) => {
                eprintln!("the fixture did not parse: {error}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{bytes}");
    ExitCode::SUCCESS
}
