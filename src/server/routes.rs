//! The HTTP applications: the webhook (`/mutate`, `/validate-policy`) and the admin port
//! (`/healthz`, `/readyz`, `/metrics`). Both are plain `axum::Router`s over the shared state, so
//! tests drive them with `tower::ServiceExt::oneshot` without sockets: tests/routes.rs (every
//! status `/mutate` and `/readyz` answer), tests/policy_configmap.rs, tests/quota_admission.rs.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::future::BoxFuture;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, SizeHint};
use serde::Serialize;

use super::limits::{BodyBytes, Limits, RequestBudget};
use crate::admission::spark_conf::{AppliedTo, ClusterReads, Reserved, Reviewed};
use crate::admission::{self, Outcome, ResponseReview};
use crate::metrics::{Metrics, RuleLabels};
use crate::policy::ConfigMapRef;
use crate::quota::gang::{NamespaceView, Reservations};
use crate::quota::ledger::AppTotals;
use crate::quota::{Confirmation, Room};
use crate::state::State;

/// The largest body accepted: the apiserver sends objects of up to 3 MiB, twice for UPDATE.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// How much of a body with a declared length must have come, while it keeps its room in the
/// byte budget, before its buffer is sized for the whole of it (see `receive_body`).
const SIZED_AFTER: usize = 64 * 1024;

/// What the webhook routes need besides the state.
#[derive(Clone)]
pub struct WebhookApp {
    state: Arc<State>,
    request_timeout: Duration,
    budget: Arc<RequestBudget>,
    // Set once by `serve`, never changed while requests are answered.
    policy_configmap: Arc<ConfigMapRef>,
}

/// The webhook application, with the default request budget ([`Limits::default`]), guarding
/// the default policy ConfigMap ([`ConfigMapRef::default`]) with `/validate-policy`.
pub fn router(state: Arc<State>, request_timeout: Duration) -> Router {
    let budget = Arc::new(RequestBudget::new(&Limits::default(), &state.metrics));
    router_with_budget(state, request_timeout, budget)
}

/// [`router`] with `budget`: every request charges its body's bytes to it as they arrive,
/// then takes a request slot from it, before its handler runs ([`admit`]).
pub fn router_with_budget(
    state: Arc<State>,
    request_timeout: Duration,
    budget: Arc<RequestBudget>,
) -> Router {
    router_guarding(state, request_timeout, budget, ConfigMapRef::default())
}

/// [`router_with_budget`] guarding `policy_configmap` with `/validate-policy`: an edit of that
/// one ConfigMap that would not load is refused.
pub fn router_guarding(
    state: Arc<State>,
    request_timeout: Duration,
    budget: Arc<RequestBudget>,
    policy_configmap: ConfigMapRef,
) -> Router {
    let app = WebhookApp {
        state,
        request_timeout,
        budget,
        policy_configmap: Arc::new(policy_configmap),
    };
    Router::new()
        .route("/mutate", post(mutate))
        .route("/validate-policy", post(validate_policy))
        .route("/mutate-spark-conf", post(mutate_spark_conf))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), admit))
        .with_state(app)
}

/// The admin application (plain HTTP).
pub fn admin_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Serialize)]
struct ErrorBody {
    error: String,
}

fn json_error(status: StatusCode, message: String) -> Response {
    (status, axum::Json(ErrorBody { error: message })).into_response()
}

fn json_body(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Admits a webhook request: reads its body, charging the bytes to the budget as they arrive
/// (413, 408 and 503 as [`receive_body`] says), takes a request slot once the body is in (503
/// when none comes free within the queue wait), and only then runs the handler, with the body
/// read. So a request whose body is still arriving costs its connection this function's
/// state, not a handler's. The slot goes back once the answer is built; the request's bytes,
/// shrunk to the answer's size, stay charged until the answer's body is dropped, which the
/// connection does once the answer is handed over or the connection is closed for not taking
/// it (`--write-timeout`): an answer nobody reads counts against the memory bound like a body
/// that is arriving.
async fn admit(AxumState(app): AxumState<WebhookApp>, request: Request, next: Next) -> Response {
    let review = request.uri().path() == "/mutate";
    let refused = |response: Response| {
        if review {
            tracing::warn!(status = %response.status(), "rejected /mutate body");
            app.state
                .metrics
                .count_request("unknown", "none", Outcome::Error.as_str());
        }
        response
    };
    let (parts, body) = request.into_parts();
    let (bytes, mut held) = match receive_body(&app, &parts.headers, body).await {
        Ok(received) => received,
        Err(response) => return refused(response),
    };
    let slot = match app.budget.slot().await {
        Ok(slot) => slot,
        Err(error) => return refused(overloaded(error)),
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes)))
        .await;
    drop(slot);
    let size = response.body().size_hint();
    held.shrink_to(usize::try_from(size.exact().unwrap_or(size.lower())).unwrap_or(usize::MAX));
    response.map(|body| Body::new(Held { body, _bytes: held }))
}

