//! What the tests share: the harness ([`harness`]), OTLP builders and comparisons ([`otlp`]),
//! the requests several tests send ([`fixtures`]), clients ([`clients`]), test certificates
//! ([`pki`]), and the fault-injecting PostgreSQL proxy ([`proxy`]).

pub mod binary;
pub mod clients;
pub mod fixtures;
pub mod harness;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod proxy;

pub use harness::*;
pub use otlp::*;
pub use proxy::*;
