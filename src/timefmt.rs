//! RFC 3339 (UTC) text for points in time: what the API, the task logs and containerd labels
//! (lease expiry) all use, written once.

use std::time::SystemTime;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `t` as RFC 3339 UTC text (nanosecond precision when present).
pub fn rfc3339(t: SystemTime) -> String {
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// The current time as RFC 3339 UTC text.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}
