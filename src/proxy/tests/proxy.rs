//! Unit tests of `proxy`.

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
