//! spark-admission: a Kubernetes mutating admission webhook that applies one cluster policy to
//! every Apache Spark driver and executor pod at creation.
//!
//! The data flow: [`policy`] (model, parse, validate) → [`engine`] (pure: pod + policy →
//! desired pod, warnings, denial) → [`patch`] (diff to JSON Patch) → [`admission`] (review in,
//! review out) → [`server`] (TLS, routes, reload, shutdown), fed by [`source`] (where the policy
//! comes from) through the shared [`state`], which also holds what [`cluster`] learns from the
//! cluster for the engine (the global default PriorityClass). Beside the pod path, [`sparkconf`] reads and edits
//! the `spark.properties` of a driver's ConfigMap and sizes executors as Spark does (§5a);
//! [`suite`] runs policy test suites through the same review path.

pub mod admission;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod engine;
pub mod events;
pub mod files;
pub mod gang;
pub mod lean;
pub mod metrics;
pub mod patch;
pub mod policy;
pub mod quota;
pub mod server;
pub mod source;
pub mod sparkconf;
pub mod state;
pub mod suite;
pub mod templates;

pub use policy::Policy;
