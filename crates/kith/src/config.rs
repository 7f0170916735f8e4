//! `kith serve --config FILE`: the flags of `kith serve` from a TOML file, for a node run by
//! systemd or Kubernetes without a wall of flags.
//!
//! ```toml
//! id = 1
//! listen = "10.0.0.1:7001"
//! data = "/var/lib/kith"
//! peers = "1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001"
//! tls = "/etc/kith/node-1"
//! cors-origin = ["https://app.example"]
//! insecure = false
//! ```
//!
//! Keys are the flags without their dashes; a repeatable flag takes an array, a switch a
//! boolean. Every flag also has an environment variable, `KITH_` and the flag in capitals
//! with underscores (`KITH_LISTEN`, `KITH_VALUE_BYTES_MAX`; lists comma-separated).
//! Precedence, highest first: the flag on the command line, its environment variable, the
//! file, the default.
//!
//! Owns: reading the file and turning each of its values that neither a flag nor the
//! environment gave into one more argument, so that clap parses and checks every value the
//! same way whatever its source. Refuses: a key that is not a flag of `kith serve` (the
//! hidden ones included: they are for `kith dev` and the tests), a value of a type the flag
//! cannot take, and a file over [`CONFIG_BYTES_MAX`].

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{ArgAction, Command};

/// A configuration file is a few dozen lines; anything this large is not one.
pub const CONFIG_BYTES_MAX: u64 = 1 << 20;
/// The flag naming the file, and its environment variable.
const CONFIG_FLAG: &str = "config";
const CONFIG_ENV: &str = "KITH_CONFIG";

/// `argv` with the values of `kith serve --config FILE` added as arguments, for those of
/// its keys that neither the command line nor the environment set. Any other command line
/// comes back as it was. `command` is the whole CLI (to look the flags up).
pub fn with_config_file(argv: Vec<OsString>, command: &Command) -> anyhow::Result<Vec<OsString>> {
    if argv.get(1).is_none_or(|sub| sub != "serve") {
        return Ok(argv);
    }
    let serve = command
        .find_subcommand("serve")
        .context("the CLI has a serve command")?;
    let given: Vec<String> = argv[2..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(file) = config_path(&given) else {
        return Ok(argv);
    };
    let table = read(&file)?;
    let mut argv = argv;
    for (key, value) in &table {
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !a.is_hide_set() && key != CONFIG_FLAG)
            .with_context(|| {
                format!(
                    "{}: unknown key '{key}' (the keys are kith serve's flags without the \
                     dashes: listen, data, peers, tls, …; see `kith serve --help`)",
                    file.display()
                )
            })?;
        let on_command_line = given
            .iter()
            .any(|a| a == &format!("--{key}") || a.starts_with(&format!("--{key}=")));
        let in_environment = arg
            .get_env()
            .and_then(std::env::var_os)
            .is_some_and(|v| !v.is_empty());
        if on_command_line || in_environment {
            continue;
        }
        let wrong = |expected: &str| {
            anyhow::anyhow!(
                "{}: key '{key}' takes {expected}, not {value}",
                file.display()
            )
        };
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            _ => None,
        };
        match arg.get_action() {
            ArgAction::SetTrue => match value {
                toml::Value::Boolean(true) => argv.push(format!("--{key}").into()),
                toml::Value::Boolean(false) => {}
                _ => return Err(wrong("true or false")),
            },
            ArgAction::Append => {
                let items = match value {
                    toml::Value::Array(items) => items.iter().map(scalar).collect(),
                    single => scalar(single).map(|s| vec![s]),
                };
                for item in items.ok_or_else(|| wrong("a string or an array of strings"))? {
                    argv.push(format!("--{key}={item}").into());
                }
            }
            _ => {
                let item = scalar(value).ok_or_else(|| wrong("a string or a number"))?;
                argv.push(format!("--{key}={item}").into());
            }
        }
    }
    Ok(argv)
}

