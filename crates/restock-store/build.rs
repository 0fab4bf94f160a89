//! `embed_migrations!` reads `migrations/` at compile time; without this, a changed or new
//! migration file would not rebuild the crate and the binary would apply stale SQL.

fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
