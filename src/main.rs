fn main() {
    println!("supd {}", env!("CARGO_PKG_VERSION"));
}