fn overloaded(error: super::limits::Error) -> Response {
    tracing::warn!(%error, "request refused by the server's bounds");
    json_error(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

/// An answer's body with its request's bytes.
struct Held {
    body: Body,
    _bytes: BodyBytes,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Reads the whole body within the size limit and the request timeout, charging its bytes to
/// the budget as they arrive (503 when there is no room for them within the queue wait). A
/// declared Content-Length is checked against the limits but holds nothing before the body's
/// first bytes, and then only while they keep coming: a client may declare what it never
/// sends.
async fn receive_body(
    app: &WebhookApp,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, BodyBytes), Response> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let too_large = || {
        json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body is larger than the {MAX_BODY_BYTES} byte limit"),
        )
    };
    if declared.is_some_and(|length| length > MAX_BODY_BYTES) {
        return Err(too_large());
    }
    let mut held = app.budget.body(declared).map_err(overloaded)?;
    let timeout = app.request_timeout;
    let collect = async {
        let mut body = Limited::new(body, MAX_BODY_BYTES);
        let mut collected = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| {
                if error.is::<LengthLimitError>() {
                    too_large()
                } else {
                    json_error(
                        StatusCode::BAD_REQUEST,
                        format!("failed to read body: {error}"),
                    )
                }
            })?;
            if let Ok(data) = frame.into_data() {
                // The chunk is in memory already (one chunk per request ahead of the
                // budget); it is kept only once charged.
                held.charge(data.len()).await.map_err(overloaded)?;
                // The buffer is sized by the declared length only once the client has paid
                // for it: 64 KiB come while the body holds room in the budget for the rest
                // (it keeps arriving at 1 MiB/s), or half of it. Before that it grows with
                // what came. A declared length alone allocates nothing.
                let arrived = collected.len() + data.len();
                if let Some(declared) = declared.filter(|declared| {
                    collected.capacity() < *declared
                        && ((held.has_room() && arrived >= SIZED_AFTER)
                            || arrived.saturating_mul(2) >= *declared)
                }) {
                    collected.reserve_exact(declared - collected.len());
                }
                collected.extend_from_slice(&data);
            }
        }
        Ok(Bytes::from(collected))
    };
    let bytes = match tokio::time::timeout(timeout, collect).await {
        Err(_) => {
            return Err(json_error(
                StatusCode::REQUEST_TIMEOUT,
                format!("body not received within {timeout:?}"),
            ));
        }
        Ok(Err(response)) => return Err(response),
        Ok(Ok(bytes)) => bytes,
    };
    held.arrived();
    Ok((bytes, held))
}

/// A handler's body: read and charged already by [`admit`], so this only takes its bytes.
async fn read_body(body: Body) -> Result<Bytes, Response> {
    match body.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(json_error(
            StatusCode::BAD_REQUEST,
            format!("failed to read body: {error}"),
        )),
    }
}

