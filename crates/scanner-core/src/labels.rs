//! Labels: where a result came from (Pod, namespace, node, app, …), written into every output
//! line as `"labels":{"key":"value",…}`, and, for the keys chosen, Hive partition folders of
//! the output keys (`source=<id>/<key>=<value>/date=<day>/…`).
//!
//! Keys are lowercase identifiers (`[a-z][a-z0-9_]{0,62}`), usable as column names by every
//! engine; the names of the line's own fields and of the layout's partitions (`source`, `date`)
//! are reserved, so that no label shadows one as a column. Values are 0 to 253 characters out of
//! ASCII letters, digits, `.`, `_` and `-`: every Kubernetes name, namespace, node name and
//! label value fits, and a value is safe as a path segment without escaping.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Names a label key may not take: the fields of an output line (`labels` included) and the
/// partition columns of the hive layout.
pub const RESERVED_LABEL_KEYS: &[&str] = &[
    "schema",
    "source_id",
    "generation",
    "path",
    "path_bytes",
    "size",
    "encoding",
    "mtime",
    "start",
    "processor",
    "result",
    "error",
    "identity",
    "labels",
    "source",
    "date",
];

/// The longest label value: a DNS subdomain, such as a node name.
const MAX_VALUE_LEN: usize = 253;

/// The longest label key.
const MAX_KEY_LEN: usize = 63;

/// A label that cannot be used; the message says why and what is accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    /// Not `key=value`.
    #[error("label {given:?}: expected KEY=VALUE")]
    Malformed {
        /// The label as given.
        given: String,
    },
    /// A key outside the accepted characters or length.
    #[error(
        "label key {key:?}: a key is 1 to {MAX_KEY_LEN} characters, a lowercase letter then \
         lowercase letters, digits and '_' (a column name in every engine)"
    )]
    Key {
        /// The key as given.
        key: String,
    },
    /// A key that names a field of the output line or a partition of the layout.
    #[error(
        "label key {key:?} is reserved: it names a field of the output line or a partition of \
         the hive layout (reserved: {})",
        RESERVED_LABEL_KEYS.join(", ")
    )]
    Reserved {
        /// The key.
        key: String,
    },
    /// A value outside the accepted characters or length.
    #[error(
        "label {key}={value:?}: a value is 0 to {MAX_VALUE_LEN} characters out of ASCII letters, \
         digits, '.', '_' and '-' (what Kubernetes allows in names and label values)"
    )]
    Value {
        /// The key.
        key: String,
        /// The value as given.
        value: String,
    },
    /// One key given twice.
    #[error("label key {key:?} is given twice ({first:?} and {second:?})")]
    Duplicate {
        /// The key.
        key: String,
        /// The first value.
        first: String,
        /// The second value.
        second: String,
    },
}

/// One label, `key=value`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label {
    key: String,
    value: String,
}

impl Label {
    /// Checks `key` and `value` and makes a label of them.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Result<Self, LabelError> {
        let (key, value) = (key.into(), value.into());
        check_key(&key)?;
        let value_ok = value.len() <= MAX_VALUE_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !value_ok {
            return Err(LabelError::Value { key, value });
        }
        Ok(Self { key, value })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The value.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Checks a label key: its characters, its length, and that it is not reserved.
pub fn check_key(key: &str) -> Result<(), LabelError> {
    let mut bytes = key.bytes();
    let well_formed = key.len() <= MAX_KEY_LEN
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !well_formed {
        return Err(LabelError::Key {
            key: key.to_string(),
        });
    }
    if RESERVED_LABEL_KEYS.contains(&key) {
        return Err(LabelError::Reserved {
            key: key.to_string(),
        });
    }
    Ok(())
}

impl FromStr for Label {
    type Err = LabelError;

