//! What a rule sets and caps in a cluster-mode application's Spark configuration (SPEC §5b),
//! and the settings a `max` can compare, read as Spark itself reads them.
//!
//! The values compared are the ones Spark acts on: a size is read by the rules of Spark's
//! `bytesConf` (suffixes `b`, `k`, `m`, `g`, `t`, `p`, powers of 1024, a bare number in the
//! setting's own unit), a count by `Integer.parseInt` after a trim, a core count of the
//! Kubernetes settings as a Kubernetes CPU quantity. A setting left unset is compared at
//! Spark's default where Spark has one that sizes the application, so a cap cannot be passed by
//! leaving the setting out. This module is below every other: `sparkconf` sizes executors with
//! the same size reader.

use std::collections::BTreeMap;

use super::{Quantity, Template};

/// A rule's `sparkConf`.
#[derive(Debug, Clone, Default)]
pub struct SparkConfRule {
    /// Settings written into the application's configuration, under the rule's mode; values
    /// are §4 templates.
    pub set: BTreeMap<String, Template>,
    /// Caps: a submission above any of them is refused.
    pub max: Vec<SparkMax>,
}

/// One cap of `sparkConf.max`.
#[derive(Debug, Clone)]
pub struct SparkMax {
    /// The setting capped, with how Spark reads it.
    pub setting: &'static Setting,
    /// The cap as Spark reads it ([`Reading::read`]).
    pub limit: i64,
    /// The cap as written in the policy, for messages.
    pub text: String,
}

/// How Spark reads a setting's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// A size in this unit (`bytesConf(unit)`); the value read is in the unit, truncated.
    Size(SizeUnit),
    /// A whole number (`intConf`).
    Count,
    /// A Kubernetes CPU quantity (`spark.kubernetes.*.request.cores`); the value is in
    /// nano-cores.
    Cpu,
}

/// What an unset setting is compared as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unset {
    /// Spark's default, always.
    Default(&'static str),
    /// Spark's default when dynamic allocation is off; not compared when it is on.
    DefaultWithoutDynamicAllocation(&'static str),
    /// Unbounded when dynamic allocation is on (so over any cap); not compared when it is off.
    UnboundedWithDynamicAllocation,
    /// Nothing that sizes the application: not compared.
    NotCompared,
}

/// A setting `sparkConf.max` can cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The Spark key.
    pub key: &'static str,
    /// How Spark reads it.
    pub reading: Reading,
    /// What an unset value is compared as.
    pub unset: Unset,
}

/// Every setting a `max` may name: the sizes and counts that decide what an application asks
/// of the cluster.
pub const CAPPABLE: &[Setting] = &[
    size("spark.executor.memory", SizeUnit::MiB, Unset::Default("1g")),
    size("spark.driver.memory", SizeUnit::MiB, Unset::Default("1g")),
    size(
        "spark.executor.memoryOverhead",
        SizeUnit::MiB,
        Unset::NotCompared,
    ),
    size(
        "spark.driver.memoryOverhead",
        SizeUnit::MiB,
        Unset::NotCompared,
    ),
    size(
        "spark.executor.pyspark.memory",
        SizeUnit::MiB,
        Unset::NotCompared,
    ),
    size(
        "spark.memory.offHeap.size",
        SizeUnit::Byte,
        Unset::NotCompared,
    ),
    count("spark.executor.cores", Unset::Default("1")),
    count("spark.driver.cores", Unset::Default("1")),
    count("spark.task.cpus", Unset::Default("1")),
    count(
        "spark.executor.instances",
        Unset::DefaultWithoutDynamicAllocation("2"),
    ),
    count(
        "spark.dynamicAllocation.maxExecutors",
        Unset::UnboundedWithDynamicAllocation,
    ),
    count("spark.dynamicAllocation.minExecutors", Unset::NotCompared),
    count(
        "spark.dynamicAllocation.initialExecutors",
        Unset::NotCompared,
    ),
    cpu("spark.kubernetes.executor.request.cores"),
    cpu("spark.kubernetes.executor.limit.cores"),
    cpu("spark.kubernetes.driver.request.cores"),
    cpu("spark.kubernetes.driver.limit.cores"),
];

const fn size(key: &'static str, unit: SizeUnit, unset: Unset) -> Setting {
    Setting {
        key,
        reading: Reading::Size(unit),
        unset,
    }
}

