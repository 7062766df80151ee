//! The executor pod size Spark 4.3 computes from its configuration.
//!
//! Spark's Kubernetes backend sizes every executor of the default resource profile the same way
//! (`BasicExecutorFeatureStep` with `ResourceProfile.getResourcesForClusterManager`):
//!
//! - memory request = memory limit = `heap + overhead + off-heap + pyspark` MiB, written `<n>Mi`;
//! - heap: `spark.executor.memory`, default `1g`; the driver refuses to start below 450 MiB,
//!   and for that check reads a number without a unit as bytes;
//! - overhead: `spark.executor.memoryOverhead` if set, else
//!   `max((int)(factor * heap), spark.executor.minMemoryOverhead)`, the minimum defaulting to
//!   `384m`; the factor is `spark.executor.memoryOverheadFactor` if set, else the deprecated
//!   `spark.kubernetes.memoryOverheadFactor`, default `0.1`. In cluster mode spark-submit always
//!   writes the latter into the driver's configuration: `0.4` for a Python or R application
//!   unless the user set it, so the driver's `spark.properties` already carries the non-JVM
//!   default and nothing here needs to guess the application's language;
//! - off-heap: `spark.memory.offHeap.size` (bytes by default, truncated to MiB), only when
//!   `spark.memory.offHeap.enabled` (or its old name `spark.unsafe.offHeap`) is true;
//! - pyspark: `spark.executor.pyspark.memory`, only when `spark.kubernetes.resource.type` is
//!   `python` (set by spark-submit in cluster mode; absent in client mode, where Spark adds
//!   nothing);
//! - CPU request: `spark.kubernetes.executor.request.cores` as written, else
//!   `spark.executor.cores` (default 1); CPU limit: `spark.kubernetes.executor.limit.cores`, else
//!   none.
//!
//! Sizes are read as Spark's `JavaUtils.byteStringAs` reads them: a whole number with an
//! optional case-insensitive unit `b k kb m mb g gb t tb p pb` (powers of 1024), the setting's
//! own unit when there is none, and truncation when converting to a larger unit (`512k` of heap
//! is 0 MiB).
//!
//! Not modelled: custom resource profiles (stage-level scheduling), which Spark sizes from the
//! profile, not from this configuration; and an executor pod template, whose other containers
//! and whose CPU limit Spark leaves in place. This module performs no I/O.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash};

use super::{Error, Properties, Result};
use crate::policy::{Quantity, Reading, SizeUnit, java_trim};

/// The Spark settings this module reads.
pub mod keys {
    /// Executor JVM heap; MiB when no unit is given; default `1g`.
    pub const EXECUTOR_MEMORY: &str = "spark.executor.memory";
    /// Non-heap memory per executor; MiB when no unit is given; overrides the factor.
    pub const EXECUTOR_MEMORY_OVERHEAD: &str = "spark.executor.memoryOverhead";
    /// Overhead as a fraction of the heap (Spark 3.3+); must be greater than 0.
    pub const EXECUTOR_MEMORY_OVERHEAD_FACTOR: &str = "spark.executor.memoryOverheadFactor";
    /// Lower bound of a factor-derived overhead (Spark 4.0+); MiB when no unit; default `384m`.
    pub const EXECUTOR_MIN_MEMORY_OVERHEAD: &str = "spark.executor.minMemoryOverhead";
    /// The deprecated Kubernetes-wide overhead factor, used when the executor's own is unset.
    pub const KUBERNETES_MEMORY_OVERHEAD_FACTOR: &str = "spark.kubernetes.memoryOverheadFactor";
    /// Memory for the Python workers, added for Python applications only; MiB when no unit.
    pub const PYSPARK_EXECUTOR_MEMORY: &str = "spark.executor.pyspark.memory";
    /// Whether off-heap memory is used (and so added to the pod).
    pub const MEMORY_OFFHEAP_ENABLED: &str = "spark.memory.offHeap.enabled";
    /// The old name of [`MEMORY_OFFHEAP_ENABLED`], read when that one is unset.
    pub const UNSAFE_OFFHEAP: &str = "spark.unsafe.offHeap";
    /// Off-heap memory; bytes when no unit is given; default 0.
    pub const MEMORY_OFFHEAP_SIZE: &str = "spark.memory.offHeap.size";
    /// The application's language as spark-submit recorded it: `java`, `python` or `r`.
    pub const APP_RESOURCE_TYPE: &str = "spark.kubernetes.resource.type";
    /// Task slots per executor, a whole number; default 1.
    pub const EXECUTOR_CORES: &str = "spark.executor.cores";
    /// The executor's CPU request as a Kubernetes quantity, instead of the cores.
    pub const KUBERNETES_EXECUTOR_REQUEST_CORES: &str = "spark.kubernetes.executor.request.cores";
    /// The executor's CPU limit as a Kubernetes quantity; none by default.
    pub const KUBERNETES_EXECUTOR_LIMIT_CORES: &str = "spark.kubernetes.executor.limit.cores";
}

