// The module's callbacks into Envoy are resolved when Envoy loads the library (a shared
// library may leave them undefined anyway); the unit-test executables never call them, so
// every target is linked with those symbols left unresolved. `abi_check` refuses to load in an
// Envoy that lacks one.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--unresolved-symbols=ignore-all");
}
