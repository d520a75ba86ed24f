//! `cairn secrets …`: create an identity, edit, set, get, list, check, update recipients and rotate keys.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use super::CliError;
use crate::secrets::file::{Format, SopsFile};
use crate::secrets::files::{self, Decrypted};
use crate::secrets::keys::{self, Keyring};
use crate::secrets::policy::{self, Policy};
use crate::secrets::rotate::{self, RotateOptions, RotateReport};
use crate::secrets::tree::{self, Document, Node, Scalar};
use crate::secrets::SecretsError;

#[derive(Debug, clap::Args)]
pub(super) struct SecretsArgs {
    /// An age identity file (keys.txt or an SSH private key) to try before the usual places.
    #[arg(long = "identity", short = 'i', global = true, value_name = "FILE")]
    identity: Vec<PathBuf>,
    #[command(subcommand)]
    command: SecretsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum SecretsCommand {
    /// Create your age identity if you have none, print its public key and add it to .sops.yaml.
    Init {
        /// The name your key gets in .sops.yaml (default: $USER).
        #[arg(long)]
        name: Option<String>,
    },
    /// Decrypt FILE into a private temporary file, open $EDITOR, then encrypt it back.
    Edit {
        /// The secrets file (created when it does not exist).
        file: PathBuf,
    },
    /// Set KEY (dotted: db.password) in FILE to a value read from stdin (never from the command line).
    Set {
        /// The secrets file (created when it does not exist).
        file: PathBuf,
        /// The key, dotted for nested values.
        key: String,
    },
    /// Print the value of KEY in FILE.
    Get {
        /// The secrets file.
        file: PathBuf,
        /// The key, dotted for nested values.
        key: String,
    },
    /// Encrypt a plaintext file in place, to the recipients of its rule.
    Encrypt {
        /// The plaintext file.
        file: PathBuf,
    },
    /// List the secrets files with their recipients, or the keys of one file (never values).
    Ls {
        /// A file whose keys to list.
        file: Option<PathBuf>,
    },
    /// Check every file against .sops.yaml and say which of your identities opens what.
    Doctor {
        /// Check what a machine without a key can (each file encrypted, one rule, the rule's recipients), and
        /// do not fail for lack of an identity: for CI and fresh clones. MACs are verified only by files an
        /// identity opens.
        #[arg(long)]
        without_identity: bool,
    },
    /// Refuse secrets in the clear: decrypted values of this repository's secrets, unencrypted files where
    /// .sops.yaml says secrets live, and private keys and tokens by their formats (the pre-commit hook runs it).
    Scan {
        /// Scan what is staged for the next commit (what `git commit` would record).
        #[arg(long)]
        staged: bool,
        /// Print the findings as JSON.
        #[arg(long)]
        json: bool,
        /// Files or directories to scan (default: every file git does not ignore).
        #[arg(value_name = "PATH", conflicts_with = "staged")]
        paths: Vec<PathBuf>,
    },
    /// Re-wrap the data key for the recipients .sops.yaml now names (the data key stays the same).
    Updatekeys(ScopeArgs),
    /// Give files a new data key and the recipients .sops.yaml now names, crash-safely.
    Rotate {
        #[command(flatten)]
        scope: ScopeArgs,
        /// Finish a rotation that was interrupted.
        #[arg(long, conflicts_with = "abort")]
        resume: bool,
        /// Abandon a rotation that was interrupted (files already rotated keep their new version).
        #[arg(long)]
        abort: bool,
        /// Rotate even files that none of your identities will open afterwards.
        #[arg(long)]
        allow_lockout: bool,
    },
}

#[derive(Debug, clap::Args)]
struct ScopeArgs {
    /// Only the files of this environment (`secrets/ENV/`).
    #[arg(long = "env", value_name = "ENV")]
    env: Option<String>,
    /// Only these files (default: every file under secrets/).
    files: Vec<PathBuf>,
}

/// The directory, below the policy's, that holds secrets files.
const SECRETS_DIR: &str = "secrets";

pub(super) fn secrets(args: SecretsArgs) -> Result<i32, CliError> {
    // Plaintext that a killed `secrets edit` or run left behind goes first, whatever this command is.
    for left in crate::secrets::files::sweep_stale_private_dirs() {
        eprintln!(
            "cairn: warning: cannot remove `{}`, a plaintext copy left by a cairn that was killed: remove it by hand",
            left.display()
        );
    }
    let keyring = || Keyring::discover(&args.identity);
    let result = match args.command {
        SecretsCommand::Init { name } => init(name),
        SecretsCommand::Edit { file } => edit(&file, &keyring()),
        SecretsCommand::Set { file, key } => set(&file, &key, &keyring()),
        SecretsCommand::Get { file, key } => get(&file, &key, &keyring()),
        SecretsCommand::Encrypt { file } => encrypt(&file),
        SecretsCommand::Ls { file } => ls(file.as_deref(), &keyring()),
        SecretsCommand::Doctor { without_identity } => doctor(&keyring(), without_identity),
        SecretsCommand::Scan {
            staged,
            json,
            paths,
        } => scan(staged, json, &paths, &keyring()),
        SecretsCommand::Updatekeys(scope) => updatekeys(&scope, &keyring()),
        SecretsCommand::Rotate {
            scope,
            resume,
            abort,
            allow_lockout,
        } => rotate_command(&scope, &keyring(), resume, abort, allow_lockout),
    };
    result.map_err(CliError::Secrets)
}

fn scan(
    staged: bool,
    json: bool,
    paths: &[PathBuf],
    keyring: &Keyring,
) -> Result<i32, SecretsError> {
    use crate::secrets::scan::{self, KnownValues};
    let here = cwd()?;
    let policy = Policy::discover(&here).ok();
    let root = policy
        .as_ref()
        .map_or_else(|| here.clone(), |p| p.root.clone());
    // The real values, from every file an identity here opens: held in memory only, as the automaton's input.
    let mut known = KnownValues::default();
    let mut opened = 0;
    if let Some(policy) = &policy {
        for path in files::find(&secrets_dir(policy))? {
            let Ok(decrypted) = files::decrypt(&path, keyring, Some(policy)) else {
                continue;
            };
            opened += 1;
            for leaf in crate::secrets::tree::leaf_paths(&decrypted.plain) {
                if let Some(crate::secrets::tree::Node::Scalar(value)) =
                    crate::secrets::tree::lookup(&decrypted.plain, &leaf)
                {
                    known.add(&value.text, &format!("{}#{leaf}", display(policy, &path)));
                }
            }
        }
    }
    let candidates = scan::candidates(&root, staged, paths)
        .map_err(|message| SecretsError::usage(message, None))?;
    let allowances = scan::read_allowances(&root).map_err(|message| {
        SecretsError::usage(message, Some(format!("each entry of {} is `[[allow]] path = \"GLOB\", kind = \"KIND\", reason = \"why\"`", scan::ALLOW_FILE)))
    })?;
    let covered = |path: &str| {
        policy
            .as_ref()
            .is_some_and(|p| !p.matching(&root.join(path)).is_empty())
    };
    let findings = scan::scan(&candidates, &known, &covered, &allowances);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "scanned": candidates.len(),
                "known_values_from": opened,
                "findings": findings,
            }))
            .unwrap_or_default()
        );
    } else {
        for finding in &findings {
            match finding.line {
                0 => println!("{}: {}: {}", finding.path, finding.kind, finding.detail),
                line => println!(
                    "{}:{line}: {}: {}",
                    finding.path, finding.kind, finding.detail
                ),
            }
        }
        let values = if opened == 0 {
            "no identity here opens a secrets file, so their values were not looked for".to_owned()
        } else {
            format!(
                "the values of {opened} secrets file{} looked for",
                if opened == 1 { "" } else { "s" }
            )
        };
        if findings.is_empty() {
            eprintln!(
                "cairn: no secrets in the clear in {} file{} ({values})",
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" }
            );
        } else {
            eprintln!(
                "cairn: {} secret{} in the clear in {} file{} scanned ({values}); {}",
                findings.len(),
                if findings.len() == 1 { "" } else { "s" },
                candidates.len(),
                if candidates.len() == 1 { "" } else { "s" },
                if staged {
                    "the commit is refused: unstage or encrypt them (`git commit --no-verify` skips the hook once)"
                } else {
                    "encrypt them, remove them, or allow a false alarm in .cairn-scan-allow.toml with its reason"
                }
            );
        }
    }
    Ok(i32::from(!findings.is_empty()))
}

