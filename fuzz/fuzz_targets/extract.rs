//! Feeds arbitrary bytes through compression detection, the tar reader and the safe extractor
//! into a fresh root, then checks the one property that matters: nothing beside the root was
//! created or changed. Errors are fine; panics, hangs and escapes are bugs.
#![no_main]

use std::io::Cursor;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rmach::archive::{extract, Decoder, ExtractOptions};

fn sandbox() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rmach-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("outside")).unwrap();
        std::fs::write(dir.join("outside/canary"), b"canary").unwrap();
        dir
    })
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let sb = sandbox();
    let root = sb.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir(&root).unwrap();
    if let Ok(mut dec) = Decoder::spawn(Cursor::new(data.to_vec()), false) {
        let opts = ExtractOptions {
            chown: false,
            ..ExtractOptions::default()
        };
        let _ = extract(&mut dec, &root, &opts, None);
        let _ = dec.finish();
    }
    assert_eq!(
        listing(sb),
        ["outside", "root"],
        "something was created beside the root"
    );
    assert_eq!(listing(&sb.join("outside")), ["canary"]);
    assert_eq!(std::fs::read(sb.join("outside/canary")).unwrap(), b"canary");
    let _ = std::fs::remove_dir_all(&root);
});
