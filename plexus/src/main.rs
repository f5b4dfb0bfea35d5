fn main() {
    println!("plexus");
}