fn cwd() -> Result<PathBuf, SecretsError> {
    std::env::current_dir().map_err(|e| SecretsError::io("read", ".", e))
}

fn policy_for(file: Option<&Path>) -> Result<Policy, SecretsError> {
    let start = match file
        .and_then(Path::parent)
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(dir) if dir.is_dir() => dir.to_path_buf(),
        _ => cwd()?,
    };
    Policy::discover(&start)
}

fn warn_if_rotation_pending(policy: &Policy) {
    if let Some(journal) = rotate::pending(policy) {
        eprintln!(
            "cairn: warning: an interrupted rotation is pending ({}); run `cairn secrets rotate --resume` or `--abort`",
            journal.display()
        );
    }
}

fn init(name: Option<String>) -> Result<i32, SecretsError> {
    let name = name
        .or_else(|| std::env::var("USER").ok())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            SecretsError::usage("cannot tell your name", Some("pass `--name NAME`".into()))
        })?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
    {
        return Err(SecretsError::usage(
            format!("`{name}` cannot be a YAML anchor name"),
            Some("use letters, digits, `-` and `_`".into()),
        ));
    }
    let key_file = match std::env::var_os("SOPS_AGE_KEY_FILE") {
        Some(path) => PathBuf::from(path),
        None => keys::default_key_files()
            .into_iter()
            .next()
            .ok_or_else(|| {
                SecretsError::usage(
                    "cannot tell where your keys.txt goes: HOME is not set",
                    None,
                )
            })?,
    };
    let public = match std::fs::read_to_string(&key_file) {
        Ok(text) => {
            let identities = keys::identities_from_text(&text, &key_file.display().to_string())
                .map_err(|e| SecretsError::usage(e, None))?;
            let public = identities
                .iter()
                .find_map(|i| i.public.clone())
                .ok_or_else(|| {
                    SecretsError::usage(format!("{} holds no age key", key_file.display()), None)
                })?;
            eprintln!(
                "cairn: using your existing identity in {}",
                key_file.display()
            );
            public
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (secret, public) = keys::generate();
            write_private_key(&key_file, &secret, &public)?;
            eprintln!("cairn: created your age identity in {}", key_file.display());
            public
        }
        Err(e) => return Err(SecretsError::io("read", &key_file, e)),
    };
    println!("{public}");
    let policy_path = match Policy::discover(&cwd()?) {
        Ok(policy) => policy.path,
        Err(_) => cwd()?.join(policy::FILE_NAME),
    };
    add_to_policy(&policy_path, &name, &public)?;
    Ok(0)
}

