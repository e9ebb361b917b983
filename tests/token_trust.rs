//! A tokens file that a user other than root and supd's own could change is refused: by
//! `supd check-config`, which names the reason, and by a running supd, which seals itself
//! (503) until the file is fixed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn check_config(tokens: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_supd"))
        .args(["check-config", "--config", "/dev/null", "--tokens"])
        .arg(tokens)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_refuses_a_foreign_owner_and_an_open_directory() {
    let dir = TempDir::new();
    let tokens = dir.path().join("tokens.yaml");
    write_tokens(&tokens);
    assert_eq!(check_config(&tokens), (true, String::new()));

    std::os::unix::fs::chown(&tokens, Some(1000), Some(1000)).unwrap();
    let (ok, err) = check_config(&tokens);
    assert!(!ok);
    assert!(err.contains("owned by uid 1000"), "{err}");
    std::os::unix::fs::chown(&tokens, Some(0), Some(0)).unwrap();

    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (ok, err) = check_config(&tokens);
    assert!(!ok);
    assert!(err.contains("its directory"), "{err}");
    assert!(err.contains("mode 1777"), "{err}");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(check_config(&tokens), (true, String::new()));
}

#[test]
fn a_running_supd_seals_itself_on_a_foreign_tokens_file() {
    let supd = Supd::start();
    let path = "/v1/state/applications/none/service-instances";
    assert_eq!(supd.get(path, ADMIN_TOKEN).status, 200);
    let tokens = supd.dir.path().join("tokens.yaml");
    std::os::unix::fs::chown(&tokens, Some(1000), Some(1000)).unwrap();
    supd.signal("HUP");
    supd.wait_until(Duration::from_secs(5), || {
        supd.get(path, ADMIN_TOKEN).status == 503
    });
    let r = supd.get(path, ADMIN_TOKEN);
    assert!(
        r.error_message().contains("owned by uid 1000"),
        "{}",
        r.text()
    );
}
