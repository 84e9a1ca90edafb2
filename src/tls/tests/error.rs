//! Unit tests of `tls::error`.

use super::*;

#[test]
fn problem_description_carries_detail_type_and_subproblems() {
    let problem: instant_acme::Problem = serde_json::from_value(serde_json::json!({
        "type": "urn:ietf:params:acme:error:rejectedIdentifier",
        "detail": "Error creating new order",
        "status": 400,
        "subproblems": [{
            "type": "urn:ietf:params:acme:error:rejectedIdentifier",
            "detail": "name is blocked",
            "identifier": {"type": "dns", "value": "bad.test"}
        }]
    }))
    .unwrap();
    let text = describe_problem(&problem);
    assert_eq!(
        text,
        "CA said: Error creating new order [urn:ietf:params:acme:error:rejectedIdentifier]; \
         bad.test: name is blocked"
    );
}