fn write_private_key(path: &Path, secret: &str, public: &str) -> Result<(), SecretsError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| SecretsError::io("create", dir, e))?;
    }
    let text = format!(
        "# created: {}\n# public key: {public}\n{secret}\n",
        crate::time::now_rfc3339()
    );
    crate::atomic::write_atomic_with(path, |file| {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        file.write_all(text.as_bytes())
    })
    .map_err(|e| SecretsError::io("write", path, e))
}

/// Adds `- &name key` to the `keys:` list, editing the text so the user's layout and comments stay.
fn add_to_policy(path: &Path, name: &str, public: &str) -> Result<(), SecretsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = format!(
                "# Who can read which secrets. cairn and sops both read this file.\nkeys:\n  - &{name} {public}\ncreation_rules:\n  - path_regex: ^secrets/\n    key_groups:\n      - age:\n          - *{name}\n"
            );
            files::write(path, &text)?;
            eprintln!(
                "cairn: created {} with a rule for secrets/ encrypted to {name}",
                path.display()
            );
            return Ok(());
        }
        Err(e) => return Err(SecretsError::io("read", path, e)),
    };
    if text.contains(public) {
        eprintln!("cairn: {} already lists this key", path.display());
        return Ok(());
    }
    if text.contains(&format!("&{name} ")) {
        return Err(SecretsError::usage(
            format!(
                "{} already has a key named `{name}` (a different one)",
                path.display()
            ),
            Some("choose another name with `--name`, or replace the old key by hand".into()),
        ));
    }
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let line = match lines.iter().position(|l| l.trim_end() == "keys:") {
        Some(at) => {
            let mut end = at + 1;
            while end < lines.len() && (lines[end].starts_with(' ') || lines[end].trim().is_empty())
            {
                end += 1;
            }
            let indent = lines[at + 1..end]
                .iter()
                .find(|l| l.trim_start().starts_with('-'))
                .map_or("  ".to_string(), |l| {
                    l[..l.len() - l.trim_start().len()].to_string()
                });
            while end > at + 1 && lines[end - 1].trim().is_empty() {
                end -= 1;
            }
            lines.insert(end, format!("{indent}- &{name} {public}"));
            end
        }
        None => {
            lines.insert(0, format!("  - &{name} {public}"));
            lines.insert(0, "keys:".into());
            1
        }
    };
    let mut updated = lines.join("\n");
    updated.push('\n');
    Policy::parse(path, PathBuf::from("."), &updated)?;
    files::write(path, &updated)?;
    eprintln!(
        "cairn: added `&{name}` to {} (line {}); list `*{name}` in the rules whose files you should read, then run `cairn secrets updatekeys`",
        path.display(),
        line + 1
    );
    Ok(())
}

