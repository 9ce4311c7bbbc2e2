//! `charts:` in the spec: the Helm charts discovery renders, with the values the cluster
//! will use.
//!
//! Discovery can only find what a chart really deploys when it renders the chart with the
//! release's values; a chart named only in `discover:` renders with its defaults. Each entry:
//!
//! ```yaml
//! charts:
//!   - path: charts/ingress-nginx       # a chart folder or a packaged .tgz
//!     release: ingress                 # default: the chart's name
//!     namespace: ingress-nginx         # default: default
//!     values: [values/ingress.yaml]    # files, relative to the spec, later ones win
//!     set: {controller.replicaCount: 2}
//! ```
//!
//! Every value is parsed while the spec is read ([`ReleaseName`], [`Namespace`], [`SetKey`],
//! [`SetValue`]), so a bad entry is a spec error at its `file:line:column`, and the paths
//! must exist then. How the entries are used: `crate::discover::render`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

use super::values::SourcePath;

/// What is wrong with a value of a `charts:` entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A release name that Helm would refuse.
    #[error(
        "invalid release name `{0}`: at most 53 of a-z, 0-9 and `-`, starting and ending with a letter or digit"
    )]
    ReleaseName(String),
    /// A namespace that Kubernetes would refuse.
    #[error(
        "invalid namespace `{0}`: at most 63 of a-z, 0-9 and `-`, starting and ending with a letter or digit"
    )]
    Namespace(String),
    /// A `set` key that is not a dotted path of values.
    #[error("invalid `set` key `{0}`: a dotted path of values such as controller.replicaCount")]
    SetKey(String),
}

/// One `charts:` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "RawChartSpec")]
pub struct ChartSpec {
    /// The chart folder or `.tgz`, resolved against the spec's folder.
    pub path: PathBuf,
    /// The release name; `None`: the chart's name.
    pub release: Option<ReleaseName>,
    /// The release's namespace.
    pub namespace: Namespace,
    /// Values files, in order (later ones win), resolved against the spec's folder.
    pub values: Vec<PathBuf>,
    /// `--set` values, in spec order (applied after the files).
    pub set: Vec<(SetKey, SetValue)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChartSpec {
    path: SourcePath,
    #[serde(default)]
    release: Option<ReleaseName>,
    #[serde(default)]
    namespace: Option<Namespace>,
    #[serde(default)]
    values: Vec<SourcePath>,
    #[serde(default, deserialize_with = "set_map")]
    set: Vec<(SetKey, SetValue)>,
}

impl From<RawChartSpec> for ChartSpec {
    fn from(raw: RawChartSpec) -> ChartSpec {
        ChartSpec {
            path: raw.path.into_path_buf(),
            release: raw.release,
            namespace: raw.namespace.unwrap_or_default(),
            values: raw
                .values
                .into_iter()
                .map(SourcePath::into_path_buf)
                .collect(),
            set: raw.set,
        }
    }
}

/// Whether `text` is a DNS label of at most `max` characters (what Helm and Kubernetes want).
fn is_dns_label(text: &str, max: usize) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !text.is_empty()
        && text.len() <= max
        && text.chars().all(|c| alnum(c) || c == '-')
        && text.starts_with(alnum)
        && text.ends_with(alnum)
}

/// A Helm release name (`helm template RELEASE ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseName(String);

impl FromStr for ReleaseName {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if is_dns_label(text, 53) {
            Ok(ReleaseName(text.to_owned()))
        } else {
            Err(Error::ReleaseName(text.to_owned()))
        }
    }
}

impl ReleaseName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A Kubernetes namespace; the default is `default`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Default for Namespace {
    fn default() -> Namespace {
        Namespace("default".to_owned())
    }
}

impl FromStr for Namespace {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if is_dns_label(text, 63) {
            Ok(Namespace(text.to_owned()))
        } else {
            Err(Error::Namespace(text.to_owned()))
        }
    }
}

