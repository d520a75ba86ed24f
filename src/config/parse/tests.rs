//! Each kind of mistake the loader reports, through `Config::parse`: the variant, the text it names, and the
//! place (line and column) its span points at.

use std::path::PathBuf;

use crate::config::source::line_column;
use crate::config::{Config, ConfigError};

/// The errors `text` gets, flattened (a single one, or each of `Many`).
fn errors(text: &str) -> Vec<ConfigError> {
    let root = PathBuf::from("/nonexistent/cairn-tests");
    match Config::parse("tasks.toml", text, root.join("tasks.toml"), root) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(ConfigError::Many { errors, .. }) => errors,
        Err(error) => vec![error],
    }
}

/// The one error `text` gets, with the line and column its span starts at.
fn only(text: &str) -> (ConfigError, (usize, usize)) {
    let mut all = errors(text);
    assert_eq!(all.len(), 1, "one error expected: {all:?}");
    let error = all.remove(0);
    let offset = match &error {
        ConfigError::Syntax { span, .. }
        | ConfigError::UnknownKey { span, .. }
        | ConfigError::WrongType { span, .. }
        | ConfigError::InvalidValue { span, .. }
        | ConfigError::UnknownName { span, .. }
        | ConfigError::SecretInCommand { span, .. }
        | ConfigError::Template { span, .. }
        | ConfigError::DataFile { span, .. } => span.offset(),
        other => panic!("no span: {other:?}"),
    };
    let place = line_column(text, offset);
    (error, place)
}

#[test]
fn invalid_toml_is_a_syntax_error_at_its_place() {
    let (error, place) = only("[tasks.a]\nrun = \"echo\n");
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error:?}");
    assert_eq!(place.0, 2);
}

