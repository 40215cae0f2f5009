//! `.ci/needs` must recognise the tools `.ci/run` installed: a detection
//! that never matches (an earlier one looked for ` -N` with a space, while
//! Debian's netcat help uses tabs) makes every CI run reinstall packages.

use std::process::Command;

#[test]
fn ci_needs_nothing_once_the_tools_are_installed() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new("bash")
        .arg(".ci/needs")
        .current_dir(root)
        .output()
        .expect("run bash .ci/needs");
    assert!(out.status.success());
    let missing = String::from_utf8_lossy(&out.stdout);
    // Only meaningful where the tools are installed; `scripts/test.sh` installs them
    // before running the tests, so in CI this always checks the detection.
    let have = |cmd: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("nc") && have("socat") && have("openssl") && have("python3")) {
        eprintln!("skipped: nc, socat, openssl or python3 missing (scripts/test.sh installs them)");
        return;
    }
    assert_eq!(
        missing, "",
        "tools are installed but .ci/needs says they are missing"
    );
}
