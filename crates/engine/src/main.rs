//! The `mediabot` command.

fn main() {
    println!("mediabot {}", env!("CARGO_PKG_VERSION"));
}
