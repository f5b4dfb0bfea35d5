// As in targets/build.rs: both mediator plugins (file, telegram) define the plugin entry symbol
// `plexus_plugin_entry_v1`, meant for their cdylibs. The fuzz binaries link both
// as rlibs and never call it, so the duplicate is harmless: let the linker keep one.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--allow-multiple-definition");
}
