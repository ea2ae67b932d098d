//! The name of one source: what keeps the state and outputs of one emitter apart.

use std::fmt;
use std::str::FromStr;

use crate::StateError;

/// The name under which one emitter's state and outputs are kept
/// (`<state>/<source-id>/…`, `<output>/<source-id>/…`).
///
/// It names a directory in every store, so it is checked once, when it is made: 1 to 128
/// characters out of ASCII letters, digits, `.`, `_` and `-`, not starting with `.`. In a
/// Kubernetes Pod it is usually the Pod's name.
///
/// ```
/// use state_store::SourceId;
///
/// let id: SourceId = "checkout-7f9c-0".parse().unwrap();
/// assert_eq!(id.as_str(), "checkout-7f9c-0");
/// assert!(SourceId::new("a/b").is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourceId(String);

impl SourceId {
    /// Checks `id` and wraps it; fails with [`StateError::InvalidSourceId`] saying why.
    pub fn new(id: impl Into<String>) -> Result<Self, StateError> {
        let id = id.into();
        let invalid = |reason: &'static str| StateError::InvalidSourceId {
            id: id.clone(),
            reason,
        };
        if id.is_empty() || id.len() > 128 {
            return Err(invalid("must be 1 to 128 characters long"));
        }
        if id.starts_with('.') {
            return Err(invalid("must not start with '.'"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err(invalid(
                "may only contain ASCII letters, digits, '.', '_' and '-'",
            ));
        }
        Ok(Self(id))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for SourceId {
    type Err = StateError;

    fn from_str(s: &str) -> Result<Self, StateError> {
        Self::new(s)
    }
}

impl TryFrom<&str> for SourceId {
    type Error = StateError;

    fn try_from(s: &str) -> Result<Self, StateError> {
        Self::new(s)
    }
}

impl AsRef<str> for SourceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_ids_must_be_path_safe() {
        for ok in ["pod-1", "my.host_name", "a"] {
            assert_eq!(SourceId::new(ok).unwrap().as_str(), ok);
        }
        for bad in ["", ".hidden", "a/b", "sp ace", "é", &"x".repeat(129)] {
            let err = SourceId::new(bad).unwrap_err();
            assert!(
                matches!(err, StateError::InvalidSourceId { .. }),
                "{bad:?}: {err}"
            );
        }
    }
}