async fn mutate(AxumState(app): AxumState<WebhookApp>, body: Body) -> Response {
    let metrics = &app.state.metrics;
    let bytes = match read_body(body).await {
        Ok(read) => read,
        Err(response) => {
            tracing::warn!(status = %response.status(), "rejected /mutate body");
            metrics.count_request("unknown", "none", Outcome::Error.as_str());
            return response;
        }
    };
    let started = Instant::now();
    let Some(policy) = app.state.policy() else {
        metrics.count_request("unknown", "none", Outcome::Error.as_str());
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid policy is loaded yet".to_owned(),
        );
    };
    let request = match admission::parse_review(&bytes) {
        Ok(request) => request,
        Err(error) if let Some(refusal) = ResponseReview::refusing_unread(&error) => {
            tracing::warn!(%error, bytes = bytes.len(), "refused a /mutate request without reading it");
            metrics.count_request("unknown", "none", Outcome::Denied.as_str());
            return review_body(&refusal);
        }
        Err(error) => {
            tracing::warn!(%error, bytes = bytes.len(), "malformed /mutate request");
            metrics.count_request("unknown", "none", Outcome::Error.as_str());
            return json_error(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let uid = request.uid.clone();
    let (mut review, mut summary) = admission::review(request, &policy, &app.state.cluster_facts());
    if let Some(claim) = summary.quota_claim.take() {
        let decision = app
            .state
            .quotas
            .admit(&policy.quotas, &claim, summary.dry_run)
            .await;
        match &decision.confirmation {
            Confirmation::NotNeeded => {}
            Confirmation::Listed => Metrics::count_result(&metrics.quota_confirm, true),
            Confirmation::Failed(error) => {
                Metrics::count_result(&metrics.quota_confirm, false);
                tracing::warn!(%uid, %error, "could not confirm the application's pods with a LIST; decided on this replica's view");
            }
        }
        match &decision.room {
            Room::NotNeeded => {}
            Room::Held { conflicts } => {
                metrics.count_quota_room("held", 1);
                metrics.count_quota_room("conflict", u64::from(*conflicts));
            }
            Room::Read if !decision.admitted() => metrics.count_quota_room("refused", 1),
            // A dry run: read, nothing written.
            Room::Read => {}
            Room::Fallback(error) => {
                metrics.count_quota_room("fallback", 1);
                tracing::warn!(%uid, %error, "could not decide on the namespace's admissions in flight; decided on this replica's view");
            }
        }
        for violation in &decision.violations {
            metrics.count_quota_denial(&violation.quota, violation.scope.as_str());
        }
        admission::apply_quota_decision(&mut review, &mut summary, &decision);
    }
    let body = match review.to_json() {
        Ok(body) => body,
        Err(error) => {
            metrics.count_request(summary.operation, "none", Outcome::Error.as_str());
            return json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("failed to encode the response: {error}"),
            );
        }
    };
    let role = summary.role.map(|r| r.as_str()).unwrap_or("none");
    metrics.count_request(summary.operation, role, summary.outcome.as_str());
    for rule in &summary.applied_rules {
        metrics
            .rule_applied
            .get_or_create(&RuleLabels { rule: rule.clone() })
            .inc();
    }
    metrics
        .request_duration
        .observe(started.elapsed().as_secs_f64());
    match summary.outcome {
        Outcome::Denied => tracing::info!(
            %uid, namespace = %summary.namespace, pod = %summary.pod, role, dry_run = summary.dry_run,
            denial = summary.denial.as_deref().unwrap_or_default(), "denied"
        ),
        _ => tracing::debug!(
            %uid, namespace = %summary.namespace, pod = %summary.pod, role, operation = summary.operation,
            result = summary.outcome.as_str(), rules = %summary.applied_rules.join(","), "reviewed"
        ),
    }
    json_body(body)
}

/// The driver's configuration ConfigMap of a cluster-mode application: executor counts
/// lowered to fit the quotas (SPEC §5a). Everything else is allowed unchanged.
async fn mutate_spark_conf(AxumState(app): AxumState<WebhookApp>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let Some(policy) = app.state.policy() else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid policy is loaded yet".to_owned(),
        );
    };
    let request = match admission::parse_review_of(&bytes) {
        Ok(request) => request,
        Err(error) if let Some(refusal) = ResponseReview::refusing_unread(&error) => {
            tracing::warn!(%error, bytes = bytes.len(), "refused a request without reading it");
            return review_body(&refusal);
        }
        Err(error) => {
            tracing::warn!(%error, "malformed /mutate-spark-conf request");
            return json_error(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let reads = ServerReads {
        state: &app.state,
        gang_deadline: Instant::now() + crate::gang::BUDGET,
    };
    let applied = match admission::spark_conf::review(request, &policy, &reads).await {
        Reviewed::Applied(applied) => applied,
        Reviewed::Unchanged(unchanged) => {
            tracing::debug!(reason = %unchanged.reason, "ConfigMap allowed unchanged");
            return review_body(&unchanged.review());
        }
        Reviewed::NothingToDo(review) => return review_body(&review),
    };
    let AppliedTo {
        review,
        answered,
        namespace,
        name,
        app: spark_app,
        driver,
        dry_run,
        namespace_unread,
        ..
    } = *applied;
    if let Some(why) = &namespace_unread {
        tracing::warn!(%namespace, why, "could not read the namespace for gang admission; decided on per-application limits only");
    }
    let metrics = &app.state.metrics;
    for written in &answered.written {
        metrics.count_spark_conf_set(&written.rule);
    }
    let fitted = &answered.fitted;
    // A dry run stores nothing, so it grants nothing to remember.
    if let (false, Some((_, uid)), Some(granted)) = (dry_run, &driver, answered.granted) {
        app.state
            .gang_reads
            .remember(uid, crate::quota::gang::Decided::Granted(granted));
    }
    if let Some(why) = &answered.gang_refusal {
        metrics.count_spark_conf_refused("gang");
        tracing::info!(%namespace, configmap = %name, app = %spark_app, why = %why, "refused a Spark submission: no room for its minimum executors");
    } else if answered.refused() {
        metrics.count_spark_conf_refused("max");
        let over: Vec<String> = answered.over.iter().map(ToString::to_string).collect();
        tracing::info!(%namespace, configmap = %name, app = %spark_app, over = %over.join("; "), "refused a Spark submission over a sparkConf max");
    } else if let (false, Some(fit)) = (fitted.changes.is_empty(), &fitted.fit) {
        metrics.count_spark_conf_lowered(&fit.quota);
        let changes: Vec<String> = fitted.changes.iter().map(ToString::to_string).collect();
        tracing::info!(%namespace, configmap = %name, app = %spark_app, quota = %fit.quota, limit = %fit.limit, changes = %changes.join(", "), "lowered a Spark driver's executor counts to fit its quota");
    }
    for warning in &answered.warnings {
        tracing::info!(%namespace, configmap = %name, app = %spark_app, "{warning}");
    }
    if let (false, Some((pod, uid))) = (dry_run, &driver) {
        for (warning, reason, note) in driver_events(&review, &answered) {
            app.state.driver_events.record(crate::events::DriverEvent {
                namespace: namespace.clone(),
                pod: pod.clone(),
                uid: uid.clone(),
                warning,
                reason,
                note,
            });
        }
    }
    review_body(&review)
}

/// What the server reads from the cluster for a driver ConfigMap: through the API, within the
/// bounds of each reader, logged and measured.
struct ServerReads<'a> {
    state: &'a State,
    /// When the review's reads and writes of its namespace must be done by.
    gang_deadline: Instant,
}

impl ClusterReads for ServerReads<'_> {
    fn application<'a>(
        &'a self,
        namespace: &'a str,
        app: &'a str,
    ) -> BoxFuture<'a, (AppTotals, Option<String>)> {
        Box::pin(async move {
            let (totals, app_name, confirmation) =
                self.state.quotas.application(namespace, app).await;
            if let Confirmation::Failed(error) = &confirmation {
                tracing::warn!(%error, app, "could not list the application's pods; fitting its configuration to this replica's view");
            }
            (totals, app_name)
        })
    }

    fn executor_template<'a>(
        &'a self,
        namespace: &'a str,
        driver: &'a str,
        uid: &'a str,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let read = self
                .state
                .executor_templates
                .fetch(namespace, driver, uid)
                .await
                .map_err(|error| error.to_string());
            if let Err(why) = &read {
                tracing::warn!(
                    namespace,
                    driver,
                    why,
                    "could not read the executor pod template; sizing executors from the Spark container alone"
                );
            }
            read
        })
    }

    fn namespace<'a>(
        &'a self,
        namespace: &'a str,
        own: &'a str,
    ) -> BoxFuture<'a, Result<NamespaceView, String>> {
        Box::pin(async move {
            let expiry = self.state.quotas.options().gang_expiry;
            let reading = Instant::now();
            let read = self
                .state
                .gang_reads
                .read(namespace, own, expiry, self.gang_deadline)
                .await;
            self.state
                .metrics
                .gang_read_duration
                .observe(reading.elapsed().as_secs_f64());
            read.map_err(|error| error.to_string())
        })
    }

    fn reserve<'a>(
        &'a self,
        namespace: &'a str,
        view: &'a NamespaceView,
        write: &'a Reservations,
    ) -> BoxFuture<'a, Reserved> {
        Box::pin(async move {
            let expiry = self.state.quotas.options().gang_expiry;
            let written = self
                .state
                .gang_reads
                .reserve(namespace, view, write, expiry, self.gang_deadline)
                .await;
            let (outcome, reserved) = match written {
                Ok(()) => ("held", Reserved::Held),
                Err(crate::gang::Reserve::Conflict(now)) => ("conflict", Reserved::Conflict(now)),
                Err(crate::gang::Reserve::Failed(error)) => {
                    tracing::warn!(%error, namespace, "could not write the namespace's gang reservations; the submission goes unreserved, counted by its ConfigMap's record once stored");
                    ("failed", Reserved::Failed(error.to_string()))
                }
            };
            self.state.metrics.count_gang_reservation(outcome);
            reserved
        })
    }
}

