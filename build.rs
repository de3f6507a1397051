//! Embeds every `migrations/NNNN_name.sql` file into the binary, in version order, so that adding a
//! migration is adding a file: `src/store/migrate.rs` includes the generated list.

use std::{env, fs, path::Path};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let dir = Path::new(&env::var("CARGO_MANIFEST_DIR").unwrap()).join("migrations");
    let mut files: Vec<(u32, String, String)> = Vec::new();
    for entry in fs::read_dir(&dir).expect("migrations/ is readable") {
        let path = entry.expect("migrations/ entry").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let Some(stem) = file.strip_suffix(".sql") else {
            continue;
        };
        let (version, name) = stem
            .split_once('_')
            .unwrap_or_else(|| panic!("migration {file} is not named NNNN_name.sql"));
        let version: u32 = version
            .parse()
            .unwrap_or_else(|_| panic!("migration {file} does not start with a number"));
        files.push((version, name.to_owned(), path.display().to_string()));
    }
    files.sort();
    for pair in files.windows(2) {
        assert!(
            pair[0].0 != pair[1].0,
            "two migrations share version {}",
            pair[0].0
        );
    }
    let mut out = String::from("&[\n");
    for (version, name, path) in &files {
        out += &format!(
            "    Migration {{ version: {version}, name: {name:?}, sql: include_str!({path:?}) }},\n"
        );
    }
    out += "]\n";
    let dest = Path::new(&env::var("OUT_DIR").unwrap()).join("migrations.rs");
    fs::write(dest, out).expect("OUT_DIR is writable");
}
