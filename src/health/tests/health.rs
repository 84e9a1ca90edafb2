//! Unit tests of `health`.

use super::*;

#[test]
fn rise_fall_thresholds() {
    let s = MonitorSettings {
        fall: 3,
        rise: 2,
        ..MonitorSettings::default()
    };
    let mut rf = RiseFall {
        saw_ready: true,
        ..RiseFall::default()
    };
    assert_eq!(rf.record(false, true, &s), None);
    assert_eq!(rf.record(false, true, &s), None);
    assert_eq!(rf.record(false, true, &s), Some(false));
    assert_eq!(rf.record(true, false, &s), None);
    assert_eq!(rf.record(true, false, &s), Some(true));
}

#[test]
fn mark_down_needs_rise_again() {
    let s = MonitorSettings {
        fall: 3,
        rise: 2,
        ..MonitorSettings::default()
    };
    let mut rf = RiseFall {
        saw_ready: true,
        ..RiseFall::default()
    };
    assert_eq!(rf.record(true, true, &s), None);
    assert_eq!(rf.record(true, true, &s), None);
    // marked down externally between checks
    assert_eq!(rf.record(true, false, &s), None);
    assert_eq!(rf.record(true, false, &s), Some(true));
}
