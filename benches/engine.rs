//! Engine benchmarks on the real executor fixture with the example policy.
//!
//! `engine+diff` is the policy work per pod (the <20 µs target). `review/*` is the whole
//! request path without sockets: bytes in, response bytes out; `review/allow-baseline` does the
//! same parse and serialisation but answers `allowed: true` with no policy work.
//! `allow-baseline` parses the whole `AdmissionReview<Pod>` as a kube-rs webhook does;
//! `allow-baseline-lean` uses spark-admission's parse (managedFields skipped), so the ratio of
//! `review/policy` to it is the cost the policy alone adds.

// Test code: a failed expectation is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::hint::black_box;

// The same allocator as the binary, so the figures are the server's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use criterion::{Criterion, criterion_group, criterion_main};
use k8s_openapi::api::core::v1::Pod;
use kube::core::admission::AdmissionResponse;
use spark_admission::Policy;
use spark_admission::admission;
use spark_admission::engine::{RequestContext, evaluate};

const EXECUTOR_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/executor-review.json");
const DRIVER_REVIEW: &[u8] = include_bytes!("../tests/fixtures/spark-4.3/driver-review.json");

fn engine(c: &mut Criterion) {
    let policy = Policy::builtin_example();
    let request = admission::parse_review(EXECUTOR_REVIEW).expect("fixture parses");
    let mut pod: Pod = request.object.clone().expect("pod");
    pod.metadata.managed_fields = None;
    let context = RequestContext {
        namespace: "spark-jobs".into(),
        ..RequestContext::default()
    };
    // The server owns the request's pod and hands it to the diff; the copy made here for each
    // iteration is setup, outside the timing.
    c.bench_function("engine+diff/executor", |b| {
        b.iter_batched(
            || pod.clone(),
            |pod| {
                let out = evaluate(black_box(&pod), &context, &policy).expect("spark pod");
                spark_admission::patch::diff(pod, out.desired).expect("diff")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // SPEC §4a: the example policy using every pod field (volumes, mounts, sidecar, init
    // container, security contexts, placement, local dirs) on the same pod.
    let customization = Policy::parse(include_str!("../examples/policies/pod-customization.yaml"))
        .expect("example policy");
    c.bench_function("engine+diff/executor-pod-customization", |b| {
        b.iter_batched(
            || pod.clone(),
            |pod| {
                let out = evaluate(black_box(&pod), &context, &customization).expect("spark pod");
                spark_admission::patch::diff(pod, out.desired).expect("diff")
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("engine-only/executor", |b| {
        b.iter(|| evaluate(black_box(&pod), &context, &policy).expect("spark pod"))
    });

    let mut group = c.benchmark_group("review");
    for (name, body) in [("executor", EXECUTOR_REVIEW), ("driver", DRIVER_REVIEW)] {
        group.bench_function(format!("policy/{name}"), |b| {
            b.iter(|| {
                let request = admission::parse_review(black_box(body)).expect("parses");
                let (review, _) = admission::review(request, &policy, &Default::default());
                serde_json::to_vec(&review).expect("serialises")
            })
        });
        group.bench_function(format!("allow-baseline/{name}"), |b| {
            b.iter(|| {
                let request = admission::parse_review_of::<Pod>(black_box(body)).expect("parses");
                let review = AdmissionResponse::from(&request).into_review();
                serde_json::to_vec(&review).expect("serialises")
            })
        });
        group.bench_function(format!("allow-baseline-lean/{name}"), |b| {
            b.iter(|| {
                let request = admission::parse_review(black_box(body)).expect("parses");
                let review = AdmissionResponse::from(&request).into_review();
                serde_json::to_vec(&review).expect("serialises")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);