/// The Events a driver ConfigMap's answer records on its driver pod (SPEC §5b): the refusal,
/// or each kind of change made to the configuration.
fn driver_events(
    review: &ResponseReview,
    answered: &admission::spark_conf::Answered,
) -> Vec<(bool, &'static str, String)> {
    if answered.refused() {
        return review
            .response
            .status
            .as_ref()
            .map(|status| (true, "SubmissionRefused", status.message.clone()))
            .into_iter()
            .collect();
    }
    let mut events = Vec::new();
    if !answered.written.is_empty() {
        events.push((
            false,
            "SparkConfSet",
            format!(
                "spark-admission set {}",
                admission::spark_conf::written_record(&answered.written)
            ),
        ));
    }
    if let (false, Some(fit)) = (answered.fitted.changes.is_empty(), &answered.fitted.fit) {
        let changes: Vec<String> = answered
            .fitted
            .changes
            .iter()
            .map(ToString::to_string)
            .collect();
        events.push((
            false,
            "SparkConfLowered",
            format!(
                "spark-admission lowered {} to fit quota {} ({})",
                changes.join(", "),
                fit.quota,
                fit.limit
            ),
        ));
    }
    events
}

/// The answer's bytes, or a 500 if it cannot be encoded.
fn review_body(review: &ResponseReview) -> Response {
    match review.to_json() {
        Ok(body) => json_body(body),
        Err(error) => json_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("failed to encode the response: {error}"),
        ),
    }
}