use keys::*;

/// A source of Spark settings: a parsed `spark.properties`, or a plain map (a SparkApplication's
/// `sparkConf`, a test).
pub trait Settings {
    /// The value of `key`, if set.
    fn setting(&self, key: &str) -> Option<&str>;
}

impl Settings for Properties {
    fn setting(&self, key: &str) -> Option<&str> {
        self.get(key)
    }
}

impl<K, V> Settings for BTreeMap<K, V>
where
    K: Borrow<str> + Ord,
    V: AsRef<str>,
{
    fn setting(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

impl<K, V, S> Settings for HashMap<K, V, S>
where
    K: Borrow<str> + Hash + Eq,
    V: AsRef<str>,
    S: BuildHasher,
{
    fn setting(&self, key: &str) -> Option<&str> {
        self.get(key).map(AsRef::as_ref)
    }
}

/// The resources Spark gives the Spark container of each executor pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecutorSize {
    /// `resources.requests.cpu`.
    pub cpu_request: Quantity,
    /// `resources.limits.cpu`; Spark sets none unless asked.
    pub cpu_limit: Option<Quantity>,
    /// `resources.requests.memory`, equal to `resources.limits.memory`, as Spark writes it
    /// (`<n>Mi`).
    pub memory: Quantity,
    /// What the memory is made of, for messages.
    pub memory_parts: MemoryParts,
}

/// The parts of an executor's memory, in MiB, as Spark adds them up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryParts {
    /// JVM heap (`spark.executor.memory`).
    pub heap_mib: i64,
    /// Non-heap overhead, set or derived from the factor.
    pub overhead_mib: i64,
    /// Off-heap memory; 0 unless enabled.
    pub off_heap_mib: i64,
    /// Python worker memory; 0 unless a Python application sets it.
    pub pyspark_mib: i64,
}

impl MemoryParts {
    /// The pod's memory in MiB. The parts are bounded when read, so the sum cannot overflow.
    pub fn total_mib(&self) -> i64 {
        self.heap_mib + self.overhead_mib + self.off_heap_mib + self.pyspark_mib
    }
}

/// Computes the size of the executor pods Spark will create for this configuration.
///
/// Every setting Spark would reject is an error naming the setting, the value and what is
/// allowed; so is a value Spark would accept but that cannot be a pod's size (a negative size).
///
/// ```
/// use std::collections::BTreeMap;
/// use spark_admission::policy::Quantity;
/// use spark_admission::sparkconf::executor_size;
///
/// let conf = BTreeMap::from([("spark.executor.memory", "2g"), ("spark.executor.cores", "2")]);
/// let size = executor_size(&conf)?;
/// assert_eq!(size.memory, Quantity::parse("2432Mi")?); // 2048 + max(204, 384)
/// assert_eq!(size.cpu_request, Quantity::parse("2")?);
/// assert_eq!(size.cpu_limit, None);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn executor_size(conf: &(impl Settings + ?Sized)) -> Result<ExecutorSize> {
    let memory_parts = memory_parts(conf)?;
    let memory = Quantity::mebibytes(memory_parts.total_mib());
    let cpu_request = match conf.setting(KUBERNETES_EXECUTOR_REQUEST_CORES) {
        Some(text) => cpu_quantity(KUBERNETES_EXECUTOR_REQUEST_CORES, text)?,
        None => Quantity::whole(i64::from(cores(conf)?)),
    };
    let cpu_limit = conf
        .setting(KUBERNETES_EXECUTOR_LIMIT_CORES)
        .map(|text| cpu_quantity(KUBERNETES_EXECUTOR_LIMIT_CORES, text))
        .transpose()?;
    Ok(ExecutorSize {
        cpu_request,
        cpu_limit,
        memory,
        memory_parts,
    })
}

