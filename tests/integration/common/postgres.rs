//! Private PostgreSQL clusters for the tests that need settings or extensions of their own
//! (TLS only, Citus): their programs run as the postgres user, on free ports.

use std::process::{Command, Stdio};

/// Where Debian's PostgreSQL 15 programs are.
pub const PGBIN: &str = "/usr/lib/postgresql/15/bin";

/// Runs a PostgreSQL program (`initdb`, `pg_ctl`) as the postgres user, its chatter dropped.
pub fn as_postgres(program: &str, args: &[&str]) {
    let path = format!("{PGBIN}/{program}");
    let mut command = if whoami() == "postgres" {
        Command::new(&path)
    } else {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", &path]);
        command
    };
    let status =
        command.args(args).stdout(Stdio::null()).status().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(status.success(), "{program} {args:?} failed");
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