/// Opens `path` if it exists; `None` for a file still to be created.
fn open_existing(
    path: &Path,
    keyring: &Keyring,
    policy: &Policy,
) -> Result<Option<Decrypted>, SecretsError> {
    if !path.exists() {
        return Ok(None);
    }
    files::decrypt(path, keyring, Some(policy)).map(Some)
}

fn edit(path: &Path, keyring: &Keyring) -> Result<i32, SecretsError> {
    let policy = policy_for(Some(path))?;
    warn_if_rotation_pending(&policy);
    policy.rule_for(path)?;
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    let previous = open_existing(path, keyring, &policy)?;
    let plain_text = match &previous {
        Some(previous) => format.emit(&previous.plain).map_err(|e| SecretsError::format(path, e))?,
        None => match format {
            Format::Yaml => "# New secrets file. Write `key: value` lines; they are encrypted when you save and quit.\n".into(),
            Format::Json => "{\n}\n".into(),
            Format::Dotenv => "# NAME=value lines\n".into(),
        },
    };
    let scratch = Scratch::new(path, &plain_text)?;
    let _guard = SignalGuard::install(scratch.dir.clone());
    loop {
        run_editor(&scratch.file)?;
        let edited = std::fs::read_to_string(&scratch.file)
            .map_err(|e| SecretsError::io("read", &scratch.file, e))?;
        if edited == plain_text && previous.is_some() {
            eprintln!("cairn: {} unchanged", path.display());
            return Ok(0);
        }
        match format.parse(&edited) {
            Ok(plain) => {
                let text = files::encrypt_for(path, &plain, &policy, previous)?;
                files::write(path, &text)?;
                eprintln!("cairn: {} encrypted and saved", path.display());
                return Ok(0);
            }
            Err(error) => {
                eprintln!("cairn: {}: {error}", path.display());
                if !std::io::stdin().is_terminal() {
                    return Err(SecretsError::format(path, error));
                }
                eprint!(
                    "cairn: press Enter to edit again, or Ctrl-C to give up (nothing is saved): "
                );
                let mut answer = String::new();
                if std::io::stdin().read_line(&mut answer).unwrap_or(0) == 0 {
                    return Err(SecretsError::format(path, error));
                }
            }
        }
    }
}

/// A private copy of a plaintext for the editor: a 0600 file in a 0700 directory, on tmpfs when the
/// system has one; overwritten with zeros and removed when dropped.
struct Scratch {
    dir: PathBuf,
    file: PathBuf,
}

impl Scratch {
    fn new(original: &Path, text: &str) -> Result<Scratch, SecretsError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let base = files::private_base();
        let suffix = u64::from_le_bytes(
            crate::secrets::cipher::random::<8>().map_err(|e| SecretsError::format(original, e))?,
        );
        // The pid lets a later command tell that a copy was left by a cairn that was killed.
        let dir = base.join(format!("cairn-edit-{}-{suffix:016x}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| SecretsError::io("create", &dir, e))?;
        let name = original
            .file_name()
            .map_or_else(|| "secrets".into(), |n| n.to_os_string());
        let file = dir.join(name);
        let scratch = Scratch { dir, file };
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&scratch.file)
            .map_err(|e| SecretsError::io("create", &scratch.file, e))?;
        handle
            .write_all(text.as_bytes())
            .map_err(|e| SecretsError::io("write", &scratch.file, e))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        files::wipe_dir(&self.dir);
    }
}