/// The least `spark.executor.memory` Spark's driver starts with: 1.5 times the 300 MiB it
/// reserves (`UnifiedMemoryManager`, SPARK-12759).
const MIN_EXECUTOR_MEMORY_BYTES: i64 = 471_859_200;

fn memory_parts(conf: &(impl Settings + ?Sized)) -> Result<MemoryParts> {
    let heap_mib = size(conf, EXECUTOR_MEMORY, SizeUnit::MiB)?.unwrap_or(1024);
    // The driver checks the setting read as bytes, so a plain `1500` (1500 MiB for the pod)
    // is 1500 bytes there and the application never starts.
    if let Some(bytes) = size(conf, EXECUTOR_MEMORY, SizeUnit::Byte)?
        && bytes < MIN_EXECUTOR_MEMORY_BYTES
    {
        return Err(Error::Setting {
            key: EXECUTOR_MEMORY,
            value: conf.setting(EXECUTOR_MEMORY).unwrap_or_default().to_owned(),
            allowed: "at least 450m: Spark's driver refuses less, and for that check reads a \
                      number without a unit as bytes, so write the unit (for example 2g)"
                .to_owned(),
        });
    }
    let overhead_mib = match size(conf, EXECUTOR_MEMORY_OVERHEAD, SizeUnit::MiB)? {
        Some(set) => set,
        None => {
            let factor = overhead_factor(conf)?;
            let minimum = size(conf, EXECUTOR_MIN_MEMORY_OVERHEAD, SizeUnit::MiB)?.unwrap_or(384);
            // Spark's `(factor * heap).toInt`: truncated toward zero, saturating at i32::MAX,
            // which Rust's `as` does the same way.
            let derived = i64::from((factor * heap_mib as f64) as i32);
            derived.max(minimum)
        }
    };
    // Spark parses both sizes whether or not they are used, so a bad one fails either way.
    let off_heap_bytes = size(conf, MEMORY_OFFHEAP_SIZE, SizeUnit::Byte)?.unwrap_or(0);
    let pyspark_mib = size(conf, PYSPARK_EXECUTOR_MEMORY, SizeUnit::MiB)?.unwrap_or(0);
    let off_heap_mib = if off_heap_enabled(conf)? {
        let mib = off_heap_bytes / SizeUnit::MiB.bytes();
        if mib <= 0 {
            return Err(Error::Setting {
                key: MEMORY_OFFHEAP_SIZE,
                value: conf.setting(MEMORY_OFFHEAP_SIZE).unwrap_or("0").to_owned(),
                allowed: format!(
                    "at least 1 MiB (1m) when {MEMORY_OFFHEAP_ENABLED} is true; a number without \
                     a unit is bytes"
                ),
            });
        }
        mib
    } else {
        0
    };
    let pyspark_mib = if python_app(conf)? { pyspark_mib } else { 0 };
    Ok(MemoryParts {
        heap_mib,
        overhead_mib,
        off_heap_mib,
        pyspark_mib,
    })
}

/// The factor of a derived overhead: the executor's own, else the deprecated Kubernetes one.
fn overhead_factor(conf: &(impl Settings + ?Sized)) -> Result<f64> {
    if let Some(text) = conf.setting(EXECUTOR_MEMORY_OVERHEAD_FACTOR) {
        return java_double(text)
            .filter(|factor| *factor > 0.0)
            .ok_or_else(|| Error::Setting {
                key: EXECUTOR_MEMORY_OVERHEAD_FACTOR,
                value: text.to_owned(),
                allowed: "a decimal number greater than 0, such as 0.1".to_owned(),
            });
    }
    match conf.setting(KUBERNETES_MEMORY_OVERHEAD_FACTOR) {
        Some(text) => java_double(text)
            .filter(|factor| *factor >= 0.0)
            .ok_or_else(|| Error::Setting {
                key: KUBERNETES_MEMORY_OVERHEAD_FACTOR,
                value: text.to_owned(),
                allowed: "a decimal number of at least 0, such as 0.1 or 0.4".to_owned(),
            }),
        None => Ok(0.1),
    }
}