/// The names of the `KITH_*` variables in this process's environment that `kith serve`
/// could read as settings (every `KITH_` name but the tests' `KITH_TEST_*` hooks).
pub fn settings_in_environment() -> Vec<OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| {
            let name = name.to_string_lossy();
            name.starts_with("KITH_") && !name.starts_with("KITH_TEST_")
        })
        .collect()
}

/// The file `--config FILE` (or `--config=FILE`) names, else `KITH_CONFIG`.
fn config_path(given: &[String]) -> Option<PathBuf> {
    let flag = format!("--{CONFIG_FLAG}");
    let prefix = format!("--{CONFIG_FLAG}=");
    let from_flag = given.iter().enumerate().find_map(|(i, a)| {
        if a == &flag {
            given.get(i + 1).cloned()
        } else {
            a.strip_prefix(&prefix).map(str::to_owned)
        }
    });
    from_flag
        .or_else(|| std::env::var(CONFIG_ENV).ok().filter(|v| !v.is_empty()))
        .map(PathBuf::from)
}

fn read(path: &Path) -> anyhow::Result<toml::Table> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut text = String::new();
    file.take(CONFIG_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .with_context(|| format!("read {}", path.display()))?;
    if text.len() as u64 > CONFIG_BYTES_MAX {
        bail!(
            "{}: larger than {CONFIG_BYTES_MAX} bytes; not a configuration file",
            path.display()
        );
    }
    text.parse::<toml::Table>()
        .with_context(|| format!("{}: not valid TOML", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction};

    fn cli() -> Command {
        Command::new("kith").subcommand(
            Command::new("serve")
                .arg(
                    Arg::new("listen")
                        .long("listen")
                        .env("KITH_TEST_CONFIG_LISTEN"),
                )
                .arg(Arg::new("data").long("data"))
                .arg(
                    Arg::new("insecure")
                        .long("insecure")
                        .action(ArgAction::SetTrue),
                )
                .arg(
                    Arg::new("cors")
                        .long("cors-origin")
                        .action(ArgAction::Append),
                )
                .arg(Arg::new("hidden").long("dev-control").hide(true))
                .arg(Arg::new("config").long("config")),
        )
    }

    fn file(text: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kith.toml");
        std::fs::write(&path, text).unwrap();
        let path = path.to_str().unwrap().to_owned();
        (dir, path)
    }

    fn args(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_file_fills_what_the_command_line_left_out() {
        let (_dir, path) = file(
            "listen = \"127.0.0.1:1\"\ndata = \"/d\"\ninsecure = true\n\
             cors-origin = [\"https://a\", \"https://b\"]\n",
        );
        let out = with_config_file(
            args(&["kith", "serve", "--config", &path, "--data", "/flag"]),
            &cli(),
        )
        .unwrap();
        let out: Vec<String> = out.iter().map(|a| a.to_string_lossy().into()).collect();
        assert!(out.contains(&"--listen=127.0.0.1:1".to_owned()), "{out:?}");
        assert!(out.contains(&"--insecure".to_owned()), "{out:?}");
        assert!(
            out.contains(&"--cors-origin=https://b".to_owned()),
            "{out:?}"
        );
        assert!(
            !out.iter().any(|a| a == "--data=/d"),
            "the flag beats the file: {out:?}"
        );
    }

    #[test]
    fn unknown_keys_wrong_types_and_hidden_flags_are_refused_by_name() {
        for (text, named) in [
            ("lisen = \"x\"\n", "'lisen'"),
            ("dev-control = \"http://x\"\n", "'dev-control'"),
            ("insecure = \"yes\"\n", "'insecure'"),
            ("listen = 1.5\n", "'listen'"),
            ("listen = \n", "not valid TOML"),
        ] {
            let (_dir, path) = file(text);
            let e =
                with_config_file(args(&["kith", "serve", "--config", &path]), &cli()).unwrap_err();
            let e = format!("{e:#}");
            assert!(e.contains(named) && e.contains("kith.toml"), "{text}: {e}");
        }
    }

    #[test]
    fn other_commands_pass_through_untouched() {
        let argv = args(&["kith", "kv", "get", "--config", "x"]);
        assert_eq!(with_config_file(argv.clone(), &cli()).unwrap(), argv);
    }
}
