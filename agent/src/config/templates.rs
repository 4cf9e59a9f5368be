//! `[[templates]]`: files rendered from the catalog and the KV store (see
//! `crate::template`). Only the shape is checked here; the template text
//! itself is compiled at each render, so that a syntax error keeps the
//! previous file and shows in `/v1/agent/self` instead of refusing the
//! whole configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, invalid};

/// Default `command_timeout`.
pub const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Default `wait.min`: changes closer together than this render once.
pub const DEFAULT_WAIT_MIN: Duration = Duration::from_millis(100);
/// Default `wait.max`: a stream of changes still renders this often.
pub const DEFAULT_WAIT_MAX: Duration = Duration::from_secs(1);
/// Largest inline `contents` (and source file, checked when read).
pub const MAX_TEMPLATE_BYTES: usize = 1024 * 1024;

/// One `[[templates]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTemplate {
    source: Option<PathBuf>,
    contents: Option<String>,
    destination: Option<PathBuf>,
    command: Option<Vec<String>>,
    command_timeout: Option<String>,
    perms: Option<String>,
    wait: Option<FileWait>,
}

/// `wait = { min = "500ms", max = "5s" }`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWait {
    min: Option<String>,
    max: Option<String>,
}

/// Where a template's text comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateSource {
    /// `source`: read again at every render (and watched for changes).
    File(PathBuf),
    /// `contents`: inline in the config file.
    Inline(String),
}

/// A validated `[[templates]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateConfig {
    pub source: TemplateSource,
    /// Absolute path of the rendered file.
    pub destination: PathBuf,
    /// Program and arguments run after each change of the file (no shell).
    pub command: Option<Vec<String>>,
    /// The command is killed after this long.
    pub command_timeout: Duration,
    /// Mode of the written file; `None`: an existing file's mode, else 0644.
    pub perms: Option<u32>,
    /// Quiescence: render once changes have settled for `wait_min`...
    pub wait_min: Duration,
    /// ...or at the latest `wait_max` after the first change.
    pub wait_max: Duration,
}

impl TemplateConfig {
    /// How the template is named in logs and in `/v1/agent/self`.
    pub fn name(&self) -> String {
        self.destination.display().to_string()
    }
}

/// Validates `[[templates]]`; errors name `templates[i].key`.
pub(super) fn templates(
    items: Option<Vec<toml::Value>>,
) -> Result<Vec<TemplateConfig>, ConfigError> {
    let mut parsed: Vec<TemplateConfig> = Vec::new();
    for (index, item) in items.into_iter().flatten().enumerate() {
        let at = format!("templates[{index}]");
        let file = FileTemplate::deserialize(item)
            .map_err(|error| invalid(&at, error.to_string().trim_end().to_string()))?;
        let template = template(&at, file)?;
        if let Some(other) = parsed
            .iter()
            .position(|earlier| earlier.destination == template.destination)
        {
            return Err(invalid(
                &format!("{at}.destination"),
                format!(
                    "`{}` is also the destination of templates[{other}]",
                    template.destination.display()
                ),
            ));
        }
        parsed.push(template);
    }
    Ok(parsed)
}

fn template(at: &str, file: FileTemplate) -> Result<TemplateConfig, ConfigError> {
    let source = match (file.source, file.contents) {
        (Some(path), None) => TemplateSource::File(absolute(&format!("{at}.source"), path)?),
        (None, Some(text)) if text.len() > MAX_TEMPLATE_BYTES => {
            return Err(invalid(
                &format!("{at}.contents"),
                format!("is {} bytes; at most {MAX_TEMPLATE_BYTES}", text.len()),
            ));
        }
        (None, Some(text)) => TemplateSource::Inline(text),
        (Some(_), Some(_)) => {
            return Err(invalid(
                at,
                "has both `source` and `contents`: give one of them",
            ));
        }
        (None, None) => {
            return Err(invalid(
                &format!("{at}.source"),
                "is required (a template file), or give the template inline as `contents`",
            ));
        }
    };
    let destination = match file.destination {
        Some(path) => absolute(&format!("{at}.destination"), path)?,
        None => return Err(invalid(&format!("{at}.destination"), "is required")),
    };
    if destination.file_name().is_none() {
        return Err(invalid(
            &format!("{at}.destination"),
            "must name a file, not a directory",
        ));
    }
    let command = match file.command {
        None => None,
        Some(argv) if argv.first().is_none_or(|program| program.trim().is_empty()) => {
            return Err(invalid(
                &format!("{at}.command"),
                "must be a non-empty array: the program, then its arguments (no shell)",
            ));
        }
        Some(argv) => Some(argv),
    };
    let command_timeout = match file.command_timeout {
        Some(text) => super::parse_duration(&format!("{at}.command_timeout"), &text)?,
        None => DEFAULT_COMMAND_TIMEOUT,
    };
    let perms = file
        .perms
        .map(|text| perms(&format!("{at}.perms"), &text))
        .transpose()?;
    let wait = file.wait.unwrap_or_default();
    let wait_min = match wait.min {
        // Zero is allowed: render at once after each change.
        Some(text) => crate::duration::parse(&text)
            .map_err(|error| invalid(&format!("{at}.wait.min"), error.to_string()))?,
        None => DEFAULT_WAIT_MIN,
    };
    let wait_max = match wait.max {
        Some(text) => super::parse_duration(&format!("{at}.wait.max"), &text)?,
        None => DEFAULT_WAIT_MAX.max(wait_min),
    };
    if wait_max < wait_min {
        return Err(invalid(
            &format!("{at}.wait.max"),
            format!(
                "must not be shorter than wait.min ({})",
                humantime::format_duration(wait_min)
            ),
        ));
    }
    Ok(TemplateConfig {
        source,
        destination,
        command,
        command_timeout,
        perms,
        wait_min,
        wait_max,
    })
}

