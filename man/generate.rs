//! Writes the man pages to `man/`, the shell completions to
//! `completions/`, and the generated blocks of `docs/reference.md` (the
//! signal and exit-status tables, the options of `sockvisor run`), from the
//! clap definition and the tables the code acts on:
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
    let reference = root.join(render::REFERENCE);
    let text = std::fs::read_to_string(&reference)?;
    let filled = render::fill_reference(&text).map_err(std::io::Error::other)?;
    std::fs::write(reference, filled)?;
    Ok(())
}
