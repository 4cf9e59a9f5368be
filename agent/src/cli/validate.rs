//! `shoal validate FILE...`: checks config files with the agent's own
//! loader, as `consul validate` does, without starting anything. Exit
//! status 0 when every file is valid, 1 otherwise; each bad file is named
//! with its error (which names the key).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;

use crate::config::{AgentConfig, ConfigError, Overrides};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Agent config files (TOML, as `shoal agent --config` reads them,
    /// with the `config.d` beside each).
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

pub fn run(args: &ValidateArgs) -> ExitCode {
    let mut valid = true;
    for file in &args.files {
        if let Err(error) = validate(file) {
            valid = false;
            let text = error.to_string();
            // Read and parse errors name the file already.
            if text.contains(&file.display().to_string()) {
                eprintln!("Error: {text}");
            } else {
                eprintln!("Error: {}: {text}", file.display());
            }
        }
    }
    if valid {
        println!("Configuration is valid!");
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Loads `file` as `shoal agent --config file` would. A file without
/// `data_dir` is not an error here: the agent may get it from
/// `--data-dir` or `SHOAL_DATA_DIR` when it starts.
fn validate(file: &Path) -> Result<AgentConfig, ConfigError> {
    let overrides = Overrides {
        config_file: Some(file.to_path_buf()),
        ..Overrides::default()
    };
    match AgentConfig::load(&overrides) {
        Err(ConfigError::Invalid { key, .. }) if key == "data_dir" && !sets_data_dir(file) => {
            AgentConfig::load(&Overrides {
                data_dir: Some(PathBuf::from("/shoal-validate/data-dir")),
                ..overrides
            })
        }
        loaded => loaded,
    }
}

/// Whether `file` sets `data_dir` itself (then its value is what to judge).
fn sets_data_dir(file: &Path) -> bool {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|table| table.contains_key("data_dir"))
}