/// While a plaintext copy exists: Ctrl-C and Ctrl-\\ go to the editor only (cairn ignores them, as
/// `system()` does), and SIGTERM or SIGHUP make cairn remove the copy before it exits.
struct SignalGuard {
    previous: [libc::sighandler_t; 2],
}

impl SignalGuard {
    fn install(dir: PathBuf) -> SignalGuard {
        // SAFETY: plain libc signal-mask and disposition calls; the watcher thread only waits for the blocked
        // signals, then removes the directory and exits.
        unsafe {
            let previous = [
                libc::signal(libc::SIGINT, libc::SIG_IGN),
                libc::signal(libc::SIGQUIT, libc::SIG_IGN),
            ];
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGHUP);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            std::thread::spawn(move || {
                let mut signal = 0;
                if libc::sigwait(&set, &mut signal) == 0 {
                    files::wipe_dir(&dir);
                    eprintln!("cairn: stopped by a signal; the plaintext copy was removed and nothing was saved");
                    std::process::exit(128 + signal);
                }
            });
            SignalGuard { previous }
        }
    }
}

impl Drop for SignalGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the dispositions saved in `install`.
        unsafe {
            libc::signal(libc::SIGINT, self.previous[0]);
            libc::signal(libc::SIGQUIT, self.previous[1]);
        }
    }
}

fn run_editor(file: &Path) -> Result<(), SecretsError> {
    let editor = ["VISUAL", "EDITOR"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|e| !e.trim().is_empty()))
        .unwrap_or_else(|| "vi".into());
    let mut command = std::process::Command::new("sh");
    command
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file);
    // SAFETY: only async-signal-safe calls between fork and exec: the editor gets default signal handling
    // back (dispositions and the blocked mask are inherited across exec).
    unsafe {
        use std::os::unix::process::CommandExt;
        command.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGQUIT, libc::SIG_DFL);
            let mut all: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
            Ok(())
        });
    }
    let status = command
        .status()
        .map_err(|e| SecretsError::io("run the editor for", file, e))?;
    if !status.success() {
        return Err(SecretsError::usage(
            format!("the editor (`{editor}`) failed ({status}); nothing was saved"),
            Some(
                "set $EDITOR to an editor that waits until the file is closed (e.g. `code --wait`)"
                    .into(),
            ),
        ));
    }
    Ok(())
}

fn read_secret_from_stdin(key: &str) -> Result<String, SecretsError> {
    let stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("value for {key} (not shown): ");
        let _echo = EchoOff::new();
        stdin
            .read_line(&mut value)
            .map_err(|e| SecretsError::io("read", "stdin", e))?;
        eprintln!();
    } else {
        stdin
            .lock()
            .read_to_string(&mut value)
            .map_err(|e| SecretsError::io("read", "stdin", e))?;
    }
    // `echo pw | cairn secrets set …` means `pw`; a multi-line value (a PEM or OpenSSH key) is kept exactly,
    // since its last newline is part of the format (ssh refuses a key file without it).
    if let Some(stripped) = value.strip_suffix('\n') {
        let stripped = stripped.strip_suffix('\r').unwrap_or(stripped);
        if !stripped.contains('\n') {
            value.truncate(stripped.len());
        }
    }
    Ok(value)
}

/// Turns terminal echo off while it lives.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: termios calls on stdin with a zeroed struct that tcgetattr fills.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet);
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = self.0 {
            // SAFETY: restoring the attributes read in `new`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &saved);
            }
        }
    }
}