async fn validate_policy(AxumState(app): AxumState<WebhookApp>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(read) => read,
        Err(response) => return response,
    };
    let request = match admission::parse_review_of(&bytes) {
        Ok(request) => request,
        Err(error) if let Some(refusal) = ResponseReview::refusing_unread(&error) => {
            tracing::warn!(%error, bytes = bytes.len(), "refused a request without reading it");
            return review_body(&refusal);
        }
        Err(error) => {
            tracing::warn!(%error, "malformed /validate-policy request");
            return json_error(StatusCode::BAD_REQUEST, error.to_string());
        }
    };
    let (review, outcome) = admission::validate_policy(request, &app.policy_configmap);
    if outcome == Outcome::Denied {
        tracing::info!("refused an invalid policy ConfigMap");
    }
    review_body(&review)
}

async fn readyz(AxumState(state): AxumState<Arc<State>>) -> Response {
    if state.is_ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else if state.policy().is_none() && state.staged_policy_hash().is_some() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "the policy has quotas: waiting for the pod watch to list every Spark pod\n",
        )
            .into_response()
    } else if state.policy().is_none() {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid policy loaded\n").into_response()
    } else if state.is_awaiting_cluster_facts() && !state.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first listing of PriorityClasses (the global default)\n",
        )
            .into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    }
}

async fn metrics(AxumState(state): AxumState<Arc<State>>) -> Response {
    state.update_quota_usage();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Metrics::encode(&state.metrics),
    )
        .into_response()
}