fn off_heap_enabled(conf: &(impl Settings + ?Sized)) -> Result<bool> {
    let (key, text) = match conf.setting(MEMORY_OFFHEAP_ENABLED) {
        Some(text) => (MEMORY_OFFHEAP_ENABLED, text),
        None => match conf.setting(UNSAFE_OFFHEAP) {
            Some(text) => (UNSAFE_OFFHEAP, text),
            None => return Ok(false),
        },
    };
    // Scala's `toBoolean` after a trim: true or false in any case.
    match java_trim(text).to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(Error::Setting {
            key,
            value: text.to_owned(),
            allowed: "true or false".to_owned(),
        }),
    }
}

/// Whether Spark treats the application as Python when sizing executors: only when
/// spark-submit recorded `python` (R applications get no pyspark memory).
fn python_app(conf: &(impl Settings + ?Sized)) -> Result<bool> {
    match conf.setting(APP_RESOURCE_TYPE) {
        None => Ok(false),
        Some(text) => match java_trim(text) {
            "python" => Ok(true),
            "java" | "r" => Ok(false),
            _ => Err(Error::Setting {
                key: APP_RESOURCE_TYPE,
                value: text.to_owned(),
                allowed: "java, python or r (spark-submit sets it)".to_owned(),
            }),
        },
    }
}

fn cores(conf: &(impl Settings + ?Sized)) -> Result<i32> {
    let Some(text) = conf.setting(EXECUTOR_CORES) else {
        return Ok(1);
    };
    // Java's Integer.parseInt after a trim; Spark refuses fewer cores than a task needs (1).
    java_trim(text)
        .parse::<i32>()
        .ok()
        .filter(|cores| *cores >= 1)
        .ok_or_else(|| Error::Setting {
            key: EXECUTOR_CORES,
            value: text.to_owned(),
            allowed: "a whole number of at least 1".to_owned(),
        })
}

fn cpu_quantity(key: &'static str, text: &str) -> Result<Quantity> {
    Quantity::parse(java_trim(text))
        .ok()
        .filter(|q| q.nanos() > 0)
        .ok_or_else(|| Error::Setting {
            key,
            value: text.to_owned(),
            allowed: "a positive Kubernetes CPU quantity such as 2, 0.5 or 500m".to_owned(),
        })
}

/// Reads a size setting in `unit`, as Spark's `bytesConf(unit)` does
/// ([`crate::policy::read_size`], which `sparkConf.max` compares with too).
fn size(conf: &(impl Settings + ?Sized), key: &'static str, unit: SizeUnit) -> Result<Option<i64>> {
    let Some(text) = conf.setting(key) else {
        return Ok(None);
    };
    Reading::Size(unit)
        .read(text)
        .map(Some)
        .map_err(|allowed| Error::Setting {
            key,
            value: text.to_owned(),
            allowed,
        })
}

