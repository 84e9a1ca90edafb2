//! Unit tests of `config::server_edit`: `haloyd config set api-domain` keeps the file's layout.

use super::*;

fn domain_of(text: &str) -> Option<String> {
    ServerConfig::parse(text, "haloyd.yaml").unwrap().api.domain
}

#[test]
fn adds_the_domain_to_a_block_api_map_keeping_comments() {
    let text = "# my server\nstate_dir: /var/lib/haloy\napi:\n  token_file: /etc/haloy/api-token  # secret\n\n# proxy:\n";
    let edited = set_api_domain_text(text, "api.example.com").unwrap();
    assert_eq!(
        edited,
        "# my server\nstate_dir: /var/lib/haloy\napi:\n  domain: api.example.com\n  token_file: /etc/haloy/api-token  # secret\n\n# proxy:\n"
    );
    assert_eq!(domain_of(&edited).as_deref(), Some("api.example.com"));
}

#[test]
fn adds_the_domain_to_a_flow_api_map() {
    let text = "api: {listen: 127.0.0.1:9922, token_file: /tmp/t}\n";
    let edited = set_api_domain_text(text, "a.example.com").unwrap();
    assert_eq!(
        edited,
        "api: {domain: a.example.com, listen: 127.0.0.1:9922, token_file: /tmp/t}\n"
    );
    assert_eq!(domain_of(&edited).as_deref(), Some("a.example.com"));
}

#[test]
fn replaces_an_existing_domain_plain_quoted_or_in_a_flow_map() {
    for (text, want) in [
        (
            "api:\n  domain: old.example.com   # the API\n",
            "api:\n  domain: new.example.com   # the API\n",
        ),
        (
            "api:\n  domain: \"old.example.com\"\n",
            "api:\n  domain: new.example.com\n",
        ),
        (
            "api: {domain: old.example.com, listen: 127.0.0.1:9922}\n",
            "api: {domain: new.example.com, listen: 127.0.0.1:9922}\n",
        ),
    ] {
        let edited = set_api_domain_text(text, "new.example.com").unwrap();
        assert_eq!(edited, want);
        assert_eq!(domain_of(&edited).as_deref(), Some("new.example.com"));
    }
}

#[test]
fn adds_an_api_block_when_there_is_none_or_it_is_empty() {
    for text in ["state_dir: /var/lib/haloy\n", "api:\nstate_dir: /x\n", ""] {
        let edited = set_api_domain_text(text, "b.example.com").unwrap();
        assert_eq!(
            domain_of(&edited).as_deref(),
            Some("b.example.com"),
            "{edited}"
        );
    }
}
