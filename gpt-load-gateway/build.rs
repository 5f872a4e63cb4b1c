fn main() {
    // Embedded migrations are read at compile time: rebuild when one is added or changed.
    println!("cargo:rerun-if-changed=../migrations");
}