const fn count(key: &'static str, unset: Unset) -> Setting {
    Setting {
        key,
        reading: Reading::Count,
        unset,
    }
}

const fn cpu(key: &'static str) -> Setting {
    Setting {
        key,
        reading: Reading::Cpu,
        unset: Unset::NotCompared,
    }
}

/// The cappable setting named `key`.
pub fn cappable(key: &str) -> Option<&'static Setting> {
    CAPPABLE.iter().find(|setting| setting.key == key)
}

/// Settings a rule may not `set`, and why. The driver pod exists before its configuration is
/// admitted, so what only shapes the driver pod no longer changes it (and changing the
/// driver's memory would give its JVM a heap its pod has no room for); the rest identify the
/// application, its namespace and its driver, which Spark and the quotas rely on.
pub fn not_settable(key: &str) -> Option<&'static str> {
    const DRIVER_POD: &str = "the driver pod exists before its configuration is admitted, so \
        this setting no longer shapes it (and a larger driver heap would not fit its pod); set \
        the driver pod with the rule's pod fields (resources.driver, labels, annotations) instead";
    const IDENTITY: &str = "it identifies the application, its namespace or its driver, which \
        Spark and the quotas rely on; a policy cannot change it";
    const DRIVER_POD_KEYS: &[&str] = &[
        "spark.driver.memory",
        "spark.driver.memoryOverhead",
        "spark.driver.memoryOverheadFactor",
        "spark.driver.minMemoryOverhead",
        "spark.driver.cores",
        "spark.kubernetes.driver.request.cores",
        "spark.kubernetes.driver.limit.cores",
        "spark.kubernetes.driver.podTemplateFile",
        "spark.kubernetes.driver.container.image",
        "spark.kubernetes.authenticate.driver.serviceAccountName",
    ];
    const DRIVER_POD_PREFIXES: &[&str] = &[
        "spark.kubernetes.driver.label.",
        "spark.kubernetes.driver.annotation.",
        "spark.kubernetes.driver.secrets.",
        "spark.kubernetes.driver.secretKeyRef.",
        "spark.kubernetes.driver.node.selector.",
        "spark.kubernetes.driver.volumes.",
    ];
    const IDENTITY_KEYS: &[&str] = &[
        "spark.app.id",
        "spark.app.name",
        "spark.app.submitTime",
        "spark.master",
        "spark.submit.deployMode",
        "spark.kubernetes.namespace",
        "spark.kubernetes.driver.pod.name",
        "spark.kubernetes.submitInDriver",
        "spark.kubernetes.executor.podNamePrefix",
        "spark.driver.host",
        "spark.driver.port",
        "spark.driver.blockManager.port",
    ];
    if DRIVER_POD_KEYS.contains(&key) || DRIVER_POD_PREFIXES.iter().any(|p| key.starts_with(p)) {
        Some(DRIVER_POD)
    } else if IDENTITY_KEYS.contains(&key) {
        Some(IDENTITY)
    } else {
        None
    }
}

impl Reading {
    /// The value Spark acts on, or what Spark accepts there.
    pub fn read(self, text: &str) -> Result<i64, String> {
        match self {
            Reading::Size(unit) => read_size(text, unit).ok_or_else(|| {
                format!(
                    "a whole number of {} or a whole number with a unit b, k, kb, m, mb, g, gb, \
                     t, tb, p or pb (powers of 1024), at most 2048t, with no sign or fraction",
                    unit.name()
                )
            }),
            Reading::Count => java_trim(text)
                .parse::<i32>()
                .map(i64::from)
                .map_err(|_| "a whole number (Java's int)".to_owned()),
            Reading::Cpu => Quantity::parse(java_trim(text))
                .ok()
                .and_then(|q| i64::try_from(q.nanos()).ok())
                .filter(|nanos| *nanos > 0)
                .ok_or_else(|| {
                    "a positive Kubernetes CPU quantity such as 2, 0.5 or 500m".to_owned()
                }),
        }
    }
}

/// The unit of a size in Spark's `ByteUnit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SizeUnit {
    /// Bytes.
    Byte,
    /// 2^10 bytes.
    KiB,
    /// 2^20 bytes.
    MiB,
    /// 2^30 bytes.
    GiB,
    /// 2^40 bytes.
    TiB,
    /// 2^50 bytes.
    PiB,
}

