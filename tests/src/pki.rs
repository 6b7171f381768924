//! Certificates for the tests of the TCP listener (TLS, mutual TLS): a CA, and leaves it
//! signs, made fresh with rcgen.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// A certificate authority named `name`: its certificate and key.
pub fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

/// A leaf certificate for `cn` with these subject alternative names, signed by `by`: its
/// certificate and key, PEM.
pub fn leaf(cn: &str, sans: &[&str], by: &(rcgen::Certificate, KeyPair)) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut p =
        CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    (p.signed_by(&key, &by.0, &by.1).unwrap().pem(), key.serialize_pem())
}
