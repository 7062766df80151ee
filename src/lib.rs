//! spark-admission: a Kubernetes mutating admission webhook that applies one cluster policy to
//! every Apache Spark driver and executor pod at creation.
//!
//! The data flow: [`policy`] (model, parse, validate) → [`engine`] (pure: pod + policy →
//! desired pod, warnings, denial) → [`patch`] (diff to JSON Patch) → [`admission`] (review in,
//! review out) → `server` (TLS, routes, shutdown).

pub mod admission;
pub mod cli;
pub mod engine;
pub mod patch;
pub mod policy;

pub use policy::Policy;
