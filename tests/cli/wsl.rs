//! The wsl executor through a real run, with a `wsl.exe` stand-in on PATH that records its arguments and
//! `WSLENV`, then runs the Linux command it was given (real WSL cannot run here).

use std::path::Path;

use crate::support::Test;

#[test]
fn commands_are_rewritten_for_wsl_and_still_run() {
    let module =
        match std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("plugins/dist/wsl.wasm")) {
            Ok(bytes) => bytes,
            Err(_) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "plugins/dist/wsl.wasm is missing"
                );
                eprintln!("skipped: the wsl plugin is not built (run plugins/build.sh)");
                return;
            }
        };
    use sha2::Digest;
    let sha: String = sha2::Sha256::digest(&module)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let test = Test::new().tasks(&format!(
        "[plugins.wsl]\nsource = \"wsl.wasm\"\nsha256 = \"{sha}\"\ntrust = \"full\"\nconfig = {{ distro = \"NixOS\", user = \"alex\", force = true, pass_env = \"FLAKE\" }}\n\n[tasks.build]\nexecutor = \"wsl\"\nenv = {{ FLAKE = \"C:\\\\src\\\\dotfiles\" }}\nrun = \"echo inside-wsl flake=$FLAKE\"\n"
    ));
    std::fs::write(test.path("wsl.wasm"), &module).unwrap();
    let bin = test.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = test.path("wsl.log");
    std::fs::write(
        bin.join("wsl.exe"),
        format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > {log}\necho \"WSLENV=$WSLENV\" >> {log}\nwhile [ \"$1\" != -e ]; do shift; done\nshift\nexec \"$@\"\n",
            log = log.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(bin.join("wsl.exe"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let test = test.env("PATH", &path);
    test.run_with(&["run", "build"])
        .success()
        .stdout_has("inside-wsl flake=C:\\src\\dotfiles");
    let recorded = test.read("wsl.log");
    let dir = test.path("").display().to_string();
    let expected = format!("-d\nNixOS\n-u\nalex\n--cd\n{}\n-e\nbash\n-eo\npipefail\n-c\necho inside-wsl flake=$FLAKE\n", dir.trim_end_matches('/'));
    assert!(
        recorded.starts_with(&expected),
        "{recorded}\nexpected:\n{expected}"
    );
    assert!(
        recorded.contains("WSLENV=FLAKE/u:CAIRN_TASK/u"),
        "{recorded}"
    );
}
