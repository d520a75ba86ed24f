//! An executor that runs a task's commands inside a WSL distribution from Windows:
//! `wsl.exe -d DISTRO [-u USER] --cd LINUX_DIR -e COMMAND…`, with Windows paths in the working directory and
//! arguments translated to Linux ones, and `WSLENV` naming the variables that must cross into Linux.
//!
//! On any other system it leaves commands alone unless `force = true` (how it is tested on Linux, with a
//! `wsl.exe` stand-in). It has not been run on real Windows.

use std::collections::BTreeMap;

use cairn_pdk::api::{
    Capability, Describe, ErrorCode, FieldKind, PluginError, WrapRequest, WrapResponse,
};
use cairn_pdk::{config, plugin};

use cairn_pdk::config_field as field;

fn describe() -> Describe {
    let mut describe =
        cairn_pdk::describe("wsl", env!("CARGO_PKG_VERSION"), &[Capability::Executor]);
    describe.description = "runs commands inside a WSL distribution (Windows hosts)".into();
    describe.config = vec![
        field(
            "distro",
            FieldKind::String,
            true,
            "the distribution, e.g. NixOS or Ubuntu-24.04",
        ),
        field("user", FieldKind::String, false, "the Linux user to run as"),
        field(
            "automount_root",
            FieldKind::String,
            false,
            "where Windows drives are mounted (default /mnt/)",
        ),
        field(
            "pass_env",
            FieldKind::String,
            false,
            "variables to pass into Linux, separated by spaces",
        ),
        field(
            "path_env",
            FieldKind::String,
            false,
            "variables holding a Windows path, translated on the way (WSLENV /p)",
        ),
        field(
            "wsl",
            FieldKind::String,
            false,
            "the launcher (default wsl.exe)",
        ),
        field(
            "force",
            FieldKind::Boolean,
            false,
            "wrap commands on hosts other than Windows too",
        ),
    ];
    describe
}

