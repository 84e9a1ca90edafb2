//! Unit tests of `network::cidr`.

use super::*;

#[test]
fn cidr_parsing_and_matching() {
    let net: IpCidr = "10.1.0.0/16".parse().unwrap();
    assert!(net.contains("10.1.200.3".parse().unwrap()));
    assert!(!net.contains("10.2.0.1".parse().unwrap()));
    assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
    let odd: IpCidr = "192.168.0.0/23".parse().unwrap();
    assert!(odd.contains("192.168.1.7".parse().unwrap()));
    assert!(!odd.contains("192.168.2.7".parse().unwrap()));
    let one: IpCidr = "::1".parse().unwrap();
    assert!(one.contains("::1".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
    assert!("nope".parse::<IpCidr>().is_err());
}

#[test]
fn display_and_errors_read_like_the_config() {
    let net: IpCidr = " 10.89.0.0 / 16 ".parse().unwrap();
    assert_eq!(net.to_string(), "10.89.0.0/16");
    assert_eq!("::1".parse::<IpCidr>().unwrap().to_string(), "::1/128");
    assert_eq!(
        "nope".parse::<IpCidr>().unwrap_err().to_string(),
        "`nope` is not an IP address or CIDR"
    );
    assert_eq!(
        "10.0.0.0/33".parse::<IpCidr>().unwrap_err().to_string(),
        "`10.0.0.0/33` has an invalid prefix length"
    );
}
