//! Unit tests of `cli::remote`.

use super::human_duration;

#[test]
fn durations_read_well() {
    assert_eq!(human_duration(45), "45s");
    assert_eq!(human_duration(192), "3m12s");
    assert_eq!(human_duration(7500), "2h5m");
    assert_eq!(human_duration(90000), "1d1h");
}
