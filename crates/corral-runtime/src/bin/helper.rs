//! `corral-runtime-helper`: a binary whose only job is to be re-executed as
//! the spawner (for test binaries, which cannot run code before libtest's
//! own `main`). Run directly, it explains itself.

fn main() {
    corral_runtime::maybe_run_spawner();
    eprintln!(
        "corral-runtime-helper: start me with {} (the runtime does)",
        corral_runtime::SPAWNER_ARG
    );
    std::process::exit(2);
}
