//! Certificates made for a test: a CA, and certificates it signs.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A certificate and its key, PEM.
pub struct Pem {
    pub cert: String,
    pub key: String,
}

/// A self-signed CA.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("key")).expect("CA")
}

/// A certificate for `names`, signed by `ca`.
pub fn issue(ca: &CertifiedIssuer<'static, KeyPair>, names: &[&str]) -> Pem {
    let key = KeyPair::generate().expect("key");
    let params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).expect("params");
    let cert = params.signed_by(&key, ca).expect("signed");
    Pem { cert: cert.pem(), key: key.serialize_pem() }
}