/// A number as Java's `Double.parseDouble` reads the decimal forms people write: optional sign,
/// digits with an optional fraction, optional exponent, optional `d`/`f` suffix. NaN, Infinity
/// and hexadecimal forms, which Java also reads, are refused: no overhead factor needs them.
fn java_double(text: &str) -> Option<f64> {
    let trimmed = java_trim(text);
    let number = trimmed
        .strip_suffix(['d', 'D', 'f', 'F'])
        .unwrap_or(trimmed);
    let unsigned = number.strip_prefix(['+', '-']).unwrap_or(number);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        (!whole.is_empty() || !fraction.is_empty()) && digits(whole) && digits(fraction);
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    if !(mantissa_ok && exponent_ok) {
        return None;
    }
    number.parse::<f64>().ok().filter(|value| value.is_finite())
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Pod;

    use super::*;
    use crate::engine::spark_container_index;
    use crate::policy::Role;

    fn size_of(settings: &[(&str, &str)]) -> ExecutorSize {
        let conf: BTreeMap<&str, &str> = settings.iter().copied().collect();
        executor_size(&conf).unwrap_or_else(|e| panic!("{settings:?}: {e}"))
    }

    fn mib(settings: &[(&str, &str)]) -> i64 {
        size_of(settings).memory_parts.total_mib()
    }

    fn error(settings: &[(&str, &str)]) -> String {
        let conf: BTreeMap<&str, &str> = settings.iter().copied().collect();
        match executor_size(&conf) {
            Ok(size) => panic!("{settings:?} gave {size:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn q(text: &str) -> Quantity {
        Quantity::parse(text).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults_are_1g_heap_plus_the_384m_minimum_overhead_and_one_core() {
        let size = size_of(&[]);
        assert_eq!(size.memory, q("1408Mi"));
        assert_eq!(size.memory.as_str(), "1408Mi");
        assert_eq!(size.cpu_request, q("1"));
        assert_eq!(size.cpu_limit, None);
        assert_eq!(
            size.memory_parts,
            MemoryParts {
                heap_mib: 1024,
                overhead_mib: 384,
                off_heap_mib: 0,
                pyspark_mib: 0
            }
        );
    }

    #[test]
    fn overhead_is_a_tenth_of_the_heap_once_that_exceeds_the_minimum() {
        // 0.1 * 8192 = 819.2, truncated.
        assert_eq!(mib(&[(EXECUTOR_MEMORY, "8g")]), 8192 + 819);
        // 0.1 * 3840 is 384.00000000000006 in doubles: still 384.
        assert_eq!(mib(&[(EXECUTOR_MEMORY, "3840m")]), 3840 + 384);
    }

    #[test]
    fn executor_factor_wins_over_the_kubernetes_factor() {
        assert_eq!(
            mib(&[
                (EXECUTOR_MEMORY, "8g"),
                (EXECUTOR_MEMORY_OVERHEAD_FACTOR, "0.2"),
                (KUBERNETES_MEMORY_OVERHEAD_FACTOR, "0.4"),
            ]),
            8192 + 1638
        );
    }

    #[test]
    fn kubernetes_factor_applies_when_the_executor_factor_is_unset() {
        // What cluster-mode spark-submit writes for a Python application.
        assert_eq!(
            mib(&[
                (EXECUTOR_MEMORY, "2g"),
                (KUBERNETES_MEMORY_OVERHEAD_FACTOR, "0.4")
            ]),
            2048 + 819
        );
        assert_eq!(mib(&[(KUBERNETES_MEMORY_OVERHEAD_FACTOR, "0")]), 1024 + 384);
    }

    #[test]
    fn explicit_overhead_replaces_factor_and_minimum() {
        assert_eq!(
            mib(&[
                (EXECUTOR_MEMORY, "8g"),
                (EXECUTOR_MEMORY_OVERHEAD, "100"),
                (EXECUTOR_MEMORY_OVERHEAD_FACTOR, "0.5"),
                (EXECUTOR_MIN_MEMORY_OVERHEAD, "1g"),
            ]),
            8192 + 100
        );
    }

    #[test]
    fn min_memory_overhead_raises_a_small_derived_overhead() {
        assert_eq!(
            mib(&[
                (EXECUTOR_MEMORY, "2g"),
                (EXECUTOR_MIN_MEMORY_OVERHEAD, "1g")
            ]),
            2048 + 1024
        );
        assert_eq!(
            mib(&[
                (EXECUTOR_MEMORY, "8g"),
                (EXECUTOR_MIN_MEMORY_OVERHEAD, "100m")
            ]),
            8192 + 819
        );
    }

    #[test]
    fn pyspark_memory_is_added_for_python_applications_only() {
        let python = [
            (APP_RESOURCE_TYPE, "python"),
            (PYSPARK_EXECUTOR_MEMORY, "512m"),
        ];
        assert_eq!(mib(&python), 1024 + 384 + 512);
        assert_eq!(size_of(&python).memory_parts.pyspark_mib, 512);
        for other in [
            &[(APP_RESOURCE_TYPE, "java")][..],
            &[(APP_RESOURCE_TYPE, "r")],
            &[],
        ] {
            let mut settings = other.to_vec();
            settings.push((PYSPARK_EXECUTOR_MEMORY, "512m"));
            assert_eq!(mib(&settings), 1024 + 384, "{settings:?}");
        }
    }

    #[test]
    fn off_heap_memory_is_added_only_when_enabled() {
        assert_eq!(
            mib(&[
                (MEMORY_OFFHEAP_ENABLED, "true"),
                (MEMORY_OFFHEAP_SIZE, "1g")
            ]),
            1024 + 384 + 1024
        );
        assert_eq!(
            mib(&[
                (MEMORY_OFFHEAP_ENABLED, " TRUE "),
                (MEMORY_OFFHEAP_SIZE, "1048576")
            ]),
            1024 + 384 + 1
        );
        assert_eq!(
            mib(&[
                (MEMORY_OFFHEAP_ENABLED, "false"),
                (MEMORY_OFFHEAP_SIZE, "1g")
            ]),
            1024 + 384
        );
        assert_eq!(mib(&[(MEMORY_OFFHEAP_SIZE, "1g")]), 1024 + 384);
        assert_eq!(
            mib(&[(UNSAFE_OFFHEAP, "true"), (MEMORY_OFFHEAP_SIZE, "2g")]),
            1024 + 384 + 2048
        );
        // The new name wins over the old one.
        assert_eq!(
            mib(&[
                (MEMORY_OFFHEAP_ENABLED, "false"),
                (UNSAFE_OFFHEAP, "true"),
                (MEMORY_OFFHEAP_SIZE, "2g")
            ]),
            1024 + 384
        );
    }

    #[test]
    fn enabled_off_heap_needs_at_least_a_mebibyte() {
        for size in [None, Some("0"), Some("1500")] {
            let mut settings = vec![(MEMORY_OFFHEAP_ENABLED, "true")];
            settings.extend(size.map(|s| (MEMORY_OFFHEAP_SIZE, s)));
            let err = error(&settings);
            assert!(err.starts_with(MEMORY_OFFHEAP_SIZE), "{err}");
            assert!(err.contains("at least 1 MiB"), "{err}");
        }
    }

    #[test]
    fn executor_cores_are_the_cpu_request() {
        let size = size_of(&[(EXECUTOR_CORES, "3")]);
        assert_eq!(size.cpu_request, q("3"));
        assert_eq!(size.cpu_limit, None);
    }

    #[test]
    fn request_cores_override_executor_cores_for_the_cpu_request() {
        let size = size_of(&[
            (EXECUTOR_CORES, "4"),
            (KUBERNETES_EXECUTOR_REQUEST_CORES, "500m"),
        ]);
        assert_eq!(size.cpu_request, q("0.5"));
        assert_eq!(size.cpu_request.as_str(), "500m");
    }

    #[test]
    fn limit_cores_set_a_cpu_limit() {
        let size = size_of(&[
            (EXECUTOR_CORES, "2"),
            (KUBERNETES_EXECUTOR_LIMIT_CORES, "2.5"),
        ]);
        assert_eq!(size.cpu_request, q("2"));
        assert_eq!(size.cpu_limit, Some(q("2500m")));
    }

    #[test]
    fn sizes_are_read_as_spark_reads_them() {
        for (text, heap) in [
            ("2g", 2048),
            ("2G", 2048),
            ("2gb", 2048),
            ("3000m", 3000),
            ("3000MB", 3000),
            ("1t", 1 << 20),
            (" 4g ", 4096),
            ("1048576k", 1024),
            ("1073741824b", 1024),
            // A plain number is MiB for the pod (and just enough bytes for the driver).
            ("471859200", 471_859_200),
        ] {
            let parts = size_of(&[(EXECUTOR_MEMORY, text)]).memory_parts;
            assert_eq!(parts.heap_mib, heap, "{text}");
        }
        for (text, overhead) in [
            ("1500", 1500),
            ("1p", 1 << 30),
            // Converting down truncates: half a MiB is none.
            ("512k", 0),
        ] {
            let parts = size_of(&[(EXECUTOR_MEMORY_OVERHEAD, text)]).memory_parts;
            assert_eq!(parts.overhead_mib, overhead, "{text}");
        }
    }

    #[test]
    fn a_wrong_size_names_the_setting_the_value_and_the_syntax() {
        for bad in [
            "1.5g",
            "2x",
            "g",
            "",
            "-1g",
            "+1g",
            "2 g",
            "2gib",
            "99999999999999999999",
        ] {
            let err = error(&[(EXECUTOR_MEMORY, bad)]);
            assert!(
                err.starts_with(&format!("{EXECUTOR_MEMORY}={bad:?} is not allowed")),
                "{err}"
            );
            assert!(err.contains("b, k, kb, m, mb, g"), "{err}");
        }
        let err = error(&[(MEMORY_OFFHEAP_SIZE, "1.5g")]);
        assert!(err.contains("whole number of bytes"), "{err}");
    }

    #[test]
    fn executor_memory_under_450m_is_refused_as_the_driver_refuses_it() {
        // Captured: with spark.executor.memory=1500 the driver exited with "Executor memory
        // 1500 must be at least 471859200".
        for bad in ["1500", "449m", "256m", "512k", "0"] {
            let err = error(&[(EXECUTOR_MEMORY, bad)]);
            assert!(
                err.starts_with(&format!("{EXECUTOR_MEMORY}={bad:?}")),
                "{err}"
            );
            assert!(err.contains("at least 450m"), "{err}");
        }
        assert_eq!(mib(&[(EXECUTOR_MEMORY, "450m")]), 450 + 384);
    }

    #[test]
    fn an_absurd_size_is_refused_rather_than_overflowing() {
        let err = error(&[(EXECUTOR_MEMORY, "9000000p")]);
        assert!(err.contains("at most 2048t"), "{err}");
    }

    #[test]
    fn wrong_factors_cores_and_flags_are_named() {
        for (settings, key) in [
            (
                &[(EXECUTOR_MEMORY_OVERHEAD_FACTOR, "0")][..],
                EXECUTOR_MEMORY_OVERHEAD_FACTOR,
            ),
            (
                &[(EXECUTOR_MEMORY_OVERHEAD_FACTOR, "ten")],
                EXECUTOR_MEMORY_OVERHEAD_FACTOR,
            ),
            (
                &[(EXECUTOR_MEMORY_OVERHEAD_FACTOR, "NaN")],
                EXECUTOR_MEMORY_OVERHEAD_FACTOR,
            ),
            (
                &[(KUBERNETES_MEMORY_OVERHEAD_FACTOR, "-0.1")],
                KUBERNETES_MEMORY_OVERHEAD_FACTOR,
            ),
            (&[(EXECUTOR_CORES, "0")], EXECUTOR_CORES),
            (&[(EXECUTOR_CORES, "1.5")], EXECUTOR_CORES),
            (
                &[(KUBERNETES_EXECUTOR_REQUEST_CORES, "lots")],
                KUBERNETES_EXECUTOR_REQUEST_CORES,
            ),
            (
                &[(KUBERNETES_EXECUTOR_LIMIT_CORES, "-1")],
                KUBERNETES_EXECUTOR_LIMIT_CORES,
            ),
            (&[(MEMORY_OFFHEAP_ENABLED, "yes")], MEMORY_OFFHEAP_ENABLED),
            (&[(APP_RESOURCE_TYPE, "scala")], APP_RESOURCE_TYPE),
        ] {
            let err = error(settings);
            assert!(err.starts_with(&format!("{key}=")), "{err}");
            assert!(err.contains("is not allowed: "), "{err}");
        }
    }

    #[test]
    fn factors_take_the_decimal_forms_java_reads() {
        for text in ["0.2", ".2", "2e-1", "0.2d", "+0.2", " 0.2 "] {
            assert_eq!(
                mib(&[
                    (EXECUTOR_MEMORY, "8g"),
                    (EXECUTOR_MEMORY_OVERHEAD_FACTOR, text)
                ]),
                8192 + 1638,
                "{text}"
            );
        }
    }

    #[test]
    fn sizing_reads_a_spark_properties_text() {
        let conf = Properties::parse(
            "#Java properties built from Kubernetes config map with name: x-conf-map\n\
             #Mon Feb 06 21:26:11 KST 2023\n\
             spark.kubernetes.resource.type=python\n\
             spark.kubernetes.memoryOverheadFactor=0.4\n\
             spark.executor.memory=4g\n\
             spark.executor.cores=2\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let size = executor_size(&conf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(size.memory, q("5734Mi"));
        assert_eq!(size.cpu_request, q("2"));
    }

    /// The Spark container's resources in a stored pod: (cpu request, cpu limit, memory request,
    /// memory limit).
    fn spark_resources(
        pod: &Pod,
    ) -> (
        Option<Quantity>,
        Option<Quantity>,
        Option<Quantity>,
        Option<Quantity>,
    ) {
        let index = spark_container_index(pod, Role::Executor).expect("a Spark container");
        let container = &pod.spec.as_ref().expect("a spec").containers[index];
        let resources = container.resources.clone().unwrap_or_default();
        let get =
            |map: &Option<
                BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
            >,
             name: &str| { map.as_ref().and_then(|m| m.get(name)).map(|kq| q(&kq.0)) };
        (
            get(&resources.requests, "cpu"),
            get(&resources.limits, "cpu"),
            get(&resources.requests, "memory"),
            get(&resources.limits, "memory"),
        )
    }

    fn fixture(relative: &str) -> serde_json::Value {
        let path = format!(
            "{}/tests/fixtures/spark-4.3/{relative}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn every_captured_spark_4_3_executor_has_the_computed_size() {
        // Each file: the settings given to a real Spark 4.3 and the executor pod it created.
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/spark-4.3/sizing"
        );
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("sizing fixtures")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|name| name.ends_with(".json"))
            .collect();
        names.sort();
        assert!(names.len() >= 14, "{names:?}");
        for name in names {
            let captured = fixture(&format!("sizing/{name}"));
            let conf: BTreeMap<String, String> =
                serde_json::from_value(captured["conf"].clone()).expect("conf");
            let pod: Pod = serde_json::from_value(captured["pod"].clone()).expect("pod");
            let size = executor_size(&conf).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                spark_resources(&pod),
                (
                    Some(size.cpu_request),
                    size.cpu_limit,
                    Some(size.memory.clone()),
                    Some(size.memory)
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn real_cluster_mode_configmap_round_trips_and_sizes_a_python_executor() {
        // spark-submit --deploy-mode cluster of a PySpark application with
        // spark.executor.memory=2g: it recorded resource.type=python and the 0.4 factor.
        let review = fixture("cluster-mode/configmap-review.json");
        let text = review["request"]["object"]["data"]["spark.properties"]
            .as_str()
            .expect("spark.properties");
        let mut conf = Properties::parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conf.text(), text);
        assert_eq!(
            conf.get("spark.master"),
            Some("k8s://https://127.0.0.1:54013")
        );
        let size = executor_size(&conf).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(size.memory, q("2867Mi")); // 2048 + (int)(0.4 * 2048)
        assert_eq!(size.cpu_request, q("2"));

        conf.set("spark.executor.instances", "2").unwrap();
        let changed: Vec<(&str, &str)> = text
            .lines()
            .zip(conf.text().lines())
            .filter(|(old, new)| old != new)
            .collect();
        assert_eq!(
            changed,
            vec![("spark.executor.instances=6", "spark.executor.instances=2")]
        );
        assert_eq!(conf.text().len(), text.len());
    }

    #[test]
    fn rewriting_every_value_of_real_configmaps_reproduces_sparks_bytes() {
        // Properties.store wrote these; escaping each value again must give the same text, the
        // awkward ones included (leading space, = : # ! \\ tab, raw non-ASCII).
        for name in [
            "configmap-review.json",
            "configmap-review-dynamic.json",
            "configmap-review-escaping.json",
            "executor-configmap-review.json",
        ] {
            let review = fixture(&format!("cluster-mode/{name}"));
            let text = review["request"]["object"]["data"]["spark.properties"]
                .as_str()
                .expect("spark.properties");
            let mut conf = Properties::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
            let pairs: Vec<(String, String)> = conf
                .iter()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            for (key, value) in &pairs {
                conf.set(key, value).unwrap();
            }
            assert_eq!(conf.text(), text, "{name}");
        }
        let review = fixture("cluster-mode/configmap-review-escaping.json");
        let conf = Properties::parse(
            review["request"]["object"]["data"]["spark.properties"]
                .as_str()
                .expect("spark.properties"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            conf.get("spark.executorEnv.NOTE"),
            Some(" a=b c:d #e !f ü\\back\ttab")
        );
        assert_eq!(
            conf.get("spark.kubernetes.executor.annotation.example.com/url"),
            Some("https://example.com/a?b=c")
        );
    }

    #[test]
    fn real_spark_4_3_executor_matches_the_computed_size() {
        // tests/fixtures/spark-4.3/README: a client-mode PySpark application with
        // spark.executor.memory=2g and spark.executor.cores=2.
        let review = fixture("executor-review.json");
        let pod: Pod = serde_json::from_value(review["request"]["object"].clone()).expect("pod");
        let size = size_of(&[(EXECUTOR_MEMORY, "2g"), (EXECUTOR_CORES, "2")]);
        assert_eq!(
            spark_resources(&pod),
            (
                Some(size.cpu_request),
                size.cpu_limit,
                Some(size.memory.clone()),
                Some(size.memory)
            )
        );
    }
}
