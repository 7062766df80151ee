//! Spark's application configuration as cluster-mode spark-submit hands it to the driver, and
//! the executor size Spark derives from it.
//!
//! In cluster mode spark-submit (directly or through the Spark Operator) creates the driver pod,
//! then a ConfigMap `spark-drv-<id>-conf-map` owned by it. Its key `spark.properties` holds the
//! whole configuration as Java properties, written by `Properties.store`, which the driver reads
//! at start; the driver then sizes every executor pod from it. [`Properties`] reads and edits that
//! text without disturbing the rest of it; [`executor_size`] computes the requests and limits
//! Spark will give each executor, so that the number of executors can be fitted to a quota
//! before the driver asks for them.
//!
//! Everything here is a pure function of text: no I/O, no Kubernetes API, no clock.

pub mod lower;
mod properties;
pub mod rules;
mod sizing;

pub use lower::{Change, lower_executor_counts, minimum_executors};
pub use properties::Properties;
pub use sizing::{ExecutorSize, MemoryParts, Settings, executor_size, keys};

/// Why a `spark.properties` text or a Spark setting could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The text breaks the `.properties` grammar where Java itself refuses it (a malformed
    /// `\uXXXX` escape), or holds something Java accepts but that is not text.
    #[error("line {line}: {problem}")]
    Escape {
        /// 1-based physical line where the escape starts.
        line: usize,
        /// What is wrong, in words.
        problem: String,
    },
    /// A text too large to index (offsets are 32 bits); a review is at most 7 MiB.
    #[error("the text would be {bytes} bytes; at most 4 GiB can be read and edited")]
    TooLarge {
        /// Its size.
        bytes: usize,
    },
    /// A setting Spark would reject, or whose value cannot size an executor.
    #[error("{key}={value:?} is not allowed: {allowed}")]
    Setting {
        /// The Spark setting, for example `spark.executor.memory`.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What Spark accepts there.
        allowed: String,
    },
}

/// Result of this module's fallible functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