fn set(path: &Path, key: &str, keyring: &Keyring) -> Result<i32, SecretsError> {
    let policy = policy_for(Some(path))?;
    warn_if_rotation_pending(&policy);
    policy.rule_for(path)?;
    let previous = open_existing(path, keyring, &policy)?;
    let value = read_secret_from_stdin(key)?;
    let mut plain: Document = previous
        .as_ref()
        .map(|p| p.plain.clone())
        .unwrap_or_default();
    tree::set(&mut plain, key, Node::Scalar(Scalar::string(value)))
        .map_err(|why| SecretsError::usage(format!("cannot set `{key}`: {why}"), None))?;
    let text = files::encrypt_for(path, &plain, &policy, previous)?;
    files::write(path, &text)?;
    eprintln!("cairn: set `{key}` in {}", path.display());
    Ok(0)
}

fn get(path: &Path, key: &str, keyring: &Keyring) -> Result<i32, SecretsError> {
    let policy = policy_for(Some(path)).ok();
    let opened = files::decrypt(path, keyring, policy.as_ref())?;
    let node = tree::lookup(&opened.plain, key).ok_or_else(|| SecretsError::NoKey {
        path: path.to_path_buf(),
        key: key.to_string(),
        help: Some(format!(
            "its keys: {}",
            tree::leaf_paths(&opened.plain).join(", ")
        )),
    })?;
    let text = match node {
        Node::Scalar(scalar) => scalar.text.clone(),
        Node::Null => String::new(),
        Node::Map(_) | Node::List(_) => {
            let below: Vec<String> = tree::leaf_paths(&vec![crate::secrets::tree::MapItem::Pair(
                key.to_string(),
                node.clone(),
            )]);
            return Err(SecretsError::usage(
                format!("`{key}` holds several values"),
                Some(format!("ask for one of: {}", below.join(", "))),
            ));
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    if std::io::stdout().is_terminal() {
        let _ = out.write_all(b"\n");
    }
    Ok(0)
}

fn encrypt(path: &Path) -> Result<i32, SecretsError> {
    let policy = policy_for(Some(path))?;
    let text = std::fs::read_to_string(path).map_err(|e| SecretsError::io("read", path, e))?;
    let format = Format::for_path(path).map_err(|e| SecretsError::format(path, e))?;
    if SopsFile::is_encrypted(format, &text) {
        return Err(SecretsError::format(
            path,
            crate::secrets::FormatError::AlreadyEncrypted,
        ));
    }
    let plain = format
        .parse(&text)
        .map_err(|e| SecretsError::format(path, e))?;
    let encrypted = files::encrypt_for(path, &plain, &policy, None)?;
    files::write(path, &encrypted)?;
    let rule = policy.rule_for(path)?;
    let names: Vec<String> = rule.recipients.iter().map(|r| policy.label(r)).collect();
    eprintln!(
        "cairn: encrypted {} to {}",
        path.display(),
        names.join(", ")
    );
    Ok(0)
}

fn secrets_dir(policy: &Policy) -> PathBuf {
    policy.root.join(SECRETS_DIR)
}

fn display(policy: &Policy, path: &Path) -> String {
    policy.relative(path)
}

fn ls(file: Option<&Path>, keyring: &Keyring) -> Result<i32, SecretsError> {
    if let Some(path) = file {
        let encrypted = files::read(path)?;
        for key in tree::leaf_paths(&encrypted.tree) {
            println!("{key}");
        }
        return Ok(0);
    }
    let policy = policy_for(None)?;
    warn_if_rotation_pending(&policy);
    for path in files::find(&secrets_dir(&policy))? {
        let shown = display(&policy, &path);
        match files::read(&path) {
            Ok(file) => {
                let names: Vec<String> =
                    file.recipients().iter().map(|r| policy.label(r)).collect();
                let access = match keyring.unwrap(&file.metadata.age) {
                    Some((_, identity)) => format!(
                        "opens with {}",
                        identity
                            .public
                            .as_deref()
                            .and_then(|p| policy.name_of(p))
                            .unwrap_or(&identity.source)
                    ),
                    None => "none of your identities opens it".into(),
                };
                println!(
                    "{shown}\n    {} values; recipients: {}; {access}",
                    tree::leaf_paths(&file.tree).len(),
                    names.join(", ")
                );
            }
            Err(error) => println!("{shown}\n    not readable as a secrets file: {error}"),
        }
    }
    Ok(0)
}

fn doctor(keyring: &Keyring, without_identity: bool) -> Result<i32, SecretsError> {
    let policy = policy_for(None)?;
    let mut problems = 0;
    let mut report = |ok: bool, line: String| {
        if !ok {
            problems += 1;
        }
        println!("{} {line}", if ok { "ok  " } else { "FAIL" });
    };
    report(
        true,
        format!(
            "{} parses: {} keys, {} rules",
            policy.path.display(),
            policy.keys.len(),
            policy.rules.len()
        ),
    );
    if let Some(journal) = rotate::pending(&policy) {
        report(false, format!("an interrupted rotation is pending ({}): run `cairn secrets rotate --resume` or `--abort`", journal.display()));
    }
    for left in rotate::sweep_temps(&policy) {
        report(
            false,
            format!(
                "{}: a temp file a killed cairn left, which cannot be removed: remove it by hand",
                left.display()
            ),
        );
    }
    if keyring.identities.is_empty() && without_identity {
        println!("      no age identity here: checking encryption, rules and recipients only (MACs need a key)");
    } else if keyring.identities.is_empty() {
        report(
            false,
            format!(
                "no age identity found (looked at: {})",
                keyring.tried.join("; ")
            ),
        );
    } else {
        for identity in &keyring.identities {
            let name = identity
                .public
                .as_deref()
                .and_then(|p| policy.name_of(p))
                .map(|n| format!(" = {n}"))
                .unwrap_or_default();
            println!("      identity {}{name}", identity.describe());
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    for path in files::find(&secrets_dir(&policy))? {
        let shown = display(&policy, &path);
        let file = match files::read(&path) {
            Ok(file) => file,
            Err(SecretsError::Format {
                problem: crate::secrets::FormatError::NotEncrypted,
                ..
            }) => {
                report(false, format!("{shown}: plaintext under secrets/; encrypt it with `cairn secrets encrypt {shown}`"));
                continue;
            }
            Err(error) => {
                report(false, format!("{shown}: {error}"));
                continue;
            }
        };
        let rules = policy.matching(&path);
        let Some(rule) = rules.first() else {
            report(false, format!("{shown}: no creation rule matches it"));
            continue;
        };
        if rules.len() > 1 {
            let which: Vec<String> = rules.iter().map(|r| r.describe()).collect();
            report(
                false,
                format!(
                    "{shown}: matches {} rules ({}); the first wins, make them exclusive",
                    rules.len(),
                    which.join(", ")
                ),
            );
        }
        used.extend(rule.recipients.iter().cloned());
        let has: BTreeSet<&str> = file.recipients().into_iter().collect();
        let wants: BTreeSet<&str> = rule.recipients.iter().map(String::as_str).collect();
        if has != wants {
            let missing: Vec<String> = wants.difference(&has).map(|r| policy.label(r)).collect();
            let extra: Vec<String> = has.difference(&wants).map(|r| policy.label(r)).collect();
            report(false, format!(
                "{shown}: recipients differ from {} (missing: {}; not in the rule: {}); run `cairn secrets updatekeys` (or `rotate` when someone was removed)",
                rule.describe(),
                if missing.is_empty() { "none".into() } else { missing.join(", ") },
                if extra.is_empty() { "none".into() } else { extra.join(", ") },
            ));
        }
        match keyring.unwrap(&file.metadata.age) {
            Some((key, identity)) => match file.decrypt(&key) {
                Ok(_) => report(
                    true,
                    format!(
                        "{shown}: opens with {} and verifies",
                        identity
                            .public
                            .as_deref()
                            .and_then(|p| policy.name_of(p))
                            .unwrap_or(&identity.source)
                    ),
                ),
                Err(error) => report(false, format!("{shown}: {error}")),
            },
            None if keyring.identities.is_empty() => {}
            None => println!("      {shown}: none of your identities is a recipient"),
        }
    }
    for (name, recipient) in &policy.keys {
        if !used.contains(recipient) {
            println!("      note: key `{name}` is not a recipient of any file");
        }
    }
    if problems == 0 {
        println!(
            "cairn: secrets are consistent with {}",
            policy.path.display()
        );
        Ok(0)
    } else {
        println!("cairn: {problems} problem(s)");
        Ok(1)
    }
}

fn scope_files(policy: &Policy, scope: &ScopeArgs) -> Result<Vec<PathBuf>, SecretsError> {
    if !scope.files.is_empty() {
        return Ok(scope.files.clone());
    }
    let mut dir = secrets_dir(policy);
    if let Some(env) = &scope.env {
        dir = dir.join(env);
        if !dir.is_dir() {
            return Err(SecretsError::usage(
                format!("no environment `{env}`: `{}` does not exist", dir.display()),
                None,
            ));
        }
    }
    let found = files::find(&dir)?;
    if found.is_empty() {
        return Err(SecretsError::usage(
            format!("no secrets files under `{}`", dir.display()),
            None,
        ));
    }
    Ok(found)
}

fn updatekeys(scope: &ScopeArgs, keyring: &Keyring) -> Result<i32, SecretsError> {
    let policy = policy_for(scope.files.first().map(PathBuf::as_path))?;
    warn_if_rotation_pending(&policy);
    let mut removed_any = false;
    for path in scope_files(&policy, scope)? {
        let shown = display(&policy, &path);
        let mut opened = files::decrypt(&path, keyring, Some(&policy))?;
        let rule = policy.rule_for(&path)?;
        let before: Vec<String> = opened
            .file
            .recipients()
            .into_iter()
            .map(String::from)
            .collect();
        if before.iter().map(String::as_str).collect::<BTreeSet<_>>()
            == rule.recipients.iter().map(String::as_str).collect()
        {
            eprintln!("cairn: {shown}: recipients already match");
            continue;
        }
        opened
            .file
            .rewrap(&opened.key, &rule.parsed_recipients())
            .map_err(|e| SecretsError::format(&path, e))?;
        let text = opened
            .file
            .render()
            .map_err(|e| SecretsError::format(&path, e))?;
        files::verify(&path, &text, &opened.key, &opened.plain)?;
        files::write(&path, &text)?;
        let added: Vec<String> = rule
            .recipients
            .iter()
            .filter(|r| !before.contains(r))
            .map(|r| policy.label(r))
            .collect();
        let removed: Vec<String> = before
            .iter()
            .filter(|r| !rule.recipients.contains(r))
            .map(|r| policy.label(r))
            .collect();
        removed_any |= !removed.is_empty();
        eprintln!(
            "cairn: {shown}: added {}; removed {}",
            if added.is_empty() {
                "nobody".into()
            } else {
                added.join(", ")
            },
            if removed.is_empty() {
                "nobody".into()
            } else {
                removed.join(", ")
            }
        );
    }
    if removed_any {
        eprintln!("cairn: warning: removed recipients still know these files' data keys; run `cairn secrets rotate` to change them");
    }
    Ok(0)
}

fn rotate_command(
    scope: &ScopeArgs,
    keyring: &Keyring,
    resume: bool,
    abort: bool,
    allow_lockout: bool,
) -> Result<i32, SecretsError> {
    let policy = policy_for(scope.files.first().map(PathBuf::as_path))?;
    let options = RotateOptions { allow_lockout };
    let report = if resume {
        rotate::resume(&policy, keyring, &options)?
    } else if abort {
        rotate::abort(&policy)?
    } else {
        let targets = scope_files(&policy, scope)?;
        rotate::rotate(&policy, keyring, &targets, &options)?
    };
    print_rotation(&policy, &report, abort);
    Ok(0)
}

fn print_rotation(policy: &Policy, report: &RotateReport, aborted: bool) {
    for path in &report.recovered {
        if aborted {
            eprintln!("cairn: {}: left at its old version", display(policy, path));
        } else {
            eprintln!(
                "cairn: {}: finished from the interrupted rotation",
                display(policy, path)
            );
        }
    }
    for path in &report.rotated {
        eprintln!(
            "cairn: {}: new data key, recipients of its rule",
            display(policy, path)
        );
    }
    for exposure in &report.exposed {
        eprintln!(
            "cairn: {}: {} could read these values, which rotation cannot take back; change them at their source: {}",
            display(policy, &exposure.path),
            exposure.removed.join(", "),
            exposure.values.join(", ")
        );
    }
    if !report.rotated.is_empty() {
        eprintln!(
            "cairn: rotated {} file(s); commit them: git add {} && git commit -m 'rotate secrets'",
            report.rotated.len(),
            SECRETS_DIR
        );
    }
}