impl SizeUnit {
    /// Bytes in one of it.
    pub fn bytes(self) -> i64 {
        match self {
            SizeUnit::Byte => 1,
            SizeUnit::KiB => 1 << 10,
            SizeUnit::MiB => 1 << 20,
            SizeUnit::GiB => 1 << 30,
            SizeUnit::TiB => 1 << 40,
            SizeUnit::PiB => 1 << 50,
        }
    }

    /// Its name in messages.
    pub fn name(self) -> &'static str {
        match self {
            SizeUnit::Byte => "bytes",
            SizeUnit::KiB => "KiB",
            SizeUnit::MiB => "MiB",
            SizeUnit::GiB => "GiB",
            SizeUnit::TiB => "TiB",
            SizeUnit::PiB => "PiB",
        }
    }

    fn from_suffix(suffix: &str) -> Option<Self> {
        Some(match suffix {
            "b" => SizeUnit::Byte,
            "k" | "kb" => SizeUnit::KiB,
            "m" | "mb" => SizeUnit::MiB,
            "g" | "gb" => SizeUnit::GiB,
            "t" | "tb" => SizeUnit::TiB,
            "p" | "pb" => SizeUnit::PiB,
            _ => return None,
        })
    }
}

/// Reads a size in `unit` as Spark's `bytesConf(unit)` does (`JavaUtils.byteStringAs`): a
/// trimmed, case-insensitive whole number with an optional suffix, converted by multiplying up
/// or dividing down with truncation. `None` where Spark throws.
///
/// Sizes are capped at 2^31 MiB (2 PiB), far above any pod, so that sums of them never
/// overflow.
pub fn read_size(text: &str, unit: SizeUnit) -> Option<i64> {
    let lower = java_trim(text).to_ascii_lowercase();
    let digits_end = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (digits, suffix) = lower.split_at(digits_end);
    if digits.is_empty() {
        return None;
    }
    let from = if suffix.is_empty() {
        unit
    } else {
        SizeUnit::from_suffix(suffix)?
    };
    let number: i64 = digits.parse().ok()?;
    let converted = if from.bytes() >= unit.bytes() {
        number.checked_mul(from.bytes() / unit.bytes())
    } else {
        Some(number / (unit.bytes() / from.bytes()))
    };
    let cap = (1_i64 << 31) * (SizeUnit::MiB.bytes() / unit.bytes()).max(1);
    converted.filter(|value| *value <= cap)
}

/// Java's `String.trim`: strips every character up to U+0020, line breaks included.
pub fn java_trim(text: &str) -> &str {
    text.trim_matches(|c: char| c <= ' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_spark_reads_them_in_the_settings_unit() {
        // Spark's JavaUtils.byteStringAs, by hand: binary suffixes, a bare number in the
        // setting's unit, smaller units truncated.
        let mib = |text| read_size(text, SizeUnit::MiB);
        assert_eq!(mib("512m"), Some(512));
        assert_eq!(mib("4g"), Some(4096));
        assert_eq!(mib("1t"), Some(1 << 20));
        assert_eq!(mib("4096"), Some(4096));
        assert_eq!(mib(" 2G "), Some(2048));
        assert_eq!(mib("1536k"), Some(1));
        assert_eq!(mib("2gb"), Some(2048));
        assert_eq!(read_size("4096", SizeUnit::Byte), Some(4096));
        assert_eq!(read_size("1k", SizeUnit::Byte), Some(1024));
        for refused in ["", "g", "1.5g", "-1g", "+1g", "4 g", "4x", "4096t"] {
            assert_eq!(mib(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn counts_and_cores_read_as_spark_reads_them() {
        assert_eq!(Reading::Count.read(" 8 "), Ok(8));
        assert!(Reading::Count.read("8.0").is_err());
        assert!(Reading::Count.read("3000000000").is_err(), "over an int");
        assert_eq!(Reading::Cpu.read("500m"), Ok(500_000_000));
        assert_eq!(Reading::Cpu.read("2"), Ok(2_000_000_000));
        assert!(Reading::Cpu.read("0").is_err());
    }

    #[test]
    fn every_cappable_setting_has_a_readable_default() {
        for setting in CAPPABLE {
            if let Unset::Default(text) | Unset::DefaultWithoutDynamicAllocation(text) =
                setting.unset
            {
                assert!(setting.reading.read(text).is_ok(), "{}", setting.key);
            }
            assert!(not_settable(setting.key).is_none() || setting.key.contains("driver"));
        }
    }
}