fn absolute(key: &str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(invalid(
            key,
            format!(
                "`{}` must be an absolute path (the agent's working directory is not yours)",
                path.display()
            ),
        ))
    }
}

/// An octal mode such as "0644" or "600".
fn perms(key: &str, text: &str) -> Result<u32, ConfigError> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(mode) if !digits.is_empty() && mode <= 0o7777 => Ok(mode),
        _ => Err(invalid(
            key,
            format!("`{text}` is not an octal file mode such as \"0644\""),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<TemplateConfig>, ConfigError> {
        #[derive(Deserialize)]
        struct File {
            templates: Option<Vec<toml::Value>>,
        }
        let file: File = toml::from_str(text).unwrap();
        templates(file.templates)
    }

    #[test]
    fn a_full_entry_and_the_defaults() {
        let parsed = parse(
            r#"
[[templates]]
source = "/etc/shoal/up.j2"
destination = "/tmp/up.conf"
command = ["/usr/sbin/nginx", "-s", "reload"]
command_timeout = "5s"
perms = "0640"
wait = { min = "0s", max = "2s" }

[[templates]]
contents = "{{ key('a') }}"
destination = "/tmp/a"
"#,
        )
        .unwrap();
        assert_eq!(
            parsed[0].source,
            TemplateSource::File("/etc/shoal/up.j2".into())
        );
        assert_eq!(parsed[0].perms, Some(0o640));
        assert_eq!(parsed[0].wait_min, Duration::ZERO);
        assert_eq!(parsed[0].wait_max, Duration::from_secs(2));
        assert_eq!(parsed[0].command_timeout, Duration::from_secs(5));
        assert_eq!(parsed[1].command, None);
        assert_eq!(parsed[1].wait_min, DEFAULT_WAIT_MIN);
        assert_eq!(parsed[1].wait_max, DEFAULT_WAIT_MAX);
        assert_eq!(parsed[1].command_timeout, DEFAULT_COMMAND_TIMEOUT);
    }

    #[test]
    fn the_commented_example_in_agent_toml_is_valid() {
        let example: String = include_str!("../../../config/agent.toml")
            .lines()
            .skip_while(|line| *line != "# [[templates]]")
            .take_while(|line| !line.is_empty())
            .map(|line| format!("{}\n", line.trim_start_matches("# ")))
            .collect();
        let parsed = parse(&example).unwrap();
        assert_eq!(parsed.len(), 2, "a template from a file and one inline");
        assert_eq!(parsed[0].wait_max, Duration::from_secs(5));
        assert!(matches!(parsed[1].source, TemplateSource::Inline(_)));
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            ("destination = \"/tmp/x\"", "templates[0].source"),
            ("contents = \"x\"", "templates[0].destination"),
            (
                "contents = \"x\"\ndestination = \"rel/x\"",
                "templates[0].destination",
            ),
            (
                "source = \"a.j2\"\ndestination = \"/tmp/x\"",
                "templates[0].source",
            ),
            (
                "contents = \"x\"\nsource = \"/a\"\ndestination = \"/tmp/x\"",
                "templates[0]",
            ),
            (
                "contents = \"x\"\ndestination = \"/tmp/x\"\ncommand = []",
                "templates[0].command",
            ),
            (
                "contents = \"x\"\ndestination = \"/tmp/x\"\nperms = \"0999\"",
                "templates[0].perms",
            ),
            (
                "contents = \"x\"\ndestination = \"/tmp/x\"\nwait = { min = \"5s\", max = \"1s\" }",
                "templates[0].wait.max",
            ),
            (
                "contents = \"x\"\ndestination = \"/tmp/x\"\ncommand_timeout = \"soon\"",
                "templates[0].command_timeout",
            ),
            (
                "contents = \"x\"\ndestination = \"/tmp/x\"\ndestnation = \"/tmp/y\"",
                "templates[0]",
            ),
        ];
        for (body, key) in cases {
            let error = parse(&format!("[[templates]]\n{body}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.contains(&format!("`{key}")), "{body}: {error}");
        }
        let error = parse(
            "[[templates]]\ncontents = \"a\"\ndestination = \"/tmp/x\"\n\
             [[templates]]\ncontents = \"b\"\ndestination = \"/tmp/x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("templates[1].destination"), "{error}");
    }

    #[test]
    fn inline_contents_past_the_size_limit_are_refused() {
        let contents = "x".repeat(MAX_TEMPLATE_BYTES + 1);
        let error = parse(&format!(
            "[[templates]]\ncontents = \"{contents}\"\ndestination = \"/tmp/x\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("templates[0].contents") && error.contains("at most 1048576"),
            "{}",
            &error[..error.len().min(300)]
        );
    }
}
