//! The package metadata and the Docker files point at files that exist.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn every_debian_package_asset_except_the_built_binary_exists() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let section = manifest.split("[package.metadata.deb]").nth(1).unwrap();
    let assets = section
        .split("assets = [")
        .nth(1)
        .unwrap()
        .split("\n]")
        .next()
        .unwrap();
    let mut checked = 0;
    for line in assets.lines().filter(|l| l.trim_start().starts_with("[\"")) {
        let source = line
            .trim_start()
            .trim_start_matches("[\"")
            .split('"')
            .next()
            .unwrap();
        if source.starts_with("target/") {
            continue;
        }
        assert!(
            root().join(source).exists(),
            "deb asset {source} is missing"
        );
        checked += 1;
    }
    assert!(
        checked >= 10,
        "only {checked} assets found: the parser above is wrong"
    );
}

#[test]
fn the_dockerfiles_copy_only_what_exists() {
    for file in [
        "packaging/docker/Dockerfile",
        "packaging/docker/app.Dockerfile",
    ] {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        for line in text
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            for source in &words[1..words.len() - 1] {
                assert!(
                    root().join(source).exists(),
                    "{file}: {source} does not exist"
                );
            }
        }
    }
}