/// `C:\Users\a` or `C:/Users/a` → `/mnt/c/Users/a`; `\\wsl$\Distro\home\a` or `\\wsl.localhost\Distro\…` →
/// `/home/a`; anything else unchanged.
pub fn to_linux(path: &str, automount_root: &str) -> String {
    let root = automount_root.trim_end_matches('/');
    for prefix in [
        r"\\wsl$\",
        r"\\wsl.localhost\",
        "//wsl$/",
        "//wsl.localhost/",
    ] {
        if let Some(rest) = path.strip_prefix(prefix) {
            let rest = rest.replace('\\', "/");
            return match rest.split_once('/') {
                Some((_distro, inner)) => format!("/{inner}"),
                None => "/".into(),
            };
        }
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2
        && bytes[0].is_ascii_alphabetic()
        && bytes[1] == b':'
        && (bytes.len() == 2 || bytes[2] == b'\\' || bytes[2] == b'/')
    {
        let drive = (bytes[0] as char).to_ascii_lowercase();
        let rest = path[2..].replace('\\', "/");
        let rest = rest.trim_end_matches('/');
        return format!("{root}/{drive}{rest}");
    }
    path.to_string()
}

/// `WSLENV`: each name once, flagged `/p` for paths and `/u` (Windows → Linux only) for the rest.
pub fn wslenv(existing: Option<&str>, plain: &[String], paths: &[String]) -> String {
    let mut entries: Vec<String> = existing
        .unwrap_or("")
        .split(':')
        .filter(|e| !e.is_empty())
        .map(String::from)
        .collect();
    let known = |entries: &Vec<String>, name: &str| {
        entries.iter().any(|e| e.split('/').next() == Some(name))
    };
    for name in paths {
        if !known(&entries, name) {
            entries.push(format!("{name}/p"));
        }
    }
    for name in plain {
        if !known(&entries, name) {
            entries.push(format!("{name}/u"));
        }
    }
    entries.join(":")
}

fn words(key: &str) -> Vec<String> {
    config::get(key)
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn wrap(request: WrapRequest) -> Result<WrapResponse, PluginError> {
    let forced = config::get("force").as_deref() == Some("true");
    if request.host_os != "windows" && !forced {
        return Ok(WrapResponse {
            argv: request.argv,
            cwd: None,
            set_env: BTreeMap::new(),
        });
    }
    let distro = config::require("distro")?;
    if distro.contains(char::is_whitespace) {
        return Err(PluginError::new(
            ErrorCode::Invalid,
            format!("`{distro}` cannot be a distribution name"),
        ));
    }
    let root = config::get("automount_root").unwrap_or_else(|| "/mnt/".into());
    let mut argv = vec![
        config::get("wsl").unwrap_or_else(|| "wsl.exe".into()),
        "-d".into(),
        distro,
    ];
    if let Some(user) = config::get("user") {
        argv.extend(["-u".into(), user]);
    }
    argv.extend(["--cd".into(), to_linux(&request.cwd, &root), "-e".into()]);
    argv.extend(request.argv.iter().map(|a| to_linux(a, &root)));
    // Secrets cross as they are (never translated), with whatever the user lists, and cairn's own variables.
    let mut plain = request.secret_env.clone();
    plain.extend(words("pass_env"));
    plain.extend(
        request
            .env
            .iter()
            .filter(|n| n.starts_with("CAIRN_"))
            .cloned(),
    );
    let paths = words("path_env");
    let mut set_env = BTreeMap::new();
    set_env.insert("WSLENV".to_string(), wslenv(None, &plain, &paths));
    Ok(WrapResponse {
        argv,
        cwd: None,
        set_env,
    })
}

plugin! { describe: describe, executor: wrap }

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_pdk::api::Reply;
    use cairn_pdk::serde_json::json;
    use cairn_pdk::testing;

    #[test]
    fn windows_paths_become_linux_paths() {
        for (windows, linux) in [
            (r"C:\Users\alex\dotfiles", "/mnt/c/Users/alex/dotfiles"),
            ("D:/work/repo/", "/mnt/d/work/repo"),
            ("c:", "/mnt/c"),
            (r"\\wsl$\NixOS\home\alex", "/home/alex"),
            (r"\\wsl.localhost\Ubuntu\etc\nixos", "/etc/nixos"),
            ("/already/linux", "/already/linux"),
            ("--flag", "--flag"),
            ("C:relative", "C:relative"),
        ] {
            assert_eq!(to_linux(windows, "/mnt/"), linux, "{windows}");
        }
        assert_eq!(to_linux(r"E:\x", "/"), "/e/x");
    }

    #[test]
    fn wslenv_flags_each_name_once() {
        let plain = vec!["TOKEN".to_string(), "GOPATH".to_string()];
        assert_eq!(
            wslenv(Some("GOPATH/l"), &plain, &["REPO".to_string()]),
            "GOPATH/l:REPO/p:TOKEN/u"
        );
    }

    #[test]
    fn commands_are_wrapped_on_windows_and_left_alone_elsewhere() {
        testing::set_config(&[("distro", "NixOS"), ("user", "alex"), ("path_env", "REPO")]);
        let request = |os: &str| {
            json!({"task": "t", "argv": ["nix", "build", r"C:\src\flake"], "cwd": r"C:\src",
            "env": ["PATH", "CAIRN_TASK"], "secret_env": ["TOKEN"], "host_os": os})
        };
        let Reply::Ok(wrapped) = testing::call(wrap, &request("windows")) else {
            panic!()
        };
        assert_eq!(
            wrapped.argv,
            [
                "wsl.exe",
                "-d",
                "NixOS",
                "-u",
                "alex",
                "--cd",
                "/mnt/c/src",
                "-e",
                "nix",
                "build",
                "/mnt/c/src/flake"
            ]
        );
        assert_eq!(wrapped.set_env["WSLENV"], "REPO/p:TOKEN/u:CAIRN_TASK/u");
        let Reply::Ok(untouched) = testing::call(wrap, &request("linux")) else {
            panic!()
        };
        assert_eq!(untouched.argv, ["nix", "build", r"C:\src\flake"]);
    }
}