    /// `key=value` (the value may be empty).
    fn from_str(given: &str) -> Result<Self, LabelError> {
        let (key, value) = given.split_once('=').ok_or_else(|| LabelError::Malformed {
            given: given.to_string(),
        })?;
        Label::new(key, value)
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.key, self.value)
    }
}

/// The labels of a source, ordered by key: written as a JSON object into every output line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Labels(BTreeMap<String, String>);

impl Labels {
    /// The labels `labels`; a key given twice is refused.
    pub fn new(labels: impl IntoIterator<Item = Label>) -> Result<Self, LabelError> {
        let mut map = BTreeMap::new();
        for Label { key, value } in labels {
            if let Some(first) = map.get(&key) {
                return Err(LabelError::Duplicate {
                    first: String::clone(first),
                    key,
                    second: value,
                });
            }
            map.insert(key, value);
        }
        Ok(Self(map))
    }

    /// The value of `key`, if labelled.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// No labels at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every label, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// These labels as the output key `key` has them: the value of each label that is a
    /// partition folder of the key (`…/<key>=<value>/…`) is the folder's. A batch redone after
    /// a restart whose labels changed keeps the key of its plan, and so its partition folders:
    /// its lines then agree with them, and take every other label from this process.
    pub fn as_in_key(&self, key: &str) -> Labels {
        let mut labels = self.clone();
        let folders = key.split('/').filter_map(|segment| segment.split_once('='));
        for (name, value) in folders {
            if let (Some(ours), Ok(label)) = (labels.0.get_mut(name), Label::new(name, value)) {
                *ours = label.value;
            }
        }
        labels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_checked_and_ordered_by_key() {
        let labels = Labels::new(
            [
                "pod=web-7f9c-0",
                "namespace=shop",
                "empty=",
                "node=ip-10-0-0-1.ec2.internal",
            ]
            .map(|l| l.parse::<Label>().unwrap()),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&labels).unwrap(),
            r#"{"empty":"","namespace":"shop","node":"ip-10-0-0-1.ec2.internal","pod":"web-7f9c-0"}"#
        );
        assert_eq!(labels.get("namespace"), Some("shop"));
        assert_eq!(
            "a=b=c".parse::<Label>().unwrap_err(),
            LabelError::Value {
                key: "a".into(),
                value: "b=c".into()
            }
        );
        for (given, wrong) in [
            ("noequals", "expected KEY=VALUE"),
            ("App=x", "lowercase letter"),
            ("1a=x", "lowercase letter"),
            ("a-b=x", "lowercase letter"),
            ("=x", "lowercase letter"),
            ("date=2026", "reserved"),
            ("path=x", "reserved"),
            ("source=x", "reserved"),
            ("team=a/b", "what Kubernetes allows"),
            ("team=a b", "what Kubernetes allows"),
        ] {
            let error = given.parse::<Label>().unwrap_err().to_string();
            assert!(error.contains(wrong), "{given}: {error}");
        }
        let long_key = format!("{}=x", "k".repeat(64));
        assert!(long_key.parse::<Label>().is_err());
        let long_value = format!("k={}", "v".repeat(254));
        assert!(long_value.parse::<Label>().is_err());
        let twice = Labels::new(["a=1", "a=2"].map(|l| l.parse::<Label>().unwrap()));
        assert!(twice.unwrap_err().to_string().contains("given twice"));
    }

    #[test]
    fn a_key_planned_with_other_partition_values_keeps_them() {
        let now = Labels::new(["namespace=pay", "app=web-2"].map(|l| l.parse().unwrap())).unwrap();
        let planned = "source=pod/namespace=shop/date=2026-12-06/00000000000000000004.ndjson";
        let labels = now.as_in_key(planned);
        assert_eq!(labels.get("namespace"), Some("shop"), "the key's folder");
        assert_eq!(
            labels.get("app"),
            Some("web-2"),
            "not a folder: this process's"
        );
        assert_eq!(now.as_in_key("pod/00000000000000000004.ndjson"), now);
    }
}