#[test]
fn an_unknown_key_names_itself_and_suggests_the_closest() {
    let (error, place) = only("[tasks.a]\nrun = \"true\"\ndpes = []\n");
    let ConfigError::UnknownKey { key, help, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(key, "dpes");
    assert_eq!(help.as_deref(), Some("did you mean `deps`?"));
    assert_eq!(place, (3, 1));
}

#[test]
fn a_value_of_the_wrong_type_says_what_was_expected() {
    let (error, place) = only("[tasks.a]\nrun = \"true\"\nretries = \"three\"\n");
    let ConfigError::WrongType { key, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(key, "retries");
    assert_eq!(place, (3, 11));
}

#[test]
fn an_invalid_value_gives_the_reason() {
    let (error, place) = only("[tasks.a]\nrun = \"true\"\ntimeout = \"10 fortnights\"\n");
    assert!(
        matches!(&error, ConfigError::InvalidValue { key, .. } if key == "timeout"),
        "{error:?}"
    );
    assert_eq!(place.0, 3);
}

#[test]
fn an_unknown_name_in_a_template_is_reported_with_the_names_in_scope() {
    let (error, place) = only("[vars]\nflake = \".\"\n[tasks.a]\nrun = \"echo {{flak}}\"\n");
    let ConfigError::UnknownName { name, help, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(name, "flak");
    assert!(
        help.as_deref().is_some_and(|h| h.contains("flake")),
        "{help:?}"
    );
    assert_eq!(place, (4, 13));
}

#[test]
fn a_secret_placed_on_the_command_line_is_refused() {
    let text = "[tasks.a]\nrun = \"deploy --token {{TOKEN}}\"\nsecrets.from = \"secrets/app.yaml\"\nsecrets.env = { TOKEN = \"token\" }\n";
    let (error, place) = only(text);
    assert!(
        matches!(&error, ConfigError::SecretInCommand { name, .. } if name == "TOKEN"),
        "{error:?}"
    );
    assert_eq!(place.0, 2);
}

#[test]
fn a_malformed_interpolation_is_a_template_error() {
    let (error, place) = only("[tasks.a]\nrun = \"echo {{unclosed\"\n");
    assert!(matches!(error, ConfigError::Template { .. }), "{error:?}");
    assert_eq!(place.0, 2);
}

#[test]
fn a_broken_data_file_is_reported_in_it_and_a_missing_key_where_tasks_toml_names_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let text = "[tasks.\"b:{host}\"]\nparams.host = { values = { from = \"inventory.toml\", key = \"hosts\" } }\nrun = \"true\"\n";
    let parse = |data: &str| {
        std::fs::write(dir.path().join("inventory.toml"), data).expect("write");
        let root = dir.path().to_owned();
        match Config::parse("tasks.toml", text, root.join("tasks.toml"), root) {
            Err(ConfigError::Many { mut errors, .. }) if errors.len() == 1 => errors.remove(0),
            Err(error) => error,
            Ok(_) => panic!("expected an error for:\n{data}"),
        }
    };
    let broken = "[hosts]\nNIXY = {\n";
    let error = parse(broken);
    let ConfigError::DataFile { span, src, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(src.name(), "inventory.toml");
    assert_eq!(line_column(broken, span.offset()).0, 2);
    let error = parse("[machines]\nNIXY = {}\n");
    let ConfigError::InvalidValue {
        key, span, help, ..
    } = &error
    else {
        panic!("{error:?}");
    };
    assert_eq!(key, "key");
    assert_eq!(help.as_deref(), Some("the top level has `machines`"));
    assert_eq!(line_column(text, span.offset()).0, 2);
    // A file that is not there at all is an invalid `from`.
    let (missing, place) = only(text);
    assert!(
        matches!(&missing, ConfigError::InvalidValue { key, .. } if key == "from"),
        "{missing:?}"
    );
    assert_eq!(place.0, 2);
}

#[test]
fn every_problem_is_reported_at_once() {
    let all = errors("[tasks.a]\nrun = 1\ndpes = []\n[tasks.b]\nrun = \"true\"\nretries = -1\n");
    assert_eq!(all.len(), 3, "{all:?}");
}

#[test]
fn each_task_setting_of_the_wrong_type_is_reported_at_its_value() {
    // One line per setting read through `Walker::field`: the key, a value of the wrong type, and where the
    // value starts (every setting sits on line 3, after `key = `).
    let cases = [
        ("incremental", "\"yes\""),
        ("audit", "1"),
        ("protected", "\"no\""),
        ("cache", "\"off\""),
        ("retries", "true"),
        ("timeout", "[]"),
        ("description", "3"),
        ("lock", "false"),
        ("rollback", "[1]"),
        ("dir", "{ a = 1 }"),
        ("deps_strategy", "2"),
        ("check", "\"curl\""),
        ("env", "\"A=1\""),
    ];
    for (key, value) in cases {
        let text = format!("[tasks.a]\nrun = \"true\"\n{key} = {value}\n");
        let (error, place) = only(&text);
        assert!(
            matches!(&error, ConfigError::WrongType { key: k, .. } if k == key),
            "{key}: {error:?}"
        );
        assert_eq!(place, (3, key.len() + 4), "{key}");
    }
}

#[test]
fn a_check_without_run_and_an_unknown_strategy_are_explained() {
    let (error, place) = only("[tasks.a]\nrun = \"true\"\ncheck = { retries = 2 }\n");
    assert!(
        matches!(&error, ConfigError::InvalidValue { key, .. } if key == "check"),
        "{error:?}"
    );
    assert_eq!(place, (3, 9));
    let (error, place) = only("[tasks.a]\nrun = \"true\"\ndeps_strategy = \"inputs\"\n");
    let ConfigError::InvalidValue { key, help, .. } = &error else {
        panic!("{error:?}");
    };
    assert_eq!(key, "deps_strategy");
    assert!(help.as_deref().is_some_and(|h| h.contains("outputs")));
    assert_eq!(place, (3, 17));
}

/// A project with an inventory beside tasks.toml, for params whose values come from it.
fn with_inventory(tasks: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("inventory.toml"),
        "[hosts.a]\nkind = \"nixos\"\nusers = [\"x\", \"y\"]\n[hosts.b]\nkind = \"darwin\"\nusers = [\"x\"]\n",
    )
    .expect("write inventory");
    let root = dir.path().to_owned();
    Config::parse("tasks.toml", tasks, root.join("tasks.toml"), root)
}

const HOST_PARAM: &str =
    "[tasks.\"build:{host}\"]\nrun = \"true\"\nparams.host = { values = { from = \"inventory.toml\", key = \"hosts\" } }\n";

#[test]
fn inputs_may_name_a_fact_of_the_params_entry() {
    let config = with_inventory(&format!(
        "{HOST_PARAM}inputs = [\"m/{{{{host.kind}}}}/**\", \"home/{{{{host.users}}}}.nix\"]\n"
    ))
    .expect("valid");
    assert_eq!(config.tasks[0].input_templates.len(), 2);
}

fn template_error(result: Result<Config, ConfigError>) -> String {
    let errors = match result {
        Ok(_) => panic!("expected an error"),
        Err(ConfigError::Many { errors, .. }) => errors,
        Err(error) => vec![error],
    };
    match &errors[..] {
        [ConfigError::Template { reason, .. }] => reason.clone(),
        other => panic!("one template error expected: {other:?}"),
    }
}

#[test]
fn an_unknown_field_is_named_with_the_closest_one() {
    let reason = template_error(with_inventory(&format!(
        "{HOST_PARAM}inputs = [\"home/{{{{host.user}}}}.nix\"]\n"
    )));
    assert!(reason.contains("field `user`"), "{reason}");
    assert!(reason.contains("did you mean `users`?"), "{reason}");
}

#[test]
fn a_field_in_a_command_says_where_fields_can_be_used() {
    let reason = template_error(with_inventory(&format!(
        "{HOST_PARAM}env = {{ K = \"{{{{host.kind}}}}\" }}\n"
    )));
    assert!(
        reason.contains("only `inputs` and `outputs` can use"),
        "{reason}"
    );
}

#[test]
fn a_field_of_a_param_with_listed_values_explains_where_fields_come_from() {
    let reason = template_error(with_inventory(
        "[tasks.\"t:{env}\"]\nrun = \"true\"\nparams.env = { values = [\"a\"] }\ninputs = [\"{{env.kind}}/**\"]\n",
    ));
    assert!(reason.contains("param `env` has no fields"), "{reason}");
}

#[test]
fn a_github_release_source_becomes_its_download_url() {
    use crate::config::remote_source;
    assert_eq!(
        remote_source("github:owner/repo@v1.2.0/lint.wasm"),
        Some(Ok(
            "https://github.com/owner/repo/releases/download/v1.2.0/lint.wasm".into()
        ))
    );
    assert_eq!(
        remote_source("http://127.0.0.1:8080/x.wasm"),
        Some(Ok("http://127.0.0.1:8080/x.wasm".into()))
    );
    assert!(remote_source("plugins/dist/lint.wasm").is_none());
    assert!(matches!(
        remote_source("github:owner/repo@v1/../x.wasm"),
        Some(Err(_))
    ));
    assert!(matches!(
        remote_source("github:owner@v1/x.wasm"),
        Some(Err(_))
    ));
    assert!(matches!(remote_source("https:///x.wasm"), Some(Err(_))));
}

/// A tasks.toml large enough to be read in pieces: `count` tasks, each after the one before.
fn large(count: usize) -> String {
    let mut text = String::from("[vars]\nflavour = \"release\"\n");
    for i in 0..count {
        text.push_str(&format!(
            "[tasks.t{i}]\ndescription = \"task {i}\"\nrun = \"build {{{{flavour}}}} {i}\"\ninputs = [\"src/{i}/**\"]\n"
        ));
        if i > 0 {
            text.push_str(&format!("deps = [\"t{}\"]\n", i - 1));
        }
        text.push_str(&format!("[tasks.t{i}.env]\nN = \"{i}\"\n"));
    }
    text
}

/// The same file with a table after its tasks, which the piecewise reader refuses: read in one go.
fn whole(text: &str) -> String {
    format!("{text}[settings]\n")
}

fn load(text: &str) -> Result<Config, ConfigError> {
    let root = PathBuf::from("/nonexistent/cairn-tests");
    Config::parse("tasks.toml", text, root.join("tasks.toml"), root)
}

#[test]
fn a_large_file_read_in_pieces_loads_as_the_whole_file_does() {
    let text = large(6000);
    assert!(text.len() > 2 * super::PIECEWISE_FROM);
    assert!(super::sections::pieces(&text, super::MIN_PIECE).len() > 4);
    assert_eq!(
        super::sections::pieces(&whole(&text), super::MIN_PIECE).len(),
        1
    );
    let pieces = load(&text).expect("loads");
    let one = load(&whole(&text)).expect("loads");
    assert_eq!(pieces.tasks.len(), 6000);
    assert_eq!(format!("{:?}", pieces.tasks), format!("{:?}", one.tasks));
    assert_eq!(format!("{:?}", pieces.vars), format!("{:?}", one.vars));
}

#[test]
fn a_mistake_in_a_late_piece_is_reported_at_its_place_in_the_file() {
    let text = large(6000).replace(
        "[tasks.t5000]\ndescription",
        "[tasks.t5000]\ncolour = \"red\"\ndescription",
    );
    let expected = text.find("colour = ").expect("there");
    let (error, place) = only(&text);
    assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error:?}");
    assert_eq!(place, line_column(&text, expected));
}

#[test]
fn a_task_defined_in_two_pieces_is_the_duplicate_the_whole_file_reports() {
    let text = format!("{}[tasks.t3]\nrun = \"again\"\n", large(6000));
    let second = text.rfind("[tasks.t3]").expect("there");
    let all = errors(&text);
    assert!(!all.is_empty());
    for error in &all {
        let ConfigError::Syntax { message, span, .. } = error else {
            panic!("{error:?}");
        };
        assert_eq!(message, "duplicate key");
        assert!(
            span.offset() > second,
            "at the second definition: {error:?}"
        );
    }
}