impl Namespace {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A key of `set:`: a dotted path of values (`controller.replicaCount`, `a.b[0].c`), which
/// Helm's `--set` syntax can carry unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetKey(String);

impl FromStr for SetKey {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        let ok = !text.is_empty()
            && text.split('.').all(|part| !part.is_empty())
            && !text.contains(['=', ',', ' ', '\\', '{', '}']);
        if ok {
            Ok(SetKey(text.to_owned()))
        } else {
            Err(Error::SetKey(text.to_owned()))
        }
    }
}

impl SetKey {
    /// The dotted path.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The keys of the path, with list indexes (`b[0]`) left in their key.
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &str> {
        self.0.split('.')
    }
}

/// A value of `set:`: a scalar (string, number, boolean, null), kept as its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetValue {
    /// The text, as Helm's `--set` reads it.
    pub text: String,
    /// Whether the spec wrote a string (`"2"`) rather than a number or boolean.
    pub is_string: bool,
}

impl SetValue {
    /// `K=V` for `helm template --set`: commas and backslashes escaped so that one entry is
    /// one value.
    pub fn to_set_arg(&self, key: &SetKey) -> String {
        let escaped = self.text.replace('\\', "\\\\").replace(',', "\\,");
        format!("{}={escaped}", key.as_str())
    }
}

macro_rules! from_str_serde {
    ($type:ty, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct V;
                impl Visitor<'_> for V {
                    type Value = $type;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, value: &str) -> Result<$type, E> {
                        value.parse().map_err(E::custom)
                    }
                }
                deserializer.deserialize_str(V)
            }
        }
    };
}

from_str_serde!(ReleaseName, "a Helm release name such as ingress");
from_str_serde!(Namespace, "a Kubernetes namespace such as ingress-nginx");
from_str_serde!(
    SetKey,
    "a dotted values path such as controller.replicaCount"
);

impl<'de> Deserialize<'de> for SetValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = SetValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean or null")
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: value.to_owned(),
                    is_string: true,
                })
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: value.to_string(),
                    is_string: false,
                })
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: value.to_string(),
                    is_string: false,
                })
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: value.to_string(),
                    is_string: false,
                })
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: value.to_string(),
                    is_string: false,
                })
            }
            fn visit_unit<E: de::Error>(self) -> Result<SetValue, E> {
                Ok(SetValue {
                    text: "null".to_owned(),
                    is_string: false,
                })
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// `set:` is a map in the spec; its entries are kept in the spec's order.
fn set_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<(SetKey, SetValue)>, D::Error> {
    struct V;
    impl<'de> Visitor<'de> for V {
        type Value = Vec<(SetKey, SetValue)>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a map of values paths to values, such as {controller.replicaCount: 2}")
        }
        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out: Vec<(SetKey, SetValue)> = Vec::new();
            while let Some((key, value)) = map.next_entry::<SetKey, SetValue>()? {
                if out.iter().any(|(k, _)| k == &key) {
                    return Err(de::Error::custom(format!(
                        "duplicate `set` key `{}`",
                        key.as_str()
                    )));
                }
                out.push((key, value));
            }
            Ok(out)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
    }
    deserializer.deserialize_map(V)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_names_and_namespaces_are_dns_labels() {
        assert!("ingress".parse::<ReleaseName>().is_ok());
        assert!("a-1".parse::<Namespace>().is_ok());
        for bad in ["", "-a", "a-", "Ingress", "a_b", &"a".repeat(54)] {
            assert!(bad.parse::<ReleaseName>().is_err(), "{bad}");
        }
        assert!("a".repeat(63).parse::<Namespace>().is_ok());
        assert!("a".repeat(64).parse::<Namespace>().is_err());
    }

    #[test]
    fn set_keys_are_dotted_paths_and_values_escape_commas() {
        let key: SetKey = "controller.args[0]".parse().unwrap();
        assert_eq!(key.keys().collect::<Vec<_>>(), ["controller", "args[0]"]);
        for bad in ["", "a..b", ".a", "a=b", "a,b", "a b"] {
            assert!(bad.parse::<SetKey>().is_err(), "{bad}");
        }
        let value = SetValue {
            text: "a,b\\c".to_owned(),
            is_string: true,
        };
        assert_eq!(value.to_set_arg(&key), "controller.args[0]=a\\,b\\\\c");
    }
}
