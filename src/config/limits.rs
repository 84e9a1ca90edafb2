//! The ranges of haloy.yaml's numeric keys, in one table: the decoder reports a value outside
//! them with file:line, and `ResolvedApp::problems` (haloyd's re-check of what the API
//! receives) with the key path, both with the same words.

use super::resolved::MAX_PIDS;

/// An inclusive range of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// The key path as problems name it (`replicas`, `resources.pids`).
    pub key: &'static str,
    pub min: i64,
    pub max: i64,
}

pub const REPLICAS: Limit = Limit {
    key: "replicas",
    min: 1,
    max: 1000,
};
pub const PORT: Limit = Limit {
    key: "port",
    min: 1,
    max: 65535,
};
pub const MIN_READY_SECONDS: Limit = Limit {
    key: "min_ready_seconds",
    min: 0,
    max: 600,
};
pub const STOP_TIMEOUT: Limit = Limit {
    key: "stop_timeout",
    min: 0,
    max: 3600,
};
pub const HISTORY_COUNT: Limit = Limit {
    key: "image.history.count",
    min: 1,
    max: 1000,
};
pub const PIDS: Limit = Limit {
    key: "resources.pids",
    min: 1,
    max: MAX_PIDS as i64,
};

impl Limit {
    /// The problem text, without the key: the decoder puts file:line and the path before it.
    pub fn out_of_range(&self, value: impl std::fmt::Display) -> String {
        format!(
            "{value} is out of range; must be between {} and {}",
            self.min, self.max
        )
    }

    /// `Err("key: … out of range …")` when `value` is outside; for checks without a position.
    pub fn check<T>(&self, value: T) -> Result<(), String>
    where
        T: Copy + std::fmt::Display + TryInto<i64>,
    {
        let inside = value
            .try_into()
            .is_ok_and(|v| (self.min..=self.max).contains(&v));
        if inside {
            Ok(())
        } else {
            Err(format!("{}: {}", self.key, self.out_of_range(value)))
        }
    }
}

#[cfg(test)]
#[path = "tests/limits.rs"]
mod tests;
