//! Writes the man pages to `man/` and the shell completions to
//! `completions/`, from the clap definition:
//!
//! ```sh
//! cargo run --example gen-docs
//! ```

#[path = "render.rs"]
mod render;

fn main() -> std::io::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, contents) in render::man_pages() {
        std::fs::write(root.join("man").join(name), contents)?;
    }
    for (name, contents) in render::completions() {
        std::fs::write(root.join("completions").join(name), contents)?;
    }
    Ok(())
}
